/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The record layout shared by the eBPF probes and picketd.
 *
 * Every record that a probe writes into a ring buffer is
 *
 *     struct pk_header   (PK_HEADER_SIZE bytes)
 *     union  pk_body     (PK_BODY_SIZE bytes, meaning given by hdr.kind)
 *     char   tail[]      (hdr.len - PK_HEADER_SIZE - PK_BODY_SIZE bytes)
 *
 * Strings live in the tail; the body refers to them with a `struct pk_str`
 * (offset from the tail start, length without the terminating NUL). The Rust
 * mirror is `picket_probes::abi`; its tests check sizes and offsets against
 * the constants below, so a change here that is not mirrored fails the build's
 * tests.
 *
 * Numbers are in host byte order except network addresses and ports, which
 * are as the kernel keeps them (addresses big-endian, ports noted per field).
 */
#ifndef PICKET_ABI_H
#define PICKET_ABI_H

#define PK_ABI_VERSION 1

#define PK_HEADER_SIZE 80
#define PK_BODY_SIZE 128
#define PK_TAIL_MAX 8192
/* One string is at most this long (including its NUL) and starts at a tail
 * offset of at most PK_TAIL_MASK, so a write never leaves the tail. */
#define PK_STR_MAX 4096
#define PK_TAIL_MASK (PK_STR_MAX - 1)
#define PK_ARGV_MAX 4095
#define PK_COMM_LEN 16

/* Record kinds. */
enum pk_kind {
	PK_EXEC = 1,       /* sched_process_exec: argv, exe, cwd */
	PK_FORK = 2,       /* sched_process_fork (processes, not threads) */
	PK_EXIT = 3,       /* sched_process_exit of a thread-group leader */
	PK_FILE_OPEN = 4,  /* sys_exit of open/openat/openat2/creat with write intent */
	PK_PATH_OP = 5,    /* sys_enter of unlink/rename/chmod/chown/link/symlink/... */
	PK_SYS_EXIT = 6,   /* the result of a syscall whose PK_PATH_OP/PK_PRIV/... was sent */
	PK_NET = 7,        /* sys_exit of connect/accept/accept4/bind/listen */
	PK_TCP_STATE = 8,  /* sock:inet_sock_set_state */
	PK_PRIV = 9,       /* sys_enter of the setuid family */
	PK_PTRACE = 10,    /* sys_enter of ptrace */
	PK_MEMFD = 11,     /* sys_enter of memfd_create */
	PK_MOUNT = 12,     /* sys_enter of mount */
	PK_MODULE = 13,    /* sys_enter of init_module/finit_module/delete_module */
};

/* Header flags. */
#define PK_F_TRUNCATED (1 << 0)    /* a string or argv did not fit */
#define PK_F_EXE_DELETED (1 << 1)  /* exec: the executable has no links (memfd, deleted file) */
#define PK_F_UNNORMALIZED (1 << 2) /* path op: the name has `..` components */
#define PK_F_NO_LOGINUID (1 << 3)  /* the kernel has no audit loginuid */

/* Syscall identifiers used in PK_PATH_OP / PK_SYS_EXIT / PK_PRIV / PK_NET ops. */
enum pk_op {
	PK_OP_UNLINK = 1,
	PK_OP_RMDIR = 2,
	PK_OP_RENAME = 3,
	PK_OP_CHMOD = 4,
	PK_OP_CHOWN = 5,
	PK_OP_LINK = 6,
	PK_OP_SYMLINK = 7,
	PK_OP_SETUID = 20,
	PK_OP_SETGID = 21,
	PK_OP_SETREUID = 22,
	PK_OP_SETREGID = 23,
	PK_OP_SETRESUID = 24,
	PK_OP_SETRESGID = 25,
	PK_OP_SETFSUID = 26,
	PK_OP_SETFSGID = 27,
	PK_OP_PTRACE = 30,
	PK_OP_MEMFD_CREATE = 31,
	PK_OP_MOUNT = 32,
	PK_OP_INIT_MODULE = 33,
	PK_OP_FINIT_MODULE = 34,
	PK_OP_DELETE_MODULE = 35,
	PK_OP_CONNECT = 40,
	PK_OP_ACCEPT = 41,
	PK_OP_BIND = 42,
	PK_OP_LISTEN = 43,
};

/* Bits of pk_config.flags and of the per-process interest map values. */
#define PK_IGNORE_PROCESS (1 << 0)
#define PK_IGNORE_FILE (1 << 1)
#define PK_IGNORE_NETWORK (1 << 2)
#define PK_IGNORE_SYSCALLS (1 << 3)
#define PK_IGNORE_ALL (PK_IGNORE_PROCESS | PK_IGNORE_FILE | PK_IGNORE_NETWORK | PK_IGNORE_SYSCALLS)
/* interest map: children created by fork inherit this entry */
#define PK_INTEREST_CHILDREN (1 << 8)
/* interest map: this entry was inherited (kept across exec) */
#define PK_INTEREST_INHERITED (1 << 9)

/* Lost-record counters, one slot per module, indexed by these. */
enum pk_lost_slot {
	PK_LOST_PROCESS = 0,
	PK_LOST_FILE = 1,
	PK_LOST_NETWORK = 2,
	PK_LOST_SYSCALLS = 3,
	PK_LOST_SLOTS = 4,
};

#ifndef __PK_NO_TYPES
struct pk_str {
	__u16 off;
	__u16 len;
};

struct pk_header {
	__u16 kind;
	__u16 flags;
	__u32 len;        /* whole record, header included */
	__u64 ts_ns;      /* bpf_ktime_get_boot_ns() */
	__u32 pid;        /* thread-group id */
	__u32 tid;
	__u32 ppid;       /* real parent's thread-group id */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 auid;       /* audit login uid, or 0xffffffff */
	__u64 cgroup_id;
	__u32 sessionid;
	__u32 _pad;
	char comm[PK_COMM_LEN];
};

struct pk_exec {
	struct pk_str filename; /* as passed to execve */
	struct pk_str exe;      /* resolved mm->exe_file */
	struct pk_str argv;     /* NUL-separated */
	struct pk_str cwd;
	__u32 argv_len;         /* bytes the process had, before truncation */
	__u32 exe_nlink;
	__u32 exe_mode;
	__u32 exe_uid;
};

struct pk_fork {
	__u32 child_pid;
	__u32 child_tid;
};

struct pk_exit {
	__s32 exit_code; /* task->exit_code: (status << 8) | signal */
};

struct pk_file_open {
	struct pk_str path;
	__u32 flags;   /* open(2) flags */
	__u32 fmode;   /* file->f_mode */
	__u32 i_mode;
	__u32 i_uid;
	__s64 ret;
	__u64 ino;
};

struct pk_path_op {
	__u32 op;
	__u32 flags;    /* AT_* flags / rename flags */
	__u32 mode;     /* chmod */
	__u32 uid;      /* chown */
	__u32 gid;      /* chown */
	__u32 _pad;
	struct pk_str path;    /* the object: dir of dfd (or cwd) + "/" + name */
	struct pk_str path2;   /* rename/link target, or symlink target text */
};

struct pk_sys_exit {
	__u32 op;
	__u32 _pad;
	__s64 ret;
};

struct pk_net {
	__u32 op;
	__u16 family;      /* AF_INET / AF_INET6 */
	__u16 sock_type;   /* SOCK_STREAM / SOCK_DGRAM / ... */
	__u16 protocol;    /* IPPROTO_* */
	__u16 lport;       /* host order */
	__u16 rport;       /* host order */
	__u16 _pad;
	__u8 laddr[16];    /* v4 in the first 4 bytes */
	__u8 raddr[16];
	__s64 ret;
	__s32 fd;
	__u32 backlog;
};

struct pk_tcp_state {
	__u16 oldstate;
	__u16 newstate;
	__u16 sport;       /* host order */
	__u16 dport;       /* host order */
	__u16 family;
	__u16 protocol;
	__u32 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__u64 skaddr;
};

struct pk_priv {
	__u32 op;
	__u32 _pad;
	__u32 arg[3];      /* as passed; -1 means "unchanged" */
	__u32 old_uid;
	__u32 old_euid;
	__u32 old_gid;
	__u32 old_egid;
};

struct pk_ptrace {
	__s64 request;
	__u32 target_pid;
	__u32 _pad;
	__u64 addr;
};

struct pk_memfd {
	struct pk_str name;
	__u32 flags;
};

struct pk_mount {
	struct pk_str source;
	struct pk_str target;
	struct pk_str fstype;
	__u32 _pad;
	__u64 flags;
};

struct pk_module {
	__u32 op;
	__u32 flags;
	struct pk_str name;    /* delete: module name; finit: resolved path of the fd */
	__u64 len;             /* init_module: image length */
};

union pk_body {
	struct pk_exec exec;
	struct pk_fork fork;
	struct pk_exit exit;
	struct pk_file_open open;
	struct pk_path_op path;
	struct pk_sys_exit sys_exit;
	struct pk_net net;
	struct pk_tcp_state tcp;
	struct pk_priv priv;
	struct pk_ptrace ptrace;
	struct pk_memfd memfd;
	struct pk_mount mount;
	struct pk_module module;
	__u8 _size[PK_BODY_SIZE];
};

/* Runtime settings written by picketd into the `pk_config` array map. */
struct pk_config {
	__u32 flags;          /* PK_IGNORE_* for the whole module */
	__u32 tcp_state_mask; /* bit n set: report transitions into TCP state n */
	__u32 file_filter;    /* 1: only report paths under a watched prefix */
	__u32 image_rules;    /* 1: pk_image_rules has entries; look images up on exec */
	/* Syscall numbers the raw_syscalls fallback watches, for syscalls whose
	 * own tracepoints this kernel lacks (0: not watched). */
	__u32 nr_init_module;
	__u32 nr_finit_module;
	__u32 nr_delete_module;
	__u32 _pad;
};

/* Key of the LPM tries of watched and ignored path prefixes. */
#define PK_PREFIX_MAX 256
struct pk_prefix_key {
	__u32 prefixlen; /* in bits */
	__u8 data[PK_PREFIX_MAX];
};

/* Key of the image-rule hash map: an executable path, NUL padded. */
#define PK_IMAGE_MAX 256
struct pk_image_key {
	char path[PK_IMAGE_MAX];
};
/* The Rust decoder (picket_probes::abi) reads these offsets; keep in step. */
#define PK_ASSERT_OFFSET(t, f, o) _Static_assert(__builtin_offsetof(t, f) == o, #t "." #f)
_Static_assert(sizeof(struct pk_header) == PK_HEADER_SIZE, "pk_header size");
_Static_assert(sizeof(union pk_body) == PK_BODY_SIZE, "pk_body size");
_Static_assert(sizeof(struct pk_config) == 32, "pk_config size");
PK_ASSERT_OFFSET(struct pk_header, cgroup_id, 48);
PK_ASSERT_OFFSET(struct pk_header, comm, 64);
PK_ASSERT_OFFSET(struct pk_exec, exe_uid, 28);
PK_ASSERT_OFFSET(struct pk_file_open, ret, 24);
PK_ASSERT_OFFSET(struct pk_file_open, ino, 32);
PK_ASSERT_OFFSET(struct pk_path_op, path2, 28);
PK_ASSERT_OFFSET(struct pk_sys_exit, ret, 8);
PK_ASSERT_OFFSET(struct pk_net, laddr, 16);
PK_ASSERT_OFFSET(struct pk_net, ret, 48);
PK_ASSERT_OFFSET(struct pk_net, backlog, 60);
PK_ASSERT_OFFSET(struct pk_tcp_state, saddr, 16);
PK_ASSERT_OFFSET(struct pk_tcp_state, skaddr, 48);
PK_ASSERT_OFFSET(struct pk_priv, old_egid, 32);
PK_ASSERT_OFFSET(struct pk_ptrace, addr, 16);
PK_ASSERT_OFFSET(struct pk_mount, flags, 16);
PK_ASSERT_OFFSET(struct pk_module, len, 16);
#endif

#endif
