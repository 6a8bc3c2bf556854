/* SPDX-License-Identifier: Apache-2.0 */
/* Which connection a rustls record belongs to (tls.bpf.c reads the records; sockdata.bpf.c sees
 * the socket syscalls; both objects declare these maps and sockdata reuses tls's).
 *
 * rustls's record functions see a per-direction cipher object, never the socket. tokio-rustls
 * runs them in the same poll as the socket I/O, on the same thread: an encrypt is followed by
 * the write of its socket, a decrypt follows the read of its socket. So the connection is named
 * by its encrypter (the object behind `Box<dyn MessageEncrypter>`, alive as long as the
 * connection's keys): the write after an application-data encrypt ties the socket to that
 * encrypter, and a decrypt looks up the encrypter of the socket its thread read last. The client
 * writes first (a request before its response), so a response always finds its request's
 * connection; a record that finds none is counted (EVENT_RUSTLS_UNREAD), not guessed. */
#ifndef VIGIL_RUSTLS_LINK_BPF_H
#define VIGIL_RUSTLS_LINK_BPF_H

/* thread (pid_tgid) -> inode of the TCP socket it read last */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} rustls_read_sock SEC(".maps");

/* thread -> encrypter whose record it has just sealed and not yet written */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} rustls_pending SEC(".maps");

/* socket inode -> the encrypter of the rustls connection over it */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} rustls_sock_conn SEC(".maps");

/* A tracked thread enters a read or write of the TCP socket `ino`. */
static __always_inline void rustls_note_socket(__u64 id, __u64 ino, __u32 direction)
{
	__u64 *enc;

	if (direction == TLS_DIR_READ) {
		bpf_map_update_elem(&rustls_read_sock, &id, &ino, BPF_ANY);
		return;
	}
	enc = bpf_map_lookup_elem(&rustls_pending, &id);
	if (!enc)
		return;
	bpf_map_update_elem(&rustls_sock_conn, &ino, enc, BPF_ANY);
	bpf_map_delete_elem(&rustls_pending, &id);
}

/* The socket `ino` is closed: its rustls connection, if any, ends (EVENT_TLS_CLOSE). */
static __always_inline void rustls_socket_closed(__u64 ino, const struct tracked_info *info, __u32 wakeup_bytes)
{
	struct tls_close_event ev = {};
	__u64 *enc = bpf_map_lookup_elem(&rustls_sock_conn, &ino);

	if (!enc)
		return;
	fill_header(&ev.hdr, EVENT_TLS_CLOSE, (struct task_struct *)bpf_get_current_task_btf(), info);
	ev.conn_id = *enc;
	ev.lib = TLS_LIB_RUSTLS;
	emit(EVENT_TLS_CLOSE, &ev, sizeof(ev), wakeup_bytes);
	bpf_map_delete_elem(&rustls_sock_conn, &ino);
}

#endif /* VIGIL_RUSTLS_LINK_BPF_H */
