/* SPDX-License-Identifier: Apache-2.0 */
/* Socket addresses of network effects: what the socket holds and what the process asked for.
 *
 * Part of effects.bpf.c, included by it only, after the headers before it in that file's order
 * (one object, one set of maps: the split is for reading, the compiled code is unchanged). */
#ifndef VIGIL_EFFECTS_NET_H
#define VIGIL_EFFECTS_NET_H

/* ---- sockets ---- */

static __always_inline void net_clear(struct net_event *ev)
{
	__builtin_memset(&ev->ret, 0, offsetof(struct net_event, path) - offsetof(struct net_event, ret));
	ev->fd = -1;
}

static __always_inline void sock_local(__u8 *addr, struct sock *sk, __u16 family)
{
	if (family == AF_INET)
		bpf_core_read(addr, 4, &sk->__sk_common.skc_rcv_saddr);
	else
		bpf_core_read(addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
}

/* Family, type, both ends and the Unix path as the kernel socket holds them. */
static void sock_fill(struct net_event *ev, struct file *f)
{
	struct sock *sk = file_sock(f);
	struct unix_address *addr;
	struct unix_sock *u;
	__u32 len;

	ev->sock_id = BPF_CORE_READ(f, f_inode, i_ino);
	ev->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	ev->sock_type = BPF_CORE_READ(sk, sk_type);
	ev->protocol = BPF_CORE_READ(sk, sk_protocol);
	if (ev->family == AF_INET || ev->family == AF_INET6) {
		sock_local(ev->laddr, sk, ev->family);
		if (ev->family == AF_INET)
			bpf_core_read(ev->raddr, 4, &sk->__sk_common.skc_daddr);
		else
			bpf_core_read(ev->raddr, 16, &sk->__sk_common.skc_v6_daddr);
		ev->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		return;
	}
	if (ev->family != AF_UNIX)
		return;
	u = (struct unix_sock *)sk;
	addr = BPF_CORE_READ(u, addr);
	if (!addr) { /* a client's own socket is unnamed: report what it is connected to */
		u = (struct unix_sock *)BPF_CORE_READ(u, peer);
		addr = BPF_CORE_READ(u, addr);
	}
	if (!addr)
		return;
	len = BPF_CORE_READ(addr, len);
	len = len > sizeof(__u16) ? len - sizeof(__u16) : 0;
	if (len > NET_PATH_MAX)
		len = NET_PATH_MAX;
	bpf_probe_read_kernel(ev->path, len, (void *)addr + offsetof(struct unix_address, name) + sizeof(__u16));
	ev->path_len = len;
	if (len && ev->path[0] == 0)
		ev->hdr.flags |= NET_UNIX_ABSTRACT;
}

/* A sockaddr the process passed: into the remote (connect) or local (bind) slot. */
static void sockaddr_fill(struct net_event *ev, const void *uaddr, __u32 alen, int remote)
{
	struct sockaddr_in6 sa = {};
	__u32 len;

	if (!uaddr)
		return;
	bpf_probe_read_user(&sa.sin6_family, sizeof(sa.sin6_family), uaddr);
	ev->family = sa.sin6_family;
	if (sa.sin6_family == AF_INET || sa.sin6_family == AF_INET6) {
		bpf_probe_read_user(&sa, sa.sin6_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(sa), uaddr);
		if (remote)
			ev->rport = bpf_ntohs(sa.sin6_port);
		else
			ev->lport = bpf_ntohs(sa.sin6_port);
		if (sa.sin6_family == AF_INET)
			__builtin_memcpy(remote ? ev->raddr : ev->laddr, &((struct sockaddr_in *)&sa)->sin_addr, 4);
		else
			__builtin_memcpy(remote ? ev->raddr : ev->laddr, &sa.sin6_addr, 16);
		return;
	}
	if (sa.sin6_family != AF_UNIX)
		return;
	len = alen > sizeof(__u16) ? alen - sizeof(__u16) : 0;
	if (len > NET_PATH_MAX)
		len = NET_PATH_MAX;
	bpf_probe_read_user(ev->path, len, uaddr + sizeof(__u16));
	ev->path_len = len;
	if (len && ev->path[0] == 0)
		ev->hdr.flags |= NET_UNIX_ABSTRACT;
}

#endif /* VIGIL_EFFECTS_NET_H */
