// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * File activity: opens with write intent (reported at syscall exit, with the
 * path resolved from the new file itself and whether the open created it),
 * and the path-changing syscalls (unlink, rename, chmod, chown, link,
 * symlink), reported at entry with an exit record carrying the result.
 *
 * Filtering happens here, not in user space: read-only opens never leave
 * the kernel, and with `file_filter` on only paths under a watched prefix
 * (and not under an ignored one) are sent.
 */
#define PK_MODULE_LOST_SLOT PK_LOST_FILE
#define PK_MODULE_IGNORE_BIT PK_IGNORE_FILE
#include "picket_common.h"

PK_INTEREST_PROGRAMS

#define O_ACCMODE 00000003
#define O_CREAT 00000100
#define O_TRUNC 00001000
#define O_PATH 010000000
#define O_WRONLY 00000001

struct pk_inflight {
	__u32 op; /* 0: open; else a PK_OP_* whose entry was sent */
	__u32 flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pk_inflight);
} pk_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct pk_prefix_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pk_watch_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct pk_prefix_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} pk_ignore_prefixes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pk_prefix_key);
} pk_prefix_scratch SEC(".maps");

static __always_inline bool pk_path_wanted(struct pk_record *r, struct pk_str *s)
{
	struct pk_config *cfg = pk_get_config();
	if (!cfg || !cfg->file_filter)
		return true;
	if (r->hdr.flags & PK_F_UNNORMALIZED)
		return true; /* judged in user space after normalization */
	if (s->len == 0)
		return false;
	__u32 zero = 0;
	struct pk_prefix_key *key = bpf_map_lookup_elem(&pk_prefix_scratch, &zero);
	if (!key)
		return true;
	__u32 len = s->len;
	if (len > PK_PREFIX_MAX - 1)
		len = PK_PREFIX_MAX - 1;
	bpf_probe_read_kernel(key->data, len & (PK_PREFIX_MAX - 1), &r->tail[s->off & PK_TAIL_MASK]);
	key->prefixlen = len * 8;
	if (bpf_map_lookup_elem(&pk_ignore_prefixes, key))
		return false;
	return bpf_map_lookup_elem(&pk_watch_prefixes, key) != NULL;
}

static __always_inline bool pk_write_intent(__u64 flags)
{
	if (flags & O_PATH)
		return false;
	return (flags & O_ACCMODE) != 0 || (flags & (O_CREAT | O_TRUNC));
}

static __always_inline int pk_open_enter(__u64 flags)
{
	if (!pk_write_intent(flags) || pk_skip_current())
		return 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pk_inflight v = {.op = 0, .flags = (__u32)flags};
	bpf_map_update_elem(&pk_inflight, &tid, &v, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int pk_enter_openat(struct tp_syscall_enter *ctx)
{
	return pk_open_enter(ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_open")
int pk_enter_open(struct tp_syscall_enter *ctx)
{
	return pk_open_enter(ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int pk_enter_creat(struct tp_syscall_enter *ctx)
{
	return pk_open_enter(O_CREAT | O_WRONLY | O_TRUNC);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int pk_enter_openat2(struct tp_syscall_enter *ctx)
{
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	return pk_open_enter(flags);
}

static __always_inline int pk_open_exit(struct tp_syscall_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pk_inflight *v = bpf_map_lookup_elem(&pk_inflight, &tid);
	if (!v)
		return 0;
	__u32 op = v->op;
	__u32 flags = v->flags;
	bpf_map_delete_elem(&pk_inflight, &tid);
	if (op != 0)
		return 0;
	long ret = ctx->ret;
	if (ret < 0)
		return 0; /* a failed open changed nothing */

	struct pk_record *r = pk_record_begin(PK_FILE_OPEN);
	if (!r)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *f = pk_fd_file(task, ret);
	if (!f)
		return 0;
	__u32 used = pk_put_path(r, 0, &r->body.open.path,
				 (struct path *)__builtin_preserve_access_index(&f->f_path));
	if (!pk_path_wanted(r, &r->body.open.path))
		return 0;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	r->body.open.flags = flags;
	r->body.open.fmode = BPF_CORE_READ(f, f_mode);
	r->body.open.i_mode = BPF_CORE_READ(ino, i_mode);
	r->body.open.i_uid = BPF_CORE_READ(ino, i_uid.val);
	r->body.open.ino = BPF_CORE_READ(ino, i_ino);
	r->body.open.ret = ret;
	pk_record_submit(ctx, r, used);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int pk_exit_openat(struct tp_syscall_exit *ctx)
{
	return pk_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_open")
int pk_exit_open(struct tp_syscall_exit *ctx)
{
	return pk_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int pk_exit_creat(struct tp_syscall_exit *ctx)
{
	return pk_open_exit(ctx);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int pk_exit_openat2(struct tp_syscall_exit *ctx)
{
	return pk_open_exit(ctx);
}

/* --- path operations --------------------------------------------------- */

struct pk_path_args {
	__u32 op;
	__u32 flags;
	__u32 mode;
	__u32 uid;
	__u32 gid;
	long dfd1;
	const char *name1; /* NULL with fd1 >= 0: the object is fd1 itself */
	long dfd2;
	const char *name2;
	bool name2_is_text; /* symlink: name1 is the link's target text */
};

static __always_inline int pk_path_op(void *ctx, struct pk_path_args *a)
{
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_PATH_OP);
	if (!r)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pk_path_op *p = &r->body.path;
	p->op = a->op;
	p->flags = a->flags;
	p->mode = a->mode;
	p->uid = a->uid;
	p->gid = a->gid;
	__u32 used = 0;
	if (a->op == PK_OP_SYMLINK) {
		/* path: the new link; path2: its target text, taken as is */
		used = pk_put_at_path(r, used, &p->path, a->dfd2, a->name2);
		used = pk_put_user_str(r, used, &p->path2, a->name1);
	} else {
		if (a->name1) {
			used = pk_put_at_path(r, used, &p->path, a->dfd1, a->name1);
		} else {
			struct file *f = pk_fd_file(task, a->dfd1);
			if (!f)
				return 0;
			used = pk_put_path(r, used, &p->path,
					   (struct path *)__builtin_preserve_access_index(&f->f_path));
		}
		if (a->name2)
			used = pk_put_at_path(r, used, &p->path2, a->dfd2, a->name2);
	}
	/* a rename or link is wanted if either end is */
	if (!pk_path_wanted(r, &p->path) && !(p->path2.len && a->op != PK_OP_SYMLINK &&
					       pk_path_wanted(r, &p->path2)))
		return 0;
	__u32 tid = r->hdr.tid;
	struct pk_inflight v = {.op = a->op, .flags = 0};
	bpf_map_update_elem(&pk_inflight, &tid, &v, BPF_ANY);
	pk_record_submit(ctx, r, used);
	return 0;
}

static __always_inline int pk_path_exit(struct tp_syscall_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pk_inflight *v = bpf_map_lookup_elem(&pk_inflight, &tid);
	if (!v)
		return 0;
	__u32 op = v->op;
	bpf_map_delete_elem(&pk_inflight, &tid);
	if (op == 0)
		return 0;
	struct pk_record *r = pk_record_begin(PK_SYS_EXIT);
	if (!r)
		return 0;
	r->body.sys_exit.op = op;
	r->body.sys_exit.ret = ctx->ret;
	pk_record_submit(ctx, r, 0);
	return 0;
}

#define PK_ENTER(tp, ...)                                                        \
	SEC("tracepoint/syscalls/sys_enter_" #tp)                               \
	int pk_enter_##tp(struct tp_syscall_enter *ctx)                          \
	{                                                                        \
		struct pk_path_args a = {__VA_ARGS__};                           \
		return pk_path_op(ctx, &a);                                      \
	}                                                                        \
	SEC("tracepoint/syscalls/sys_exit_" #tp)                                \
	int pk_exit_##tp(struct tp_syscall_exit *ctx)                            \
	{                                                                        \
		return pk_path_exit(ctx);                                        \
	}

#define ARG(n) (ctx->args[n])
#define STR(n) ((const char *)ctx->args[n])
#define AT_REMOVEDIR 0x200

PK_ENTER(unlink, .op = PK_OP_UNLINK, .dfd1 = AT_FDCWD, .name1 = STR(0))
PK_ENTER(unlinkat, .op = (ARG(2) & AT_REMOVEDIR) ? PK_OP_RMDIR : PK_OP_UNLINK, .flags = ARG(2),
	 .dfd1 = ARG(0), .name1 = STR(1))
PK_ENTER(rmdir, .op = PK_OP_RMDIR, .dfd1 = AT_FDCWD, .name1 = STR(0))
PK_ENTER(rename, .op = PK_OP_RENAME, .dfd1 = AT_FDCWD, .name1 = STR(0), .dfd2 = AT_FDCWD,
	 .name2 = STR(1))
PK_ENTER(renameat, .op = PK_OP_RENAME, .dfd1 = ARG(0), .name1 = STR(1), .dfd2 = ARG(2),
	 .name2 = STR(3))
PK_ENTER(renameat2, .op = PK_OP_RENAME, .dfd1 = ARG(0), .name1 = STR(1), .dfd2 = ARG(2),
	 .name2 = STR(3), .flags = ARG(4))
PK_ENTER(chmod, .op = PK_OP_CHMOD, .dfd1 = AT_FDCWD, .name1 = STR(0), .mode = ARG(1))
PK_ENTER(fchmod, .op = PK_OP_CHMOD, .dfd1 = ARG(0), .name1 = NULL, .mode = ARG(1))
PK_ENTER(fchmodat, .op = PK_OP_CHMOD, .dfd1 = ARG(0), .name1 = STR(1), .mode = ARG(2))
PK_ENTER(fchmodat2, .op = PK_OP_CHMOD, .dfd1 = ARG(0), .name1 = STR(1), .mode = ARG(2),
	 .flags = ARG(3))
PK_ENTER(chown, .op = PK_OP_CHOWN, .dfd1 = AT_FDCWD, .name1 = STR(0), .uid = ARG(1),
	 .gid = ARG(2))
PK_ENTER(lchown, .op = PK_OP_CHOWN, .dfd1 = AT_FDCWD, .name1 = STR(0), .uid = ARG(1),
	 .gid = ARG(2))
PK_ENTER(fchown, .op = PK_OP_CHOWN, .dfd1 = ARG(0), .name1 = NULL, .uid = ARG(1), .gid = ARG(2))
PK_ENTER(fchownat, .op = PK_OP_CHOWN, .dfd1 = ARG(0), .name1 = STR(1), .uid = ARG(2),
	 .gid = ARG(3), .flags = ARG(4))
PK_ENTER(link, .op = PK_OP_LINK, .dfd1 = AT_FDCWD, .name1 = STR(0), .dfd2 = AT_FDCWD,
	 .name2 = STR(1))
PK_ENTER(linkat, .op = PK_OP_LINK, .dfd1 = ARG(0), .name1 = STR(1), .dfd2 = ARG(2),
	 .name2 = STR(3), .flags = ARG(4))
PK_ENTER(symlink, .op = PK_OP_SYMLINK, .name1 = STR(0), .dfd2 = AT_FDCWD, .name2 = STR(1))
PK_ENTER(symlinkat, .op = PK_OP_SYMLINK, .name1 = STR(0), .dfd2 = ARG(1), .name2 = STR(2))
