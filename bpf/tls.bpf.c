// SPDX-License-Identifier: Apache-2.0
/* TLS plaintext of tracked processes, read at the TLS library's boundary (uprobes).
 *
 * The same four programs serve OpenSSL (SSL_write/SSL_read and their _ex forms) and GnuTLS
 * (gnutls_record_send/recv); the attach cookie says which library and direction. The buffer is
 * remembered at entry, keyed by thread, and read at return, when it holds what was really moved
 * (for reads it is only filled then). Untracked processes cost one hash lookup and emit nothing. */
#include "payload.bpf.h"

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

char LICENSE[] SEC("license") = "GPL";
