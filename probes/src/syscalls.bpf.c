// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Privilege and kernel-facing syscalls: the setuid family, ptrace,
 * memfd_create, mount, and kernel module load/unload. Each is reported at
 * entry with its arguments; an exit record carries the result.
 */
#define PK_MODULE_LOST_SLOT PK_LOST_SYSCALLS
#define PK_MODULE_IGNORE_BIT PK_IGNORE_SYSCALLS
#include "picket_common.h"

PK_INTEREST_PROGRAMS

/* ptrace requests worth reporting: everything that attaches or writes */
#define PTRACE_TRACEME 0
#define PTRACE_POKETEXT 4
#define PTRACE_POKEDATA 5
#define PTRACE_POKEUSR 6
#define PTRACE_SETREGS 13
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u32);
} pk_sys_inflight SEC(".maps");

static __always_inline void pk_mark_inflight(struct pk_record *r, __u32 op)
{
	__u32 tid = r->hdr.tid;
	bpf_map_update_elem(&pk_sys_inflight, &tid, &op, BPF_ANY);
}

static __always_inline int pk_sys_exit_ret(void *ctx, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 *op = bpf_map_lookup_elem(&pk_sys_inflight, &tid);
	if (!op)
		return 0;
	__u32 o = *op;
	bpf_map_delete_elem(&pk_sys_inflight, &tid);
	struct pk_record *r = pk_record_begin(PK_SYS_EXIT);
	if (!r)
		return 0;
	r->body.sys_exit.op = o;
	r->body.sys_exit.ret = ret;
	pk_record_submit(ctx, r, 0);
	return 0;
}

static __always_inline int pk_sys_exit(struct tp_syscall_exit *ctx)
{
	return pk_sys_exit_ret(ctx, ctx->ret);
}

#define PK_EXIT_OF(tp)                                                           \
	SEC("tracepoint/syscalls/sys_exit_" #tp)                                \
	int pk_exit_##tp(struct tp_syscall_exit *ctx)                            \
	{                                                                        \
		return pk_sys_exit(ctx);                                         \
	}

static __always_inline int pk_priv(struct tp_syscall_enter *ctx, __u32 op, int nargs)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_PRIV);
	if (!r)
		return 0;
	struct pk_priv *p = &r->body.priv;
	p->op = op;
	p->arg[0] = ctx->args[0];
	p->arg[1] = nargs > 1 ? ctx->args[1] : 0xffffffff;
	p->arg[2] = nargs > 2 ? ctx->args[2] : 0xffffffff;
	p->old_uid = r->hdr.uid;
	p->old_euid = r->hdr.euid;
	p->old_gid = r->hdr.gid;
	p->old_egid = r->hdr.egid;
	pk_mark_inflight(r, op);
	pk_record_submit(ctx, r, 0);
	return 0;
}

#define PK_PRIV_TP(tp, op, nargs)                                                \
	SEC("tracepoint/syscalls/sys_enter_" #tp)                               \
	int pk_enter_##tp(struct tp_syscall_enter *ctx)                          \
	{                                                                        \
		return pk_priv(ctx, op, nargs);                                  \
	}                                                                        \
	PK_EXIT_OF(tp)

PK_PRIV_TP(setuid, PK_OP_SETUID, 1)
PK_PRIV_TP(setgid, PK_OP_SETGID, 1)
PK_PRIV_TP(setreuid, PK_OP_SETREUID, 2)
PK_PRIV_TP(setregid, PK_OP_SETREGID, 2)
PK_PRIV_TP(setresuid, PK_OP_SETRESUID, 3)
PK_PRIV_TP(setresgid, PK_OP_SETRESGID, 3)
PK_PRIV_TP(setfsuid, PK_OP_SETFSUID, 1)
PK_PRIV_TP(setfsgid, PK_OP_SETFSGID, 1)

SEC("tracepoint/syscalls/sys_enter_ptrace")
int pk_enter_ptrace(struct tp_syscall_enter *ctx)
{
	long req = ctx->args[0];
	if (req != PTRACE_ATTACH && req != PTRACE_SEIZE && req != PTRACE_TRACEME &&
	    req != PTRACE_POKETEXT && req != PTRACE_POKEDATA && req != PTRACE_POKEUSR &&
	    req != PTRACE_SETREGS)
		return 0; /* reads and the resume/step traffic of a debugger */
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_PTRACE);
	if (!r)
		return 0;
	r->body.ptrace.request = req;
	r->body.ptrace.target_pid = ctx->args[1];
	r->body.ptrace.addr = ctx->args[2];
	pk_mark_inflight(r, PK_OP_PTRACE);
	pk_record_submit(ctx, r, 0);
	return 0;
}
PK_EXIT_OF(ptrace)

SEC("tracepoint/syscalls/sys_enter_memfd_create")
int pk_enter_memfd_create(struct tp_syscall_enter *ctx)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_MEMFD);
	if (!r)
		return 0;
	r->body.memfd.flags = ctx->args[1];
	__u32 used = pk_put_user_str(r, 0, &r->body.memfd.name, (void *)ctx->args[0]);
	pk_mark_inflight(r, PK_OP_MEMFD_CREATE);
	pk_record_submit(ctx, r, used);
	return 0;
}
PK_EXIT_OF(memfd_create)

SEC("tracepoint/syscalls/sys_enter_mount")
int pk_enter_mount(struct tp_syscall_enter *ctx)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_MOUNT);
	if (!r)
		return 0;
	struct pk_mount *m = &r->body.mount;
	__u32 used = 0;
	used = pk_put_user_str(r, used, &m->source, (void *)ctx->args[0]);
	used = pk_put_at_path(r, used, &m->target, AT_FDCWD, (void *)ctx->args[1]);
	used = pk_put_user_str(r, used, &m->fstype, (void *)ctx->args[2]);
	m->flags = ctx->args[3];
	pk_mark_inflight(r, PK_OP_MOUNT);
	pk_record_submit(ctx, r, used);
	return 0;
}
PK_EXIT_OF(mount)

static __always_inline int pk_init_module(void *ctx, unsigned long *args)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_MODULE);
	if (!r)
		return 0;
	r->body.module.op = PK_OP_INIT_MODULE;
	r->body.module.len = args[1];
	/* the image is in user memory; its params string is the only text */
	__u32 used = pk_put_user_str(r, 0, &r->body.module.name, (void *)args[2]);
	pk_mark_inflight(r, PK_OP_INIT_MODULE);
	pk_record_submit(ctx, r, used);
	return 0;
}

static __always_inline int pk_finit_module(void *ctx, unsigned long *args)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_MODULE);
	if (!r)
		return 0;
	r->body.module.op = PK_OP_FINIT_MODULE;
	r->body.module.flags = args[2];
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *f = pk_fd_file(task, (int)args[0]);
	__u32 used = 0;
	if (f)
		used = pk_put_path(r, 0, &r->body.module.name,
				   (struct path *)__builtin_preserve_access_index(&f->f_path));
	pk_mark_inflight(r, PK_OP_FINIT_MODULE);
	pk_record_submit(ctx, r, used);
	return 0;
}

static __always_inline int pk_delete_module(void *ctx, unsigned long *args)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_MODULE);
	if (!r)
		return 0;
	r->body.module.op = PK_OP_DELETE_MODULE;
	r->body.module.flags = args[1];
	__u32 used = pk_put_user_str(r, 0, &r->body.module.name, (void *)args[0]);
	pk_mark_inflight(r, PK_OP_DELETE_MODULE);
	pk_record_submit(ctx, r, used);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_init_module")
int pk_enter_init_module(struct tp_syscall_enter *ctx)
{
	return pk_init_module(ctx, ctx->args);
}
PK_EXIT_OF(init_module)

SEC("tracepoint/syscalls/sys_enter_finit_module")
int pk_enter_finit_module(struct tp_syscall_enter *ctx)
{
	return pk_finit_module(ctx, ctx->args);
}
PK_EXIT_OF(finit_module)

SEC("tracepoint/syscalls/sys_enter_delete_module")
int pk_enter_delete_module(struct tp_syscall_enter *ctx)
{
	return pk_delete_module(ctx, ctx->args);
}
PK_EXIT_OF(delete_module)

/*
 * Fallback for kernels without the module syscalls' own tracepoints (built
 * without CONFIG_MODULES, where the syscalls still exist and fail with
 * ENOSYS): an attempt to load a rootkit is worth reporting even where it
 * cannot succeed. picketd attaches these only on such kernels, because
 * raw_syscalls fires for every syscall; the first thing they do is compare
 * the syscall number.
 */
SEC("tracepoint/raw_syscalls/sys_enter")
int pk_fallback_sys_enter(struct tp_raw_sys_enter *ctx)
{
	long id = ctx->id;
	struct pk_config *cfg = pk_get_config();
	if (!cfg || id <= 0)
		return 0;
	if (id == cfg->nr_init_module)
		return pk_init_module(ctx, ctx->args);
	if (id == cfg->nr_finit_module)
		return pk_finit_module(ctx, ctx->args);
	if (id == cfg->nr_delete_module)
		return pk_delete_module(ctx, ctx->args);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int pk_fallback_sys_exit(struct tp_raw_sys_exit *ctx)
{
	long id = ctx->id;
	struct pk_config *cfg = pk_get_config();
	if (!cfg || id <= 0)
		return 0;
	if (id != cfg->nr_init_module && id != cfg->nr_finit_module && id != cfg->nr_delete_module)
		return 0;
	return pk_sys_exit_ret(ctx, ctx->ret);
}
