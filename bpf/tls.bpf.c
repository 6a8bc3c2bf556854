// SPDX-License-Identifier: Apache-2.0
/* TLS plaintext of tracked processes, read at the TLS library's boundary (uprobes).
 *
 * The same four programs serve OpenSSL (SSL_write/SSL_read and their _ex forms) and GnuTLS
 * (gnutls_record_send/recv); the attach cookie says which library and direction. The buffer is
 * remembered at entry, keyed by thread, and read at return, when it holds what was really moved
 * (for reads it is only filled then). Untracked processes cost one hash lookup and emit nothing. */
#include "payload.bpf.h"
#include "rustls_link.bpf.h"

const volatile struct tls_config cfg = {
	.wakeup_bytes = 256 * 1024,
	.max_call_bytes = 16 * 1024 * 1024,
};

struct tls_call {
	__u64 conn;
	__u64 buf;
	__u64 len_ptr; /* _ex forms: where the library writes the byte count */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid: one call in flight per thread */
	__type(value, struct tls_call);
} tls_calls SEC(".maps");

PAYLOAD_MAPS(tls);

static __always_inline int on_enter(void *conn, void *buf, void *len_ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct tls_call call;

	if (!bpf_map_lookup_elem(&tracked, &tgid))
		return 0;
	call.conn = (__u64)conn;
	call.buf = (__u64)buf;
	call.len_ptr = (__u64)len_ptr;
	bpf_map_update_elem(&tls_calls, &id, &call, BPF_ANY);
	return 0;
}

static __always_inline int on_exit(struct pt_regs *ctx, long ret, int is_ex)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, total;
	__u64 cookie = bpf_get_attach_cookie(ctx), moved = 0;
	struct payload_copy c = { .kind = EVENT_TLS_DATA, .prompt = 1, .wakeup_bytes = cfg.wakeup_bytes };
	struct tracked_info *info;
	struct payload_nest *nest;
	struct tls_data_event *ev;
	struct tls_call *call;

	call = bpf_map_lookup_elem(&tls_calls, &id);
	if (!call)
		return 0;
	if (is_ex) {
		if (ret == 1 && call->len_ptr)
			bpf_probe_read_user(&moved, sizeof(size_t), (void *)call->len_ptr);
	} else if (ret > 0) {
		moved = ret;
	}
	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!moved || !info)
		goto out;
	ev = payload_slot(&tls_scratch, &tls_nest, &nest, EVENT_TLS_BUSY);
	if (!ev)
		goto out;
	fill_header(&ev->hdr, EVENT_TLS_DATA, (struct task_struct *)bpf_get_current_task_btf(), info);
	ev->conn_id = call->conn;
	ev->direction = cookie & 0xff;
	ev->lib = (cookie >> 8) & 0xff;
	ev->call_len = moved > 0xffffffffULL ? 0xffffffff : moved;
	total = ev->call_len;
	if (cfg.max_call_bytes && total > cfg.max_call_bytes) {
		total = cfg.max_call_bytes;
		ev->hdr.flags |= TLS_CALL_CAPPED;
	}
	c.ev = ev;
	c.src = call->buf;
	c.len = total;
	payload_emit(&c);
	payload_release(nest);
out:
	bpf_map_delete_elem(&tls_calls, &id);
	return 0;
}

static __always_inline int on_free(struct pt_regs *ctx, void *conn)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tracked_info *info = bpf_map_lookup_elem(&tracked, &tgid);
	struct tls_close_event ev = {};

	if (!info || !conn)
		return 0;
	fill_header(&ev.hdr, EVENT_TLS_CLOSE, (struct task_struct *)bpf_get_current_task_btf(), info);
	ev.conn_id = (__u64)conn;
	ev.lib = bpf_get_attach_cookie(ctx) >> 8;
	emit_prompt(EVENT_TLS_CLOSE, &ev, sizeof(ev), cfg.wakeup_bytes);
	return 0;
}

/* Each program exists twice: `tls_*` attached per file (perf-event uprobes: every process that
 * maps the file traps), `tls_m_*` loaded as uprobe_multi programs (kernel >= 6.6) and attached
 * per tracked process with a pid filter, so no other process carries a breakpoint. */
#define TLS_PROGRAMS(p)								\
SEC("uprobe")									\
int BPF_KPROBE(p##enter, void *conn, void *buf, long num)			\
{										\
	return on_enter(conn, buf, 0);						\
}										\
SEC("uprobe")									\
int BPF_KPROBE(p##enter_ex, void *conn, void *buf, long num, void *len_ptr)	\
{										\
	return on_enter(conn, buf, len_ptr);					\
}										\
SEC("uretprobe")								\
int BPF_KRETPROBE(p##exit, long ret)						\
{										\
	return on_exit(ctx, (int)ret, 0);					\
}										\
SEC("uretprobe")								\
int BPF_KRETPROBE(p##exit_ex, long ret)						\
{										\
	return on_exit(ctx, (int)ret, 1);					\
}										\
SEC("uprobe")									\
int BPF_KPROBE(p##free, void *conn)						\
{										\
	return on_free(ctx, conn);						\
}

TLS_PROGRAMS(tls_)
TLS_PROGRAMS(tls_m_)

/* OpenSSL 3's ssl_write_internal(s, buf, num, flags, written), hooked in static binaries that
 * carry no SSL_* symbols (bpf/static_openssl.py): the byte count is written through the 5th
 * argument; ssl_read_internal has SSL_read_ex's layout and uses tls_enter_ex. */
SEC("uprobe")
int BPF_KPROBE(tls_enter_ex5, void *conn, void *buf, long num, __u64 flags, void *len_ptr)
{
	return on_enter(conn, buf, len_ptr);
}

/* Per-process mode: TLS library files (exe_key) user space links per tracked process, and the
 * (process, file) pairs linked or being linked. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct exe_key);
	__type(value, __u8);
} tls_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tls_link_key);
	__type(value, __u8);
} tls_linked SEC(".maps");

/* lineage.bpf.c's map, shared: a process stopped here is let go by the same code and watchdog */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} held SEC(".maps");

#define SIGSTOP 19

struct mmap_enter_record {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__u64 addr, len, prot, flags, fd, off;
};

/* A tracked process's first mmap of a TLS library it has no link on: stop it (the signal is taken
 * when mmap returns, before the library's code can run) and ask user space for its link. An
 * untracked process costs one hash lookup per mmap. */
SEC("tracepoint/syscalls/sys_enter_mmap")
int tls_mmap(struct mmap_enter_record *rec)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tls_link_key lk = { .tgid = tgid };
	struct tls_mapped_event ev = {};
	struct tracked_info *info;
	struct file *f;
	__s32 fd = (__s32)rec->fd;
	__u64 now;
	__u8 one = 1;

	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!info || fd < 0)
		return 0;
	f = fd_file(task, fd);
	if (!f)
		return 0;
	lk.file.ino = BPF_CORE_READ(f, f_inode, i_ino);
	lk.file.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	if (!bpf_map_lookup_elem(&tls_files, &lk.file))
		return 0;
	if (bpf_map_update_elem(&tls_linked, &lk, &one, BPF_NOEXIST))
		return 0; /* linked, or being linked */
	fill_header(&ev.hdr, EVENT_TLS_MAPPED, task, info);
	ev.file = lk.file;
	now = bpf_ktime_get_boot_ns();
	if (!bpf_map_update_elem(&held, &tgid, &now, BPF_NOEXIST)) {
		if (bpf_send_signal(SIGSTOP))
			bpf_map_delete_elem(&held, &tgid);
		else
			ev.held = 1;
	}
	emit(EVENT_TLS_MAPPED, &ev, sizeof(ev), 0);
	return 0;
}

/* ---- rustls (bpf/static_rustls.py finds the functions, rustls_link.bpf.h the connection) ----
 *
 * encrypt(sret, self, msg, seq) and decrypt(sret, self, msg, seq) of each TLS 1.3 record cipher:
 * Rust returns their Result through the hidden first argument and passes the message by
 * reference. encrypt's message carries OutboundChunks (word 0 null: one slice at words 1-2;
 * else a slice list at words 0-1 with the byte range words 2-3); decrypt's its record payload at
 * words 0-1, decrypted in place. Neither layout is trusted: an encrypt is read only when the
 * sealed record it returns is exactly the plaintext plus its type byte, tag and header, a decrypt
 * only when it returned the same buffer with a shorter length; anything else is counted as
 * EVENT_RUSTLS_UNREAD. The attach cookie of an encrypter also says where its message keeps the
 * content type and which value is application data (found in its code), so handshake messages
 * and alerts are left out; a decrypted record's type is the byte after its content. */
#define RUSTLS_TAG_LEN 16 /* every TLS 1.3 AEAD rustls offers */
#define RUSTLS_SEALED_EXTRA (5 + 1 + RUSTLS_TAG_LEN) /* header, content type, tag */
#define RUSTLS_MAX_CHUNKS 32
#define RUSTLS_APPLICATION_DATA 0x17

struct rustls_call {
	__u64 self;
	__u64 sret;
	__u64 w[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rustls_call);
} rustls_calls SEC(".maps");

struct rustls_piece_ctx {
	struct tls_data_event *ev;
	__u64 chunks; /* user address of the (ptr, len) slice list */
	__u64 pos;    /* where the current slice starts in the concatenation */
	__u64 start;  /* the message's byte range in the concatenation */
	__u64 end;
};

static __always_inline void rustls_emit_piece(struct tls_data_event *ev, __u64 src, __u64 offset, __u64 len)
{
	/* checked here, on the register the read uses: callers checked it too, and clang drops a
	 * repeated check, but older verifiers (6.1) lose the bound between the two */
	barrier_var(len);
	if (len == 0 || len > TLS_CHUNK_MAX || offset >= TLS_CHUNK_MAX)
		return;
	ev->offset = offset;
	ev->len = len;
	if (bpf_probe_read_user(ev->data, len, (void *)src)) {
		count_event(EVENT_TLS_DATA, -1);
		return; /* the gap shows in the offsets */
	}
	emit(EVENT_TLS_DATA, ev, offsetof(struct tls_data_event, data) + len, cfg.wakeup_bytes);
}

static long rustls_emit_slice(__u64 index, struct rustls_piece_ctx *c)
{
	__u64 slice[2], from, to;

	if (c->pos >= c->end || bpf_probe_read_user(slice, sizeof(slice), (void *)(c->chunks + index * 16)))
		return 1;
	from = c->pos > c->start ? c->pos : c->start;
	to = c->pos + slice[1] < c->end ? c->pos + slice[1] : c->end;
	if (to > from)
		rustls_emit_piece(c->ev, slice[0] + (from - c->pos), from - c->start, to - from);
	c->pos += slice[1];
	return 0;
}

static __always_inline int rustls_enter(struct pt_regs *ctx, void *sret, void *self, void *msg, int is_encrypt)
{
	__u64 id = bpf_get_current_pid_tgid(), cookie;
	__u32 tgid = id >> 32;
	struct rustls_call call = {};
	__u8 type = 0;

	if (!bpf_map_lookup_elem(&tracked, &tgid))
		return 0;
	if (is_encrypt) {
		cookie = bpf_get_attach_cookie(ctx);
		if (bpf_probe_read_user(&type, 1, msg + ((cookie >> 16) & 0xff)) || type != ((cookie >> 24) & 0xff))
			return 0; /* a handshake message or an alert: not the application's bytes */
	}
	if (bpf_probe_read_user(call.w, sizeof(call.w), msg)) {
		count_event(EVENT_RUSTLS_UNREAD, -1);
		return 0;
	}
	call.self = (__u64)self;
	call.sret = (__u64)sret;
	bpf_map_update_elem(&rustls_calls, &id, &call, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(rustls_encrypt_enter, void *sret, void *self, void *msg)
{
	return rustls_enter(ctx, sret, self, msg, 1);
}

SEC("uprobe")
int BPF_KPROBE(rustls_decrypt_enter, void *sret, void *self, void *msg)
{
	return rustls_enter(ctx, sret, self, msg, 0);
}

/* Copy one record's plaintext into the ring: `single` at src, else the slice list of `call`. */
static __always_inline void rustls_emit(struct rustls_call *call, __u64 conn, __u32 direction, __u64 total,
					__u64 single)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tracked_info *info = bpf_map_lookup_elem(&tracked, &tgid);
	struct rustls_piece_ctx c = {};
	struct payload_nest *nest;
	struct tls_data_event *ev;

	if (!info)
		return;
	ev = payload_slot(&tls_scratch, &tls_nest, &nest, EVENT_TLS_BUSY);
	if (!ev)
		return;
	fill_header(&ev->hdr, EVENT_TLS_DATA, (struct task_struct *)bpf_get_current_task_btf(), info);
	ev->conn_id = conn;
	ev->direction = direction;
	ev->lib = TLS_LIB_RUSTLS;
	ev->call_len = total;
	ev->peer_ino = 0;
	if (single) {
		rustls_emit_piece(ev, single, 0, total);
	} else {
		c.ev = ev;
		c.chunks = call->w[0];
		c.start = call->w[2];
		c.end = call->w[3];
		bpf_loop(call->w[1] < RUSTLS_MAX_CHUNKS ? call->w[1] : RUSTLS_MAX_CHUNKS, rustls_emit_slice, &c, 0);
	}
	payload_release(nest);
}

SEC("uretprobe")
int BPF_KRETPROBE(rustls_encrypt_exit)
{
	__u64 id = bpf_get_current_pid_tgid(), result[6] = {}, total;
	struct rustls_call *call = bpf_map_lookup_elem(&rustls_calls, &id);
	int i, sealed = 0;

	if (!call)
		return 0;
	total = call->w[0] ? call->w[3] - call->w[2] : call->w[2];
	if (!bpf_probe_read_user(result, sizeof(result), (void *)call->sret) && total && total <= TLS_CHUNK_MAX)
		for (i = 0; i < 6; i++)
			sealed |= result[i] == total + RUSTLS_SEALED_EXTRA;
	if (!sealed) {
		count_event(EVENT_RUSTLS_UNREAD, -1);
		goto out;
	}
	bpf_map_update_elem(&rustls_pending, &id, &call->self, BPF_ANY);
	rustls_emit(call, call->self, TLS_DIR_WRITE, total, call->w[0] ? 0 : call->w[1]);
out:
	bpf_map_delete_elem(&rustls_calls, &id);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(rustls_decrypt_exit)
{
	__u64 id = bpf_get_current_pid_tgid(), result[6] = {}, plain = 0, *ino, *conn;
	struct rustls_call *call = bpf_map_lookup_elem(&rustls_calls, &id);
	__u8 type = 0;
	int i;

	if (!call)
		return 0;
	if (!bpf_probe_read_user(result, sizeof(result), (void *)call->sret))
		for (i = 0; i < 5; i++)
			if (result[i] == call->w[0] && result[i + 1] + RUSTLS_TAG_LEN <= call->w[1])
				plain = result[i + 1];
	if (!plain || plain > TLS_CHUNK_MAX || bpf_probe_read_user(&type, 1, (void *)(call->w[0] + plain))) {
		count_event(EVENT_RUSTLS_UNREAD, -1);
		goto out;
	}
	if (type != RUSTLS_APPLICATION_DATA)
		goto out; /* a session ticket, key update or alert */
	ino = bpf_map_lookup_elem(&rustls_read_sock, &id);
	conn = ino ? bpf_map_lookup_elem(&rustls_sock_conn, ino) : 0;
	if (!conn) {
		count_event(EVENT_RUSTLS_UNREAD, -1);
		goto out;
	}
	rustls_emit(call, *conn, TLS_DIR_READ, plain, call->w[0]);
out:
	bpf_map_delete_elem(&rustls_calls, &id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
