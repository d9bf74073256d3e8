// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Process lifecycle: exec (with argv, resolved executable and cwd), fork of
 * new processes (threads are left out), exit of thread-group leaders. Like
 * every object it keeps its own per-process interest map: image rules set
 * on exec, inheritance on fork, removal on exit.
 */
#define PK_MODULE_LOST_SLOT PK_LOST_PROCESS
#define PK_MODULE_IGNORE_BIT PK_IGNORE_PROCESS
#include "picket_common.h"

SEC("tracepoint/sched/sched_process_exec")
int pk_sched_exec(struct tp_sched_process_exec *ctx)
{
	struct pk_record *r = pk_record_begin(PK_EXEC);
	if (!r)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 used = 0;

	used = pk_put_kernel_str(r, used, &r->body.exec.filename,
				 (void *)ctx + (ctx->data_loc_filename & 0xffff));

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct file *exe = BPF_CORE_READ(mm, exe_file);
	if (exe) {
		used = pk_put_path(r, used, &r->body.exec.exe,
				   (struct path *)__builtin_preserve_access_index(&exe->f_path));
		struct inode *ino = BPF_CORE_READ(exe, f_inode);
		r->body.exec.exe_nlink = BPF_CORE_READ(ino, i_nlink);
		r->body.exec.exe_mode = BPF_CORE_READ(ino, i_mode);
		r->body.exec.exe_uid = BPF_CORE_READ(ino, i_uid.val);
		if (r->body.exec.exe_nlink == 0)
			r->hdr.flags |= PK_F_EXE_DELETED;
	}
	/* interest is decided on the new image before the skip check, so an
	 * ignored image is ignored from its first event on */
	struct pk_config *cfg = pk_get_config();
	if (cfg && cfg->image_rules && r->body.exec.exe.len > 0)
		pk_interest_exec_path(r->hdr.pid, &r->tail[r->body.exec.exe.off & PK_TAIL_MASK],
				      r->body.exec.exe.len);
	else
		pk_interest_exec_path(r->hdr.pid, NULL, 0);
	if (pk_skip_current())
		return 0;

	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 argv_len = arg_end > arg_start ? arg_end - arg_start : 0;
	r->body.exec.argv_len = argv_len;
	if (used <= PK_TAIL_MASK && argv_len > 0) {
		__u32 n = argv_len;
		if (n > PK_ARGV_MAX) {
			n = PK_ARGV_MAX;
			r->hdr.flags |= PK_F_TRUNCATED;
		}
		if (bpf_probe_read_user(&r->tail[used & PK_TAIL_MASK], n & PK_TAIL_MASK,
					(void *)arg_start) == 0) {
			r->body.exec.argv.off = used;
			r->body.exec.argv.len = n;
			used += n;
		}
	}

	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	used = pk_put_path(r, used, &r->body.exec.cwd,
			   (struct path *)__builtin_preserve_access_index(&fs->pwd));
	pk_record_submit(ctx, r, used);
	return 0;
}

SEC("raw_tracepoint/sched_process_fork")
int pk_sched_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (struct task_struct *)ctx->args[0];
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u32 child_pid = BPF_CORE_READ(child, pid);
	if (child_tgid != child_pid)
		return 0; /* a new thread, not a new process */
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);

	pk_interest_fork(parent_tgid, child_tgid);
	if (pk_skip_current())
		return 0;
	struct pk_record *r = pk_record_begin(PK_FORK);
	if (!r)
		return 0;
	r->body.fork.child_pid = child_tgid;
	r->body.fork.child_tid = child_pid;
	pk_record_submit(ctx, r, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int pk_sched_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (tgid != (__u32)pid_tgid)
		return 0; /* a thread */
	bool skip = pk_skip_current();
	bpf_map_delete_elem(&pk_interest, &tgid);
	if (skip)
		return 0;
	struct pk_record *r = pk_record_begin(PK_EXIT);
	if (!r)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	r->body.exit.exit_code = BPF_CORE_READ(task, exit_code);
	pk_record_submit(ctx, r, 0);
	return 0;
}
