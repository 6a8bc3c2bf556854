// SPDX-License-Identifier: Apache-2.0
/* Payload of tracked processes' plain TCP connections (HTTP without TLS), read at the syscalls.
 *
 * The exit tracepoints of write/writev/sendto/sendmsg and read/readv/recvfrom/recvmsg, one program
 * for all: it reads the call's arguments (fd, buffer or iovec array, flags) from the registers
 * saved at entry, which the syscall leaves as they were, and copies what the call really moved.
 * No entry program: a process nobody tracks pays for one tracepoint and one program per call, not
 * two of each (bench/README.md). Where the effects sensor runs on the same exit tracepoints, this
 * program is not attached at all: the effects program calls it (a tail call) for tracked
 * processes only, so those syscalls run one program for everyone else. A connection is keyed by its
 * socket's inode, never by thread; its first write decides whether it is captured: a request line
 * (GET, POST, ...) or the HTTP/2 preface, or a configured remote port unless the write starts a
 * TLS record. TLS connections therefore never reach user space from here: their first write is a
 * ClientHello (0x16 0x03 ...), which is neither, and their plaintext comes from the TLS uprobes.
 * Records use the TLS data and close layouts (kinds EVENT_SOCK_DATA/EVENT_SOCK_CLOSE), so user
 * space feeds them to the same reassembly. Untracked processes cost one hash lookup per call.
 *
 * Pipes carry MCP's stdio transport (newline-delimited JSON-RPC between a host and the servers it
 * spawns): a pipe whose first write starts like a JSON-RPC message is captured, writes only:
 * '{"' and the first letter of one of its keys (jsonrpc, method, id, result, error), as the MCP
 * SDKs write them; other JSON on pipes (tool output) is not. The host's requests
 * are its writes to the server's stdin pipe, the server's answers its writes to its stdout pipe,
 * so writes alone see both directions once (reads would see every message a second time). Each
 * pipe record carries the inode of the writer's stdin (peer_ino), which pairs a server's answers
 * with the pipe its requests came in on. */
#include "payload.bpf.h"
#include "rustls_link.bpf.h"
#include "syscall_nr.bpf.h"
#include <bpf/bpf_endian.h>

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define SOCK_MAX_IOV 64
#define SOCK_MAX_PORTS 8
#define S_IFIFO 0010000
#define SOCK_LIB_PLAIN 3 /* tls_data_event.lib for socket payload (TLS_LIB_* are 1 and 2) */
#define SOCK_LIB_PIPE 4  /* ... and for pipe payload */

/* One TLS record header's first bytes: handshake (22) of TLS 1.0-1.3. */
#define TLS_HANDSHAKE 0x16

const volatile struct sock_config {
	__u32 wakeup_bytes;
	__u32 max_call_bytes;      /* cap per syscall; 0 means no cap */
	__u64 max_conn_bytes;      /* cap per connection (both directions); 0 means no cap */
	__u16 ports[SOCK_MAX_PORTS]; /* remote ports captured whatever their first bytes; 0 ends */
} cfg = {
	.wakeup_bytes = 256 * 1024,
	.max_call_bytes = 16 * 1024 * 1024,
	.max_conn_bytes = 256 * 1024 * 1024,
};

enum conn_state { CONN_IGNORED = 1, CONN_CAPTURED = 2 };

struct sock_conn {
	__u32 state;
	__u32 capped;
	__u64 bytes;
};

/* socket inode -> what its first write decided. LRU: a close we did not see (a process killed,
 * an fd passed on) cannot fill the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sock_conn);
} sock_conns SEC(".maps");

/* The call being finished: which connection, where its bytes are, which way they went. */
struct sock_call {
	__u64 ino;
	__u64 sk;
	__u64 buf;      /* the buffer, or the iovec array when iovcnt > 0 */
	__u32 iovcnt;
	__u32 direction;
	__u32 lib;      /* SOCK_LIB_PLAIN or SOCK_LIB_PIPE */
	__u32 _pad;
};

PAYLOAD_MAPS(sock);

/* The TCP socket behind fd, with its inode; 0 for anything else. A pipe gives its inode, lib
 * SOCK_LIB_PIPE and the value 1 (no socket). */
static __always_inline struct sock *tcp_sock_of(long fd, __u64 *ino, __u32 *lib)
{
	struct file *f = fd_file(bpf_get_current_task_btf(), fd);
	struct socket *sock;
	struct sock *sk;
	__u16 family;
	__u32 mode;

	if (!f)
		return 0;
	mode = BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT;
	if (mode == S_IFIFO) {
		*ino = BPF_CORE_READ(f, f_inode, i_ino);
		*lib = SOCK_LIB_PIPE;
		return (struct sock *)1;
	}
	if (mode != S_IFSOCK)
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	*ino = BPF_CORE_READ(f, f_inode, i_ino);
	*lib = SOCK_LIB_PLAIN;
	return sk;
}

/* Fills `call` for fd's connection when this call is one to capture: a TCP socket or a pipe
 * (written to) whose first write did not rule it out. 0: nothing to do. */
static __always_inline int call_of(struct sock_call *call, __u64 id, long fd, __u64 buf, __u32 iovcnt,
				   __u32 direction)
{
	struct sock_conn *conn;
	struct sock *sk;

	sk = tcp_sock_of(fd, &call->ino, &call->lib);
	if (!sk || (call->lib == SOCK_LIB_PIPE && direction == TLS_DIR_READ))
		return 0;
	if (call->lib == SOCK_LIB_PLAIN)
		rustls_note_socket(id, call->ino, direction);
	conn = bpf_map_lookup_elem(&sock_conns, &call->ino);
	if (conn && conn->state == CONN_IGNORED)
		return 0;
	if (!conn && direction == TLS_DIR_READ)
		return 0; /* decided by the first write: a client speaks first */
	call->sk = (__u64)sk;
	call->buf = buf;
	call->iovcnt = iovcnt;
	call->direction = direction;
	return 1;
}

/* A sendmsg/recvmsg: its iovec array, read from the message header. */
static __always_inline int msg_call_of(struct sock_call *call, __u64 id, long fd, struct user_msghdr *msg, long flags,
				       __u32 direction)
{
	void *iov = 0;
	__u64 iovlen = 0;

	if (flags & MSG_PEEK)
		return 0;
	if (bpf_probe_read_user(&iov, sizeof(iov), &msg->msg_iov) ||
	    bpf_probe_read_user(&iovlen, sizeof(iovlen), &msg->msg_iovlen) || !iovlen)
		return 0;
	return call_of(call, id, fd, (__u64)iov, iovlen > SOCK_MAX_IOV ? SOCK_MAX_IOV : iovlen, direction);
}

static __always_inline __u32 iov_count(long cnt)
{
	return cnt <= 0 ? 0 : cnt > SOCK_MAX_IOV ? SOCK_MAX_IOV : cnt;
}

/* The call `nr` of a tracked thread: its arguments from the registers saved at entry. */
static __always_inline int syscall_call_of(struct sock_call *call, __u64 id, long nr)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long fd = PT_REGS_PARM1_CORE_SYSCALL(regs);
	__u64 buf = PT_REGS_PARM2_CORE_SYSCALL(regs);
	long a2 = PT_REGS_PARM3_CORE_SYSCALL(regs);

	switch (nr) {
	case NR_write:
	case NR_sendto:
		return call_of(call, id, fd, buf, 0, TLS_DIR_WRITE);
	case NR_read:
		return call_of(call, id, fd, buf, 0, TLS_DIR_READ);
	case NR_recvfrom:
		if (PT_REGS_PARM4_CORE_SYSCALL(regs) & MSG_PEEK)
			return 0; /* peeked bytes are read again */
		return call_of(call, id, fd, buf, 0, TLS_DIR_READ);
	case NR_writev:
		return iov_count(a2) && call_of(call, id, fd, buf, iov_count(a2), TLS_DIR_WRITE);
	case NR_readv:
		return iov_count(a2) && call_of(call, id, fd, buf, iov_count(a2), TLS_DIR_READ);
	case NR_sendmsg:
		return msg_call_of(call, id, fd, (struct user_msghdr *)buf, 0, TLS_DIR_WRITE);
	case NR_recvmsg:
		return msg_call_of(call, id, fd, (struct user_msghdr *)buf, a2, TLS_DIR_READ);
	}
	return 0;
}

static __always_inline int is_request_start(__u32 head)
{
	/* the first four bytes, little-endian, of the methods agents use and of the HTTP/2 preface */
	switch (head) {
	case 0x20544547: /* "GET " */
	case 0x54534f50: /* "POST" */
	case 0x20545550: /* "PUT " */
	case 0x44414548: /* "HEAD" */
	case 0x454c4544: /* "DELE" */
	case 0x43544150: /* "PATC" */
	case 0x4954504f: /* "OPTI" */
	case 0x20495250: /* "PRI " */
		return 1;
	}
	return 0;
}

static __always_inline int is_json_rpc_start(__u32 head)
{
	char key = (head >> 16) & 0xff;

	return (head & 0xffff) == 0x227b /* '{"' */ &&
	       (key == 'j' || key == 'm' || key == 'i' || key == 'r' || key == 'e');
}

static __always_inline int port_configured(struct sock *sk)
{
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	int i;

	for (i = 0; i < SOCK_MAX_PORTS; i++) {
		if (!cfg.ports[i])
			return 0;
		if (cfg.ports[i] == dport)
			return 1;
	}
	return 0;
}

/* The first write of a connection decides it; returns its state (0: undecided, ask again). */
static __always_inline __u32 classify(struct sock_call *call, long moved)
{
	struct sock_conn fresh = {};
	__u64 first = call->buf;
	__u32 head = 0;

	if (call->iovcnt && bpf_probe_read_user(&first, sizeof(first), (void *)call->buf))
		return 0;
	if (moved < 4 || bpf_probe_read_user(&head, sizeof(head), (void *)first))
		return 0;
	if (call->lib == SOCK_LIB_PIPE)
		fresh.state = is_json_rpc_start(head) ? CONN_CAPTURED : CONN_IGNORED;
	else if (is_request_start(head) ||
		 ((head & 0xff) != TLS_HANDSHAKE && port_configured((struct sock *)call->sk)))
		fresh.state = CONN_CAPTURED;
	else
		fresh.state = CONN_IGNORED;
	bpf_map_update_elem(&sock_conns, &call->ino, &fresh, BPF_ANY);
	return fresh.state;
}

struct iov_ctx {
	struct tls_data_event *ev;
	__u64 iov;      /* user address of the iovec array */
	__u32 done;     /* bytes of the call already emitted */
	__u32 total;
};

static long emit_iov(__u64 index, struct iov_ctx *v)
{
	struct payload_copy c = { .kind = EVENT_SOCK_DATA, .wakeup_bytes = cfg.wakeup_bytes };
	struct iovec one;
	__u64 len;

	if (v->done >= v->total)
		return 1;
	if (bpf_probe_read_user(&one, sizeof(one), (void *)(v->iov + index * sizeof(one))))
		return 1;
	len = one.iov_len;
	if (len > v->total - v->done)
		len = v->total - v->done;
	c.ev = v->ev;
	c.src = (__u64)one.iov_base;
	c.start = v->done;
	c.len = len;
	payload_emit(&c);
	v->done += len;
	return 0;
}

static __always_inline int on_exit(long nr, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, total, state;
	struct payload_nest *nest;
	struct tracked_info *info;
	struct sock_conn *conn;
	struct sock_call call = {};
	struct tls_data_event *ev;

	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!info || !syscall_call_of(&call, id, nr) || ret <= 0)
		return 0;
	conn = bpf_map_lookup_elem(&sock_conns, &call.ino);
	state = conn ? conn->state : classify(&call, ret);
	if (state != CONN_CAPTURED)
		return 0;
	conn = bpf_map_lookup_elem(&sock_conns, &call.ino);
	if (!conn)
		return 0;
	if (cfg.max_conn_bytes && conn->bytes >= cfg.max_conn_bytes) {
		conn->capped = 1;
		count_event(EVENT_SOCK_CAPPED, -1);
		return 0;
	}
	__sync_fetch_and_add(&conn->bytes, ret);
	ev = payload_slot(&sock_scratch, &sock_nest, &nest, EVENT_SOCK_BUSY);
	if (!ev)
		return 0;
	fill_header(&ev->hdr, EVENT_SOCK_DATA, (struct task_struct *)bpf_get_current_task_btf(), info);
	ev->conn_id = call.ino;
	ev->direction = call.direction;
	ev->lib = call.lib;
	ev->peer_ino = 0;
	if (call.lib == SOCK_LIB_PIPE) {
		struct file *in = fd_file(bpf_get_current_task_btf(), 0);

		ev->peer_ino = in ? BPF_CORE_READ(in, f_inode, i_ino) : 0;
	}
	ev->call_len = ret > 0xffffffffL ? 0xffffffff : ret;
	total = ev->call_len;
	if (cfg.max_call_bytes && total > cfg.max_call_bytes) {
		total = cfg.max_call_bytes;
		ev->hdr.flags |= TLS_CALL_CAPPED;
	}
	if (call.iovcnt) {
		struct iov_ctx v = { .ev = ev, .iov = call.buf, .done = 0, .total = total };

		bpf_loop(call.iovcnt, emit_iov, &v, 0);
	} else {
		struct payload_copy c = { .ev = ev, .src = call.buf, .len = total, .kind = EVENT_SOCK_DATA,
					  .wakeup_bytes = cfg.wakeup_bytes };

		payload_emit(&c);
	}
	payload_release(nest);
	return 0;
}

/* One program for every syscall above, attached to their exit tracepoints, or called by the
 * effects sensor's exit program (see the top of this file). */
SEC("tracepoint/syscalls/sys_exit_write")
int sock_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->id, ctx->ret);
}

/* The connection ends for us when its fd is closed: its exchanges are finished. A duplicated fd
 * closing early finishes them early; the LRU bounds what an unseen close leaves behind. */
SEC("tracepoint/syscalls/sys_enter_close")
int sock_close(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tracked_info *info = bpf_map_lookup_elem(&tracked, &tgid);
	struct tls_close_event ev = {};
	struct sock_conn *conn;
	__u64 ino = 0;
	__u32 lib = 0;

	if (!info || !tcp_sock_of(ctx->args[0], &ino, &lib))
		return 0;
	if (lib == SOCK_LIB_PLAIN)
		rustls_socket_closed(ino, info, cfg.wakeup_bytes);
	conn = bpf_map_lookup_elem(&sock_conns, &ino);
	if (!conn)
		return 0;
	if (conn->state == CONN_CAPTURED && lib == SOCK_LIB_PLAIN) {
		fill_header(&ev.hdr, EVENT_SOCK_CLOSE, (struct task_struct *)bpf_get_current_task_btf(), info);
		ev.conn_id = ino;
		ev.lib = SOCK_LIB_PLAIN;
		emit(EVENT_SOCK_CLOSE, &ev, sizeof(ev), cfg.wakeup_bytes);
	}
	bpf_map_delete_elem(&sock_conns, &ino);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
