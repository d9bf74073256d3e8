// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Network activity of IPv4 and IPv6 sockets: connect, accept/accept4, bind
 * and listen, reported at syscall exit with the socket's own view of both
 * ends (so an ephemeral source port is known), and TCP state changes from
 * sock:inet_sock_set_state, limited in the kernel to the states picketd asks
 * for.
 */
#define PK_MODULE_LOST_SLOT PK_LOST_NETWORK
#define PK_MODULE_IGNORE_BIT PK_IGNORE_NETWORK
#include "picket_common.h"

PK_INTEREST_PROGRAMS
#include <bpf/bpf_endian.h>

#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

struct pk_net_inflight {
	__u32 op;
	__s32 fd;
	__u16 family;
	__u16 port; /* host order, from the user's sockaddr */
	__u32 backlog;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct pk_net_inflight);
} pk_net_inflight SEC(".maps");

/* Reads the family, port and address of a user sockaddr. */
static __always_inline bool pk_read_sockaddr(struct pk_net_inflight *v, const void *uaddr)
{
	__u16 family = 0;
	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return false;
	v->family = family;
	if (family == AF_INET) {
		__u16 port = 0;
		bpf_probe_read_user(&port, 2, uaddr + 2);
		v->port = bpf_ntohs(port);
		bpf_probe_read_user(v->addr, 4, uaddr + 4);
		return true;
	}
	if (family == AF_INET6) {
		__u16 port = 0;
		bpf_probe_read_user(&port, 2, uaddr + 2);
		v->port = bpf_ntohs(port);
		bpf_probe_read_user(v->addr, 16, uaddr + 8);
		return true;
	}
	return false;
}

static __always_inline int pk_net_enter(__u32 op, long fd, const void *uaddr, __u32 backlog)
{
	if (pk_skip_current())
		return 0;
	struct pk_net_inflight v = {};
	v.op = op;
	v.fd = (int)fd;
	v.backlog = backlog;
	if (uaddr && !pk_read_sockaddr(&v, uaddr))
		return 0; /* AF_UNIX, AF_NETLINK, ...: not ours */
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&pk_net_inflight, &tid, &v, BPF_ANY);
	return 0;
}

/* Fills the record from the socket behind `fd`; false if it is not an
 * inet socket. */
static __always_inline bool pk_fill_from_socket(struct pk_net *n, long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct file *f = pk_fd_file(task, fd);
	if (!f)
		return false;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(ino, i_mode) & S_IFMT) != S_IFSOCK)
		return false;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return false;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return false;
	short type = BPF_CORE_READ(sock, type);
	n->family = family;
	n->sock_type = type;
	/* sk_protocol is a bitfield before 5.6; the type says as much for the
	 * protocols rules care about */
	n->protocol = type == SOCK_STREAM ? IPPROTO_TCP : type == SOCK_DGRAM ? IPPROTO_UDP : 0;
	n->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	n->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(n->laddr, &l, 4);
		__builtin_memcpy(n->raddr, &r, 4);
	} else if (bpf_core_field_exists(sk->__sk_common.skc_v6_daddr)) {
		BPF_CORE_READ_INTO(&n->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&n->raddr, sk, __sk_common.skc_v6_daddr);
	}
	return true;
}

static __always_inline int pk_net_exit(struct tp_syscall_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pk_net_inflight *vp = bpf_map_lookup_elem(&pk_net_inflight, &tid);
	if (!vp)
		return 0;
	struct pk_net_inflight v = *vp;
	bpf_map_delete_elem(&pk_net_inflight, &tid);
	long ret = ctx->ret;
	struct pk_record *r = pk_record_begin(PK_NET);
	if (!r)
		return 0;
	struct pk_net *n = &r->body.net;
	n->op = v.op;
	n->ret = ret;
	n->backlog = v.backlog;
	if (v.op == PK_OP_ACCEPT) {
		if (ret < 0)
			return 0;
		n->fd = ret;
		if (!pk_fill_from_socket(n, ret))
			return 0;
	} else {
		n->fd = v.fd;
		if (!pk_fill_from_socket(n, v.fd))
			return 0;
		/* a failed connect may have reset the socket's peer; a failed
		 * bind never set the local end: keep what the caller asked for */
		if (v.op == PK_OP_CONNECT && (ret < 0 || n->rport == 0)) {
			n->rport = v.port;
			__builtin_memcpy(n->raddr, v.addr, 16);
		}
		if (v.op == PK_OP_BIND && (ret < 0 || n->lport == 0)) {
			n->lport = v.port;
			__builtin_memcpy(n->laddr, v.addr, 16);
		}
	}
	pk_record_submit(ctx, r, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int pk_enter_connect(struct tp_syscall_enter *ctx)
{
	return pk_net_enter(PK_OP_CONNECT, ctx->args[0], (void *)ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int pk_exit_connect(struct tp_syscall_exit *ctx)
{
	return pk_net_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_bind")
int pk_enter_bind(struct tp_syscall_enter *ctx)
{
	return pk_net_enter(PK_OP_BIND, ctx->args[0], (void *)ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_exit_bind")
int pk_exit_bind(struct tp_syscall_exit *ctx)
{
	return pk_net_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int pk_enter_listen(struct tp_syscall_enter *ctx)
{
	return pk_net_enter(PK_OP_LISTEN, ctx->args[0], NULL, ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_listen")
int pk_exit_listen(struct tp_syscall_exit *ctx)
{
	return pk_net_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_accept")
int pk_enter_accept(struct tp_syscall_enter *ctx)
{
	return pk_net_enter(PK_OP_ACCEPT, ctx->args[0], NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int pk_exit_accept(struct tp_syscall_exit *ctx)
{
	return pk_net_exit(ctx);
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int pk_enter_accept4(struct tp_syscall_enter *ctx)
{
	return pk_net_enter(PK_OP_ACCEPT, ctx->args[0], NULL, 0);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int pk_exit_accept4(struct tp_syscall_exit *ctx)
{
	return pk_net_exit(ctx);
}

SEC("tracepoint/sock/inet_sock_set_state")
int pk_inet_sock_set_state(struct tp_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	struct pk_config *cfg = pk_get_config();
	if (!cfg || (cfg->flags & PK_IGNORE_NETWORK))
		return 0;
	if (!(cfg->tcp_state_mask & (1u << (ctx->newstate & 31))))
		return 0;
	struct pk_record *r = pk_record_begin(PK_TCP_STATE);
	if (!r)
		return 0;
	struct pk_tcp_state *t = &r->body.tcp;
	t->oldstate = ctx->oldstate;
	t->newstate = ctx->newstate;
	t->sport = ctx->sport;
	t->dport = ctx->dport;
	t->family = ctx->family;
	t->protocol = ctx->protocol;
	t->skaddr = (__u64)ctx->skaddr;
	if (ctx->family == AF_INET) {
		__builtin_memcpy(t->saddr, ctx->saddr, 4);
		__builtin_memcpy(t->daddr, ctx->daddr, 4);
	} else {
		__builtin_memcpy(t->saddr, ctx->saddr_v6, 16);
		__builtin_memcpy(t->daddr, ctx->daddr_v6, 16);
	}
	pk_record_submit(ctx, r, 0);
	return 0;
}
