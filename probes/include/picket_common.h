/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Maps and helpers every probe object shares: the ring buffer, the lost
 * counters, the per-process interest map, the record builder and the path
 * resolver. Each module's object gets its own copy of these maps, so one
 * module's verifier failure or full ring never touches another module.
 */
#ifndef PICKET_COMMON_H
#define PICKET_COMMON_H

#include "picket_kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "picket_abi.h"

#ifndef PK_MODULE_LOST_SLOT
#error "define PK_MODULE_LOST_SLOT before including picket_common.h"
#endif
#ifndef PK_MODULE_IGNORE_BIT
#error "define PK_MODULE_IGNORE_BIT before including picket_common.h"
#endif

char LICENSE[] SEC("license") = "GPL";

/* Deepest directory nesting the resolver walks; deeper paths keep their
 * last components and are flagged truncated. */
#define PK_PATH_DEPTH 48
#define PK_NAME_MAX 255

#define AT_FDCWD -100
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10

struct pk_record {
	struct pk_header hdr;
	union pk_body body;
	char tail[PK_TAIL_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* resized by the loader from config */
} pk_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pk_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pk_config);
} pk_config SEC(".maps");

/* tgid -> PK_IGNORE_* | PK_INTEREST_* (only the process module writes it;
 * the others read their own copy, kept in step by picketd). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} pk_interest SEC(".maps");

struct pk_scratch {
	__u32 off;
	char path[PK_STR_MAX + PK_NAME_MAX + 1];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct pk_record);
} pk_records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pk_scratch);
} pk_scratch_map SEC(".maps");

static __always_inline struct pk_config *pk_get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&pk_config, &zero);
}

/* True when the current process's events for this module are to be dropped
 * in the kernel: the module is off, or the process (picketd itself, or an
 * image the operator ignores) is not of interest. */
static __always_inline bool pk_skip_current(void)
{
	struct pk_config *cfg = pk_get_config();
	if (cfg && (cfg->flags & PK_MODULE_IGNORE_BIT))
		return true;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *interest = bpf_map_lookup_elem(&pk_interest, &tgid);
	return interest && (*interest & PK_MODULE_IGNORE_BIT);
}

static __always_inline void pk_count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&pk_lost, &zero);
	if (lost)
		__sync_fetch_and_add(lost, 1);
}

/* The per-CPU record under construction; slot 1 is for programs that build
 * a second record while the first is alive (none today). */
static __always_inline struct pk_record *pk_record_begin(__u16 kind)
{
	__u32 zero = 0;
	struct pk_record *r = bpf_map_lookup_elem(&pk_records, &zero);
	if (!r)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	r->hdr.kind = kind;
	r->hdr.flags = 0;
	r->hdr.len = 0;
	r->hdr.ts_ns = bpf_ktime_get_boot_ns();
	r->hdr.pid = pid_tgid >> 32;
	r->hdr.tid = (__u32)pid_tgid;
	r->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	r->hdr.uid = (__u32)uid_gid;
	r->hdr.gid = uid_gid >> 32;
	r->hdr.euid = BPF_CORE_READ(task, cred, euid.val);
	r->hdr.egid = BPF_CORE_READ(task, cred, egid.val);
	if (bpf_core_field_exists(task->loginuid)) {
		r->hdr.auid = BPF_CORE_READ(task, loginuid.val);
		r->hdr.sessionid = BPF_CORE_READ(task, sessionid);
	} else {
		r->hdr.auid = 0xffffffff;
		r->hdr.sessionid = 0xffffffff;
		r->hdr.flags |= PK_F_NO_LOGINUID;
	}
	r->hdr.cgroup_id = bpf_get_current_cgroup_id();
	r->hdr._pad = 0;
	bpf_get_current_comm(r->hdr.comm, sizeof(r->hdr.comm));
	__builtin_memset(&r->body, 0, sizeof(r->body));
	return r;
}

/* Sends the record with `used` tail bytes; counts it lost when the ring is
 * full, which is the kernel half of picketd's loss accounting. */
static __always_inline void pk_record_submit(void *ctx, struct pk_record *r, __u32 used)
{
	__u64 size = sizeof(r->hdr) + sizeof(r->body) + (used & (PK_TAIL_MAX - 1));
	if (used >= PK_TAIL_MAX)
		size = sizeof(*r);
	r->hdr.len = size;
	if (bpf_ringbuf_output(&pk_events, r, size, 0) != 0)
		pk_count_lost();
}

/* Appends a user-space string; returns the new tail use. */
static __always_inline __u32 pk_put_user_str(struct pk_record *r, __u32 used, struct pk_str *s,
					    const void *src)
{
	if (used > PK_TAIL_MASK || !src) {
		if (src)
			r->hdr.flags |= PK_F_TRUNCATED;
		return used;
	}
	long n = bpf_probe_read_user_str(&r->tail[used & PK_TAIL_MASK], PK_STR_MAX, src);
	if (n <= 0)
		return used;
	s->off = used;
	s->len = n - 1;
	return used + n;
}

static __always_inline __u32 pk_put_kernel_str(struct pk_record *r, __u32 used, struct pk_str *s,
					      const void *src)
{
	if (used > PK_TAIL_MASK || !src) {
		if (src)
			r->hdr.flags |= PK_F_TRUNCATED;
		return used;
	}
	long n = bpf_probe_read_kernel_str(&r->tail[used & PK_TAIL_MASK], PK_STR_MAX, src);
	if (n <= 0)
		return used;
	s->off = used;
	s->len = n - 1;
	return used + n;
}

/*
 * Writes the absolute path of `p` into the per-CPU scratch buffer, built
 * backwards from its end, crossing mount points through struct mount.
 * Returns the start offset in scratch (the path runs to PK_STR_MAX - 1, NUL
 * excluded), or a negative value. Paths are as seen from the initial mount
 * namespace's root, which is what an operator needs when a container writes
 * to a bind mount.
 *
 * The write offset lives in map memory and is re-read through a volatile
 * pointer on every iteration: the verifier then sees an unknown (masked)
 * scalar at the loop head on every path, so the states of the mount-crossing
 * and the name-copying branches merge instead of multiplying.
 */
static __noinline int pk_resolve_path(struct path *p)
{
	__u32 zero = 0;
	struct pk_scratch *s = bpf_map_lookup_elem(&pk_scratch_map, &zero);
	if (!s || !p)
		return -1;
	volatile __u32 *voff = &s->off;
	struct dentry *d = BPF_CORE_READ(p, dentry);
	struct vfsmount *vmnt = BPF_CORE_READ(p, mnt);
	struct mount *mnt = container_of(vmnt, struct mount, mnt);
	*voff = PK_STR_MAX - 1;
	s->path[PK_STR_MAX - 1] = 0;

	for (int i = 0; i < PK_PATH_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(d, d_parent);
		struct dentry *mnt_root = BPF_CORE_READ(vmnt, mnt_root);
		bool pseudo = d == parent && d != mnt_root;
		if (d == mnt_root) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
			if (up == mnt)
				break; /* the namespace root */
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			vmnt = (struct vfsmount *)__builtin_preserve_access_index(&up->mnt);
			continue;
		}
		__u32 len = BPF_CORE_READ(d, d_name.len);
		const unsigned char *name = BPF_CORE_READ(d, d_name.name);
		__u32 off = *voff & PK_TAIL_MASK;
		len &= PK_NAME_MAX;
		if (len + 1 >= off)
			return -2; /* longer than PK_STR_MAX */
		off -= len;
		bpf_probe_read_kernel(&s->path[off & PK_TAIL_MASK], len, name);
		off -= 1;
		s->path[off & PK_TAIL_MASK] = '/';
		*voff = off;
		/* a dentry that is its own parent without being a mount's root
		 * is a pseudo file (memfd, pipe, socket) or a detached tree: its
		 * name is all the path there is */
		if (pseudo)
			break;
		d = parent;
	}
	__u32 off = *voff & PK_TAIL_MASK;
	if (off == PK_STR_MAX - 1) {
		off -= 1;
		s->path[off & PK_TAIL_MASK] = '/';
	}
	return off;
}

/* Copies a resolved path from scratch into the record tail (without NUL
 * terminator written separately). Returns the new tail use. */
static __always_inline __u32 pk_put_path(struct pk_record *r, __u32 used, struct pk_str *s,
					 struct path *p)
{
	if (used > PK_TAIL_MASK) {
		r->hdr.flags |= PK_F_TRUNCATED;
		return used;
	}
	int start = pk_resolve_path(p);
	if (start < 0) {
		r->hdr.flags |= PK_F_TRUNCATED;
		return used;
	}
	__u32 zero = 0;
	struct pk_scratch *sc = bpf_map_lookup_elem(&pk_scratch_map, &zero);
	if (!sc)
		return used;
	__u32 len = (PK_STR_MAX - 1) - (__u32)start;
	/* len + 1 copies the NUL too */
	bpf_probe_read_kernel(&r->tail[used & PK_TAIL_MASK], (len + 1) & PK_TAIL_MASK,
			      &sc->path[start & PK_TAIL_MASK]);
	s->off = used;
	s->len = len;
	return used + len + 1;
}

static __always_inline struct file *pk_fd_file(struct task_struct *task, long fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Path of the directory a *at() syscall's relative name is taken against. */
static __always_inline struct path *pk_dir_path(struct task_struct *task, long dfd)
{
	if ((int)dfd == AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(task, fs);
		return (struct path *)__builtin_preserve_access_index(&fs->pwd);
	}
	struct file *f = pk_fd_file(task, (int)dfd);
	if (!f)
		return NULL;
	return (struct path *)__builtin_preserve_access_index(&f->f_path);
}

/* Appends `dir(dfd) + "/" + name`, or `name` if it is absolute, and flags
 * the record when the name has a `..` in it: such a path is normalized in
 * user space and must not be judged by the kernel-side prefix filter. */
static __always_inline __u32 pk_put_at_path(struct pk_record *r, __u32 used, struct pk_str *s,
					    long dfd, const char *name)
{
	char first = 0;
	if (!name)
		return used;
	bpf_probe_read_user(&first, 1, name);
	__u32 name_off = used;
	__u32 after;
	if (first == '/') {
		after = pk_put_user_str(r, used, s, name);
	} else {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct pk_str dir = {};
		__u32 dir_end = pk_put_path(r, used, &dir, pk_dir_path(task, dfd));
		if (dir_end == used || dir_end > PK_TAIL_MASK) {
			after = pk_put_user_str(r, used, s, name);
		} else {
			/* overwrite the dir's NUL with the separator, unless dir is "/" */
			__u32 pos = dir_end - 1;
			if (dir.len != 1) {
				r->tail[pos & PK_TAIL_MASK] = '/';
				pos += 1;
			}
			if (pos > PK_TAIL_MASK) {
				r->hdr.flags |= PK_F_TRUNCATED;
				return used;
			}
			long n = bpf_probe_read_user_str(&r->tail[pos & PK_TAIL_MASK], PK_STR_MAX, name);
			if (n <= 0)
				return used;
			name_off = pos;
			s->off = used;
			s->len = pos + n - 1 - used;
			after = pos + n;
		}
	}
	/* Laundered through map memory like the resolver's offset, so the scan
	 * costs one pass of verification whatever path led here. */
	__u32 zero = 0;
	struct pk_scratch *sc = bpf_map_lookup_elem(&pk_scratch_map, &zero);
	if (!sc)
		return after;
	volatile __u32 *vscan = &sc->off;
	*vscan = name_off;
	name_off = *vscan & PK_TAIL_MASK;
	*vscan = after;
	__u32 end = *vscan & (PK_TAIL_MAX - 1);
	for (int i = 0; i < 255; i++) {
		__u32 at = name_off + i;
		if (at + 1 >= end)
			break;
		if (r->tail[at & PK_TAIL_MASK] == '.' && r->tail[(at + 1) & PK_TAIL_MASK] == '.') {
			r->hdr.flags |= PK_F_UNNORMALIZED;
			break;
		}
	}
	return after;
}

/* --- per-process interest ---------------------------------------------
 * Every object keeps its own interest map with its own exec/fork/exit
 * hooks, so no map is shared (sharing needs pinning, and pinned maps
 * outlive a crashed picketd) and no user-space mirroring races an event. */

/* executable path -> PK_IGNORE_* | PK_INTEREST_CHILDREN, from config */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct pk_image_key);
	__type(value, __u32);
} pk_image_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pk_image_key);
} pk_image_scratch SEC(".maps");

/* Applies the image rule of the executable whose path (in map memory) is
 * given, or drops a non-inherited entry for an image without a rule. */
static __always_inline void pk_interest_exec_path(__u32 tgid, const char *path, __u32 len)
{
	__u32 *cur = bpf_map_lookup_elem(&pk_interest, &tgid);
	if (path && len > 0 && len < PK_IMAGE_MAX) {
		__u32 zero = 0;
		struct pk_image_key *key = bpf_map_lookup_elem(&pk_image_scratch, &zero);
		if (key) {
			__builtin_memset(key, 0, sizeof(*key));
			/* The mask must reach the verifier: clang drops `len & 255`
			 * after the `len < 256` test above, and verifiers before ~6.3
			 * do not carry that 32-bit test over to the 64-bit size
			 * register (Debian 12's 6.1 rejected this read with
			 * size=65535). An opaque AND keeps the bound in the register
			 * the helper call uses. */
			__u64 n = len;
			asm volatile("%[n] &= %[mask]" : [n] "+r"(n) : [mask] "i"(PK_IMAGE_MAX - 1));
			bpf_probe_read_kernel(key->path, n, path);
			__u32 *rule = bpf_map_lookup_elem(&pk_image_rules, key);
			if (rule) {
				__u32 v = *rule;
				bpf_map_update_elem(&pk_interest, &tgid, &v, BPF_ANY);
				return;
			}
		}
	}
	if (cur && !(*cur & PK_INTEREST_INHERITED))
		bpf_map_delete_elem(&pk_interest, &tgid);
}

static __always_inline void pk_interest_fork(__u32 parent_tgid, __u32 child_tgid)
{
	__u32 *pi = bpf_map_lookup_elem(&pk_interest, &parent_tgid);
	if (pi && (*pi & PK_INTEREST_CHILDREN)) {
		__u32 v = *pi | PK_INTEREST_INHERITED;
		bpf_map_update_elem(&pk_interest, &child_tgid, &v, BPF_ANY);
	}
}

/* The three hooks for objects other than the process module's. */
#define PK_INTEREST_PROGRAMS                                                     \
	SEC("tracepoint/sched/sched_process_exec")                              \
	int pk_track_exec(void *ctx)                                             \
	{                                                                        \
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;                   \
		struct pk_config *cfg = pk_get_config();                         \
		if (!cfg || !cfg->image_rules) {                                 \
			pk_interest_exec_path(tgid, NULL, 0);                    \
			return 0;                                                \
		}                                                                \
		struct task_struct *task = (struct task_struct *)bpf_get_current_task(); \
		struct file *exe = BPF_CORE_READ(task, mm, exe_file);            \
		int start = exe ? pk_resolve_path((struct path *)__builtin_preserve_access_index(&exe->f_path)) : -1; \
		__u32 zero = 0;                                                  \
		struct pk_scratch *sc = bpf_map_lookup_elem(&pk_scratch_map, &zero); \
		if (start < 0 || !sc) {                                          \
			pk_interest_exec_path(tgid, NULL, 0);                    \
			return 0;                                                \
		}                                                                \
		pk_interest_exec_path(tgid, &sc->path[start & PK_TAIL_MASK],     \
				      (PK_STR_MAX - 1) - (__u32)start);          \
		return 0;                                                        \
	}                                                                        \
	SEC("raw_tracepoint/sched_process_fork")                                \
	int pk_track_fork(struct bpf_raw_tracepoint_args *ctx)                   \
	{                                                                        \
		struct task_struct *parent = (struct task_struct *)ctx->args[0]; \
		struct task_struct *child = (struct task_struct *)ctx->args[1];  \
		__u32 ctgid = BPF_CORE_READ(child, tgid);                        \
		if (ctgid != (__u32)BPF_CORE_READ(child, pid))                   \
			return 0;                                                \
		pk_interest_fork(BPF_CORE_READ(parent, tgid), ctgid);            \
		return 0;                                                        \
	}                                                                        \
	SEC("tracepoint/sched/sched_process_exit")                              \
	int pk_track_exit(void *ctx)                                             \
	{                                                                        \
		__u64 id = bpf_get_current_pid_tgid();                           \
		__u32 tgid = id >> 32;                                           \
		if (tgid == (__u32)id)                                           \
			bpf_map_delete_elem(&pk_interest, &tgid);                \
		return 0;                                                        \
	}

#endif
