/* SPDX-License-Identifier: Apache-2.0 */
/* Event records shared by every BPF program and by the Python mirror (bpf/events.py).
 *
 * Every record starts with struct event_header so user space can dispatch on `kind` before it knows
 * the rest. Layout changes must be mirrored in events.py; tests/test_bpf_abi.py checks the mirror
 * against the BTF that clang writes into the compiled objects. */
#ifndef VIGIL_EVENTS_H
#define VIGIL_EVENTS_H

#define TASK_COMM_LEN 16
/* Longest executable path we copy; longer paths are cut and flagged EXEC_FILENAME_TRUNCATED. */
#define FILENAME_MAX_LEN 4096
/* Longest argv area (NUL-separated strings) we copy per exec; longer argv is cut and flagged
 * EXEC_ARGS_TRUNCATED. 64 KiB is twice the 32 KiB the product promises and fits one ring record. */
#define ARGS_MAX_LEN 65536

/* The one table of event kinds, mirrored by bpf/events.py's Kind (names: lower case without
 * EVENT_). event_header.kind has this type so the table is in the BTF of every object that emits
 * records: tests/test_bpf_abi.py checks the mirror against it. */
enum event_kind {
	EVENT_FORK = 1,
	EVENT_EXEC = 2,
	EVENT_EXIT = 3,
	EVENT_TLS_DATA = 4,
	EVENT_TLS_CLOSE = 5,
	EVENT_TLS_BUSY = 6,  /* stats only: a TLS call seen while this CPU's scratch was in use */
	/* 7..15: per-tool-call control (memory spikes, OOM kills, placement) */
	EVENT_MEM_SPIKE = 7, /* a tool call's resident memory grew past the configured step in the window */
	EVENT_OOM_KILL = 8,  /* the OOM killer chose a tracked process */
	/* 16..31: effects (files, network; records in effects.h) */
	EVENT_FILE_OPEN = 16,
	EVENT_FILE_WRITE = 17,   /* bytes written to one open regular file, summed in the kernel */
	EVENT_FILE_UNLINK = 18,  /* unlink, unlinkat, rmdir */
	EVENT_FILE_RENAME = 19,
	EVENT_FILE_MKDIR = 20,
	EVENT_FILE_CHMOD = 21,
	EVENT_NET_CONNECT = 22,
	EVENT_NET_ACCEPT = 23,
	EVENT_NET_BIND = 24,
	EVENT_NET_CLOSE = 25,    /* a socket's bytes sent/received, summed in the kernel */
	EVENT_NET_BYTES = 26,    /* one send/receive call: only with aggregation off */
	EVENT_DNS_QUERY = 27,    /* the payload of a datagram sent to port 53 */
	EVENT_EFFECTS_FD_FULL = 28, /* stats only: an fd's bytes could not be summed, fd_state full */
	EVENT_EFFECTS_BUSY = 29, /* stats only: this CPU's scratch was in use (nested program) */
	/* 32..35: plain socket payload (sockdata.bpf.c): same record layouts as TLS data and close; 36..39: more TLS */
	EVENT_SOCK_DATA = 32,
	EVENT_SOCK_CLOSE = 33,
	EVENT_SOCK_BUSY = 34,   /* stats only: a socket call seen while this CPU's scratch was in use */
	EVENT_SOCK_CAPPED = 35, /* stats only: a call not sent because its connection reached its cap */
	EVENT_RUSTLS_UNREAD = 36, /* stats only: a rustls record seen but not read (layout or connection unknown) */
	EVENT_TLS_MAPPED = 37, /* a tracked process mapped a TLS library it has no uprobe link on yet (held) */
	EVENT_KIND_MAX = 40, /* size of the per-kind stats array */
};

/* Session ids are unique across runs: user space gives the roots it adds the current time in
 * microseconds; the kernel gives roots it finds by comm match this bit | (session_base + a
 * counter), session_base being the time in microseconds when the program was loaded. Bit 52
 * keeps them apart (the time in microseconds stays below 2^52 until 2112) and every id below
 * 2^53, so JSON tools that read numbers as doubles (jq, JavaScript) keep them exact. */
#define KERNEL_SESSION_BIT (1ULL << 52)

struct event_header {
	enum event_kind kind; /* 4 bytes, unsigned: every value is below 2^31 */
	__u32 flags;       /* kind-specific flags */
	__u64 ts_ns;       /* bpf_ktime_get_boot_ns(): CLOCK_BOOTTIME */
	__u64 session_id;  /* the tracked root this process descends from */
	__u64 cgroup_id;   /* cgroup v2 id of the task */
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 ppid;        /* tgid of the real parent */
	__u32 uid;
	char comm[TASK_COMM_LEN];
	__u32 call_id;     /* the tool call the process belongs to (vigil run); 0: none */
	__u32 _reserved;
};

/* A tracked process created a new process (threads are not reported). The header describes the
 * child; ppid is the tracked parent. */
struct fork_event {
	struct event_header hdr;
};

#define EXEC_ARGS_TRUNCATED (1u << 0)
#define EXEC_FILENAME_TRUNCATED (1u << 1)
#define EXEC_ARGS_UNREADABLE (1u << 2)
#define EXEC_NEW_ROOT (1u << 3) /* the exec made this process a tracked root (comm match) */
#define EXEC_CALL_START (1u << 4) /* first exec of a child of a controlled root: a tool call starts */
#define EXEC_HELD (1u << 5)       /* ... and it was stopped (SIGSTOP) before its first instruction */
#define EXEC_EXE_HELD (1u << 6)   /* stopped until user space has hooked the TLS of a new executable */

/* A tracked process replaced its program. `data` holds the filename (filename_len bytes, NUL
 * included) followed by the argv area (args_len bytes of NUL-separated strings). The record is
 * emitted with exactly the bytes used, so small execs cost little ring space. */
struct exec_event {
	struct event_header hdr;
	__u32 old_pid;      /* the thread id that called execve (differs when a thread execs) */
	__u32 filename_len;
	__u32 args_len;
	__u32 args_total;   /* full size of the argv area, even when cut */
	char data[FILENAME_MAX_LEN + ARGS_MAX_LEN];
};

/* The last thread of a tracked process exited. exit_code is the raw wait status byte pair:
 * (code << 8) for a normal exit, the signal number (| 0x80 on core dump) when killed. */
struct exit_event {
	struct event_header hdr;
	__u32 exit_code;
	__u32 _pad;
};

/* Per-kind counters, a per-CPU array indexed by enum event_kind: what was emitted and what was
 * lost because the ring buffer was full. User space sums the CPUs. */
struct kind_stats {
	__u64 emitted;
	__u64 dropped;
};

/* tracked_info.flags */
#define TRACK_CONTROLLED (1u << 0) /* a root whose children's execs start tool calls (vigil run) */
#define TRACK_CALL_CANDIDATE (1u << 1) /* a child of a controlled or observed root that has not exec'd yet */
#define TRACK_OBSERVED (1u << 2) /* a root whose children's execs start tool calls, never held (vigil trace) */
#define TRACK_CALL_UNHELD (1u << 3) /* a candidate of an observed root: its call starts without a stop */

/* Value of the tracked-process map, keyed by tgid. */
struct tracked_info {
	__u64 session_id;
	__u32 root_pid;
	__u32 depth;   /* 0 for the root, parent's depth + 1 for children */
	__u32 flags;   /* TRACK_* */
	__u32 call_id; /* the tool call this process belongs to (tgid of its first process); 0: none */
};

/* Plaintext is cut into chunks of at most this many bytes, one ring record each. */
#define TLS_CHUNK_MAX 16384

#define TLS_DIR_WRITE 0 /* the process sent this (client -> server for an agent) */
#define TLS_DIR_READ 1

#define TLS_LIB_OPENSSL 1
#define TLS_LIB_GNUTLS 2
#define TLS_LIB_RUSTLS 5 /* 3 and 4 are sockdata.bpf.c's plain socket and pipe */

/* Attach cookie of every TLS uprobe: which library and which direction. */
#define TLS_COOKIE(lib, dir) (((__u64)(lib) << 8) | (dir))

#define TLS_CALL_CAPPED (1u << 0) /* the call moved more than max_call_bytes: the rest is not sent */

/* One piece of the plaintext one SSL_read/SSL_write (or GnuTLS) call moved. A call of N bytes
 * becomes ceil(N / TLS_CHUNK_MAX) records with increasing `offset`; user space finds a gap when
 * offsets skip (ring full) or stop short of call_len (cap reached: TLS_CALL_CAPPED). */
struct tls_data_event {
	struct event_header hdr;
	__u64 conn_id;   /* the SSL* (or gnutls_session_t): the connection, whatever thread uses it */
	__u64 call_id;   /* per-CPU sequence | cpu << 56: groups the chunks of one call */
	__u32 direction; /* TLS_DIR_* */
	__u32 lib;       /* TLS_LIB_* */
	__u32 call_len;  /* bytes the call moved in all */
	__u32 offset;    /* where this chunk starts within the call */
	__u32 len;       /* bytes in data */
	__u32 peer_ino;  /* pipe payload (sockdata.bpf.c): the inode of the writer's stdin; else 0 */
	char data[TLS_CHUNK_MAX];
};

/* The connection object was freed (SSL_free / gnutls_deinit). */
struct tls_close_event {
	struct event_header hdr;
	__u64 conn_id;
	__u32 lib;
	__u32 _pad;
};

struct tls_config {
	__u32 wakeup_bytes;
	__u32 max_call_bytes; /* cap per SSL call; 0 means no cap */
};

/* A tool call's resident memory (the sum over its processes) grew by more than spike_bytes
 * within spike_window_ns. The header describes the process whose growth crossed the line. */
struct mem_spike_event {
	struct event_header hdr;
	__u32 call_id;
	__u32 _pad;
	__u64 growth_bytes; /* call RSS now minus its lowest point within the window */
	__u64 call_rss_bytes;
	__u64 rss_bytes;    /* this process's RSS */
	__u64 window_ns;
};

/* The OOM killer marked a tracked process as its victim (oom:mark_victim). The header describes
 * the victim, not the task that ran out of memory. */
struct oom_kill_event {
	struct event_header hdr;
	__u32 call_id;
	__u32 _pad;
	__u64 rss_bytes;      /* the victim's resident memory when it was chosen */
	__u64 total_vm_bytes;
};

struct control_config {
	__u64 spike_bytes;     /* 0 disables spike detection */
	__u64 spike_window_ns;
	__u32 wakeup_bytes;
	__u32 page_shift;
};

/* Read-only configuration, set by the loader between open and load. */
struct lineage_config {
	__u64 session_base;   /* first kernel-minted session id, without KERNEL_SESSION_BIT */
	__u32 wakeup_bytes;   /* force a consumer wakeup once this much data is waiting */
	__u32 match_comm;     /* non-zero: roots may be added by comm match at exec */
	__u32 hold_new_exe;   /* non-zero: hold a tracked exec of an executable not in exe_seen */
	__u32 _pad;
};

/* An executable file, as the kernel names it: (superblock dev, inode). */
struct exe_key {
	__u64 ino;
	__u32 dev;
	__u32 _pad;
};

/* Per-process TLS uprobes (uprobe_multi links with a pid filter): the first mmap of a hooked TLS
 * library by a tracked process that has no link on it stops the process until user space has
 * attached one (EVENT_TLS_MAPPED; the same `held` map and watchdog as held execs). */
struct tls_link_key {
	__u32 tgid;
	__u32 _pad;
	struct exe_key file;
};

struct tls_mapped_event {
	struct event_header hdr;
	struct exe_key file;
	__u32 held;
	__u32 _pad;
};

#endif /* VIGIL_EVENTS_H */
