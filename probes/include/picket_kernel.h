/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The kernel types the probes read, and only those. Every struct carries
 * preserve_access_index, so clang records each field access as a CO-RE
 * relocation and the loader rewrites offsets for the running kernel's BTF:
 * the declared layout here is irrelevant, the field names are what matter.
 * This replaces a generated vmlinux.h.
 */
#ifndef PICKET_KERNEL_H
#define PICKET_KERNEL_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)

/* The map and program type numbers and flags from uapi/linux/bpf.h that the
 * probes use; stable ABI, so declared rather than included. */
enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_RINGBUF = 27,
};
#define BPF_ANY 0
#define BPF_NOEXIST 1
#define BPF_F_NO_PREALLOC (1U << 0)

struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	__u32 val;
} kuid_t;
typedef struct {
	__u32 val;
} kgid_t;

struct qstr {
	union {
		struct {
			__u32 hash;
			__u32 len;
		};
		__u64 hash_len;
	};
	const unsigned char *name;
};

struct inode {
	unsigned short i_mode;
	kuid_t i_uid;
	unsigned long i_ino;
	union {
		const unsigned int i_nlink;
		unsigned int __i_nlink;
	};
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_mode;
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct fs_struct {
	struct path root;
	struct path pwd;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
};

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	const struct cred *cred;
	struct fs_struct *fs;
	struct files_struct *files;
	struct mm_struct *mm;
	kuid_t loginuid;
	unsigned int sessionid;
};

struct in6_addr {
	__u8 s6_addr[16];
};

struct sock_common {
	union {
		__u64 skc_addrpair;
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		__u32 skc_portpair;
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
};

struct socket {
	short type;
	struct sock *sk;
};

#pragma clang attribute pop

/* Tracepoint contexts, as /sys/kernel/tracing/events/.../format gives them.
 * These layouts are tracepoint ABI: not relocated. */
struct trace_entry {
	__u16 type;
	__u8 flags;
	__u8 preempt_count;
	__s32 pid;
};

struct tp_syscall_enter {
	struct trace_entry ent;
	__s32 syscall_nr;
	__u32 _pad;
	unsigned long args[6];
};

struct tp_syscall_exit {
	struct trace_entry ent;
	__s32 syscall_nr;
	__u32 _pad;
	long ret;
};

struct tp_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct tp_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

struct tp_sched_process_exec {
	struct trace_entry ent;
	__u32 data_loc_filename;
	__s32 pid;
	__s32 old_pid;
};

struct tp_sched_process_exit {
	struct trace_entry ent;
	char comm[16];
	__s32 pid;
	__s32 prio;
};

struct tp_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	__s32 oldstate;
	__s32 newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
};

#endif
