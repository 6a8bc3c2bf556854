/* SPDX-License-Identifier: Apache-2.0 */
/* Per-fd sums: bytes written to a file or moved over a socket, summed per (tgid, fd) and written
 * out at close, replace, exec or exit; DNS datagrams are caught on the same send path.
 *
 * Part of effects.bpf.c, included by it only, after the headers before it in that file's order
 * (one object, one set of maps: the split is for reading, the compiled code is unchanged). */
#ifndef VIGIL_EFFECTS_FDS_H
#define VIGIL_EFFECTS_FDS_H

/* ---- per-fd sums ---- */

/* The fd's running sums, created on first sight. Creation classifies the fd once (regular file,
 * socket or neither), so later calls on it cost one hash lookup. */
static struct fd_state *fd_state_get(struct call *c, __s32 fd)
{
	struct fd_key key = { .tgid = c->tgid, .fd = fd };
	struct fd_state *st = bpf_map_lookup_elem(&fd_state, &key), *fresh = &c->s->fresh;
	__u32 mode, one = 1, tgid = c->tgid;
	struct sock *sk;
	struct file *f;

	if (st && st->session_id == c->info->session_id)
		return st;
	if (st) /* left by an earlier process with this tgid whose close went unseen */
		bpf_map_delete_elem(&fd_state, &key);
	f = fd_file(c->task, fd);
	if (!f)
		return 0;
	__builtin_memset(fresh, 0, sizeof(*fresh));
	mode = BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT;
	if (mode == S_IFREG && cfg.files)
		fresh->kind = FD_FILE;
	else if (mode == S_IFSOCK && cfg.net)
		fresh->kind = FD_SOCKET;
	if (fresh->kind == FD_SOCKET) {
		sk = file_sock(f);
		fresh->sock_type = BPF_CORE_READ(sk, sk_type);
	}
	fresh->session_id = c->info->session_id;
	fresh->call_id = c->info->call_id;
	fresh->file = (__u64)f;
	if (bpf_map_update_elem(&fd_state, &key, fresh, BPF_NOEXIST)) {
		count_event(EVENT_EFFECTS_FD_FULL, -1);
		return 0;
	}
	bpf_map_update_elem(&fd_owners, &tgid, &one, BPF_ANY);
	return bpf_map_lookup_elem(&fd_state, &key);
}

/* Write out what the fd moved (file_write, or net_close/net_bytes) and zero the sums. */
static void flush_state(struct scratch *s, struct task_struct *task, __s32 fd, struct fd_state *st, __u32 reason)
{
	struct tracked_info info = { .session_id = st->session_id, .call_id = st->call_id };
	struct file *f = fd_file(task, fd);
	__u32 truncated = 0, len, kind;

	if (st->kind == FD_FILE && st->calls_out) {
		file_header(s, EVENT_FILE_WRITE, task, &info);
		s->file.bytes = st->bytes_out;
		s->file.calls = st->calls_out;
		s->file.first_ns = st->first_ns;
		s->file.fd = fd;
		s->file.reason = reason;
		if (reason == FLUSH_CALL)
			s->file.hdr.flags |= EFFECT_NOT_AGGREGATED;
		len = 0;
		if (f && (__u64)f == st->file) {
			file_identity(s, f);
			len = put_file_path(s, task, f, 0, &truncated);
		} else {
			s->file.hdr.flags |= FILE_PATH_STALE;
		}
		if (truncated)
			s->file.hdr.flags |= FILE_PATH_TRUNCATED;
		s->file.len[1] = len;
		file_emit(s, EVENT_FILE_WRITE, len);
	} else if (st->kind == FD_SOCKET) {
		kind = reason == FLUSH_CALL ? EVENT_NET_BYTES : EVENT_NET_CLOSE;
		fill_header(&s->net.hdr, kind, task, &info);
		net_clear(&s->net);
		if (f && (__u64)f == st->file)
			sock_fill(&s->net, f);
		s->net.fd = fd;
		s->net.reason = reason;
		s->net.bytes_sent = st->bytes_out;
		s->net.bytes_received = st->bytes_in;
		s->net.sends = st->calls_out;
		s->net.recvs = st->calls_in;
		if (reason == FLUSH_CALL)
			s->net.hdr.flags |= EFFECT_NOT_AGGREGATED;
		emit_effect(kind, &s->net, sizeof(s->net));
	}
	st->bytes_out = st->bytes_in = st->calls_out = st->calls_in = st->first_ns = 0;
}

static __always_inline void flush_fd(struct scratch *s, struct task_struct *task, __u32 tgid, __s32 fd, __u32 reason)
{
	struct fd_key key = { .tgid = tgid, .fd = fd };
	struct fd_state *st = bpf_map_lookup_elem(&fd_state, &key);

	if (!st)
		return;
	flush_state(s, task, fd, st, reason);
	bpf_map_delete_elem(&fd_state, &key);
}

struct flush_ctx {
	struct scratch *s;
	struct task_struct *task;
	unsigned long *open_fds;
	unsigned long *cloexec; /* 0: every open fd */
	unsigned long bits;     /* the fds of word `word` still to look at */
	__u32 tgid;
	__u32 reason;
	__u32 lo;
	__u32 hi;
	__u32 first_word;
	__u32 word;
};

static long flush_bit(__u32 i, struct flush_ctx *c)
{
	__u32 fd = c->word * 64 + i;

	if (!((c->bits >> i) & 1) || fd < c->lo || fd > c->hi)
		return 0;
	flush_fd(c->s, c->task, c->tgid, fd, c->reason);
	return 0;
}

static long flush_word(__u32 i, struct flush_ctx *c)
{
	unsigned long open = 0, cloexec = ~0UL;

	c->word = c->first_word + i;
	bpf_probe_read_kernel(&open, sizeof(open), c->open_fds + c->word);
	if (c->cloexec)
		bpf_probe_read_kernel(&cloexec, sizeof(cloexec), c->cloexec + c->word);
	c->bits = open & cloexec;
	if (c->bits)
		bpf_loop(64, flush_bit, c, 0);
	return 0;
}

/* The open fds of the task in [lo, hi] (only close-on-exec ones if asked), found through its fd
 * table's bitmap: the cost follows the fds the process has, not the size of fd_state. */
static __always_inline void flush_range(struct scratch *s, struct task_struct *task, __u32 tgid, __u32 lo,
					__u32 hi, __u32 reason, int cloexec_only)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct flush_ctx c = { .s = s, .task = task, .tgid = tgid, .reason = reason, .lo = lo, .hi = hi };
	__u32 max_fds = BPF_CORE_READ(fdt, max_fds);

	if (!max_fds)
		return;
	if (c.hi >= max_fds)
		c.hi = max_fds - 1;
	if (c.lo > c.hi)
		return;
	c.open_fds = BPF_CORE_READ(fdt, open_fds);
	c.cloexec = cloexec_only ? BPF_CORE_READ(fdt, close_on_exec) : 0;
	c.first_word = c.lo / 64;
	bpf_loop(c.hi / 64 - c.first_word + 1, flush_word, &c, 0);
}

/* ---- transfers: write/send and read/receive ---- */

struct mmsg_ctx {
	struct mmsghdr *vec;
	__u64 total;
};

static long mmsg_add(__u32 i, struct mmsg_ctx *c)
{
	__u32 len = 0;

	bpf_probe_read_user(&len, sizeof(len), &c->vec[i].msg_len);
	c->total += len;
	return 0;
}

/* Bytes moved by sendmmsg/recvmmsg: the call returns messages, the kernel wrote each length. */
static __u64 mmsg_bytes(struct mmsghdr *vec, long count)
{
	struct mmsg_ctx c = { .vec = vec };

	if (count > MMSG_MAX)
		count = MMSG_MAX;
	if (count > 0)
		bpf_loop(count, mmsg_add, &c, 0);
	return c.total;
}

/* Capture one datagram if it went to port 53 (an explicit address, else the connected peer). */
static void dns_capture(struct call *c, __s32 fd, const void *buf, __u64 len, const void *uaddr)
{
	struct dns_event *ev = &c->s->dns;
	struct net_event *peer = &c->s->net;
	__u32 n;

	net_clear(peer);
	if (uaddr)
		sockaddr_fill(peer, uaddr, 0, 1);
	else
		sock_fill(peer, fd_file(c->task, fd));
	if (peer->rport != DNS_PORT || (peer->family != AF_INET && peer->family != AF_INET6))
		return;
	fill_header(&ev->hdr, EVENT_DNS_QUERY, c->task, c->info);
	ev->fd = fd;
	ev->family = peer->family;
	ev->rport = peer->rport;
	__builtin_memcpy(ev->raddr, peer->raddr, sizeof(ev->raddr));
	ev->msg_len = len;
	n = len > DNS_CAPTURE_MAX ? DNS_CAPTURE_MAX : len;
	if (bpf_probe_read_user(ev->data, n, buf))
		n = 0;
	ev->len = n;
	emit_effect(EVENT_DNS_QUERY, ev, offsetof(struct dns_event, data) + n);
}

/* The first buffer and the address of a sendmsg()/sendmmsg() message. */
static void dns_msghdr(struct call *c, __s32 fd, struct user_msghdr *uh, __u64 sent)
{
	struct user_msghdr *h = &c->s->msg;
	struct iovec *iov = &c->s->iov;

	if (bpf_probe_read_user(h, sizeof(*h), uh) || !h->msg_iov)
		return;
	if (bpf_probe_read_user(iov, sizeof(*iov), h->msg_iov))
		return;
	dns_capture(c, fd, iov->iov_base, sent < iov->iov_len ? sent : iov->iov_len, h->msg_name);
}

static void dns_check(struct call *c, __s32 fd, __u64 bytes)
{
	struct pt_regs *regs = c->regs;
	void *arg2 = (void *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	struct mmsghdr *vec = arg2;
	__u32 len, i;

	if (c->nr == NR_write)
		dns_capture(c, fd, arg2, bytes, 0);
	else if (c->nr == NR_sendto)
		dns_capture(c, fd, arg2, bytes, (void *)PT_REGS_PARM5_CORE_SYSCALL(regs));
	else if (c->nr == NR_sendmsg)
		dns_msghdr(c, fd, arg2, bytes);
	else if (c->nr == NR_sendmmsg) {
		for (i = 0; i < DNS_MMSG_MAX && i < c->ret; i++) {
			len = 0;
			bpf_probe_read_user(&len, sizeof(len), &vec[i].msg_len);
			dns_msghdr(c, fd, &vec[i].msg_hdr, len);
		}
	}
}

static void on_transfer(struct call *c, __s32 fd, int out)
{
	struct pt_regs *regs = c->regs;
	struct fd_state *st;
	__u64 bytes = c->ret;

	if (c->ret <= 0)
		return;
	st = fd_state_get(c, fd);
	if (!st || st->kind == FD_OTHER)
		return;
	if (c->nr == NR_sendmmsg || c->nr == NR_recvmmsg)
		bytes = mmsg_bytes((struct mmsghdr *)PT_REGS_PARM2_CORE_SYSCALL(regs), c->ret);
	if (!st->first_ns)
		st->first_ns = bpf_ktime_get_boot_ns();
	if (out) { /* threads of one process may share the fd: add atomically */
		__sync_fetch_and_add(&st->bytes_out, bytes);
		__sync_fetch_and_add(&st->calls_out, 1);
	} else {
		__sync_fetch_and_add(&st->bytes_in, bytes);
		__sync_fetch_and_add(&st->calls_in, 1);
	}
	if (cfg.dns && out && st->kind == FD_SOCKET && st->sock_type == SOCK_DGRAM)
		dns_check(c, fd, bytes);
	if (!cfg.aggregate)
		flush_state(c->s, c->task, fd, st, FLUSH_CALL);
}

#endif /* VIGIL_EFFECTS_FDS_H */
