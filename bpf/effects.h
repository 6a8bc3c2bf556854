/* SPDX-License-Identifier: Apache-2.0 */
/* Effect records: what tracked processes did to files and the network (effects.bpf.c).
 *
 * Mirrored by bpf/effects_events.py; tests/test_bpf_abi.py checks the mirror against the BTF of
 * the compiled object. Every record starts with struct event_header (events.h), whose enum
 * event_kind holds the effect kinds (16..31) too. */
#ifndef VIGIL_EFFECTS_H
#define VIGIL_EFFECTS_H

#include "events.h"

/* A path is built from up to this many bytes; longer paths keep their last EFFECT_PATH_MAX bytes
 * (the leaf side) and are flagged. */
#define EFFECT_PATH_MAX 4096
/* Steps of the dentry walk (one per path component or mount crossed); a deeper path is flagged
 * truncated like a longer one. */
#define EFFECT_PATH_STEPS 512
/* A file record carries up to four strings: (base, name) of the first path and of the second
 * (rename's target). */
#define EFFECT_PATH_PARTS 4

/* hdr.flags of file records */
#define FILE_PATH_TRUNCATED (1u << 0)   /* first path cut at EFFECT_PATH_MAX / EFFECT_PATH_STEPS */
#define FILE_PATH2_TRUNCATED (1u << 1)
#define FILE_CREATED (1u << 2)          /* open: this call created the file (FMODE_CREATED) */
#define FILE_IS_DIR (1u << 3)           /* unlink: a directory was removed (rmdir, AT_REMOVEDIR) */
#define FILE_PATH_STALE (1u << 4)       /* write: the fd no longer held the written file at flush */
#define EFFECT_NOT_AGGREGATED (1u << 5) /* write/net bytes: one record per call (aggregation off) */
#define FILE_PATH_UNREADABLE (1u << 6)  /* the user string could not be read */
#define FILE_OPEN_FOLDED (1u << 7)      /* open: `calls` repeated read-only opens of the file of an earlier
                                         * record of this thread, folded in the kernel (effects_folds.bpf.h);
                                         * no path when the flush had no fd of it (user space has the first's) */

/* Why an aggregated record was written. */
#define FLUSH_CLOSE 0    /* close(), close_range() */
#define FLUSH_EXIT 1     /* the process exited with the fd open */
#define FLUSH_EXEC 2     /* execve() of a process holding a close-on-exec fd */
#define FLUSH_REPLACED 3 /* dup2/dup3 onto the fd, or an open returned the fd without a close seen */
#define FLUSH_CALL 4     /* aggregation off: every call */
#define FLUSH_EVICTED 5  /* folded opens: their slot was taken by another file */
#define FLUSH_COUNT 6    /* folded opens: the count reached FOLD_MAX_COUNT */
#define FLUSH_AGE 7      /* folded opens: the file was opened again over FOLD_MAX_AGE_NS after the first fold */
#define FLUSH_CHANGE 8   /* folded opens: the thread changed a file (a write-side open, unlink, rename, ...) or
                          * its tool call: counts go out before what may depend on them */

/* A file effect. A path is `base` + "/" + `name`: kernel-resolved paths (open, write, fchmod)
 * have an empty base and an absolute name; paths a process named (unlink, rename, mkdir, chmod,
 * a failed open) keep the process's string as `name` and the resolved directory (cwd or dirfd)
 * as `base` when the string is relative. Paths are as the process sees them: relative to its
 * root, so a containerised process reports container paths. `data` holds the four strings back
 * to back, lengths in `len`, no NULs; the record is emitted with only the bytes used. */
struct file_event {
	struct event_header hdr;
	__s64 ret;         /* the syscall's result: an fd, 0, or -errno */
	__u64 bytes;       /* write: bytes written */
	__u64 calls;       /* write: write calls summed in `bytes`; folded open: opens folded */
	__u64 first_ns;    /* write, folded open: boot-clock time of the first summed call */
	__u64 last_ns;     /* folded open: boot-clock time of the last folded open */
	__u64 ino;         /* inode, when the kernel resolved the file */
	__u32 dev;         /* its superblock's device (kernel encoding: major << 20 | minor) */
	__s32 fd;          /* the fd the effect went through, -1 when none */
	__u32 open_flags;  /* open: O_* flags as passed; unlinkat/renameat2: their flags */
	__u32 mode;        /* open with O_CREAT, mkdir, chmod: the mode asked for */
	__u32 reason;      /* write: FLUSH_* */
	__u16 len[EFFECT_PATH_PARTS];
	__u32 _pad;
	char data[EFFECT_PATH_PARTS * EFFECT_PATH_MAX];
};

#define NET_PATH_MAX 108          /* sun_path */
#define NET_UNIX_ABSTRACT (1u << 0) /* the Unix path is in the abstract namespace (leading NUL dropped) */
/* EFFECT_NOT_AGGREGATED (1u << 5) also applies to net_bytes records */

/* A socket effect. Addresses are in network byte order as the kernel holds them (4 bytes used
 * for IPv4); ports in host order. connect reports the address the process asked for as remote
 * and the socket's own as local; bind the address asked for as local (the port the kernel chose
 * when 0 was asked); accept and close what the socket holds. Unix sockets report the path of the
 * socket bound or connected to. */
struct net_event {
	struct event_header hdr;
	__s64 ret;
	__u64 sock_id;       /* the socket's inode (socket:[N] in /proc/PID/fd): the connection across records */
	__u64 bytes_sent;    /* close / bytes: summed in the kernel */
	__u64 bytes_received;
	__u64 sends;         /* calls summed */
	__u64 recvs;
	__s32 fd;
	__u32 reason;        /* close: FLUSH_* */
	__u16 family;        /* AF_INET, AF_INET6, AF_UNIX */
	__u16 sock_type;     /* SOCK_STREAM, SOCK_DGRAM ... */
	__u16 protocol;      /* IPPROTO_* */
	__u16 lport;
	__u16 rport;
	__u16 path_len;
	__u8 laddr[16];
	__u8 raddr[16];
	char path[NET_PATH_MAX];
};

#define DNS_CAPTURE_MAX 512 /* a classic DNS datagram; longer payloads keep their head */

/* A datagram sent to port 53: its payload, parsed in user space. */
struct dns_event {
	struct event_header hdr;
	__s32 fd;
	__u16 family;
	__u16 rport;
	__u8 raddr[16];
	__u32 len;       /* bytes in data */
	__u32 msg_len;   /* size of the datagram */
	char data[DNS_CAPTURE_MAX];
};

/* Read-only configuration, set by the loader between open and load. */
struct effects_config {
	__u32 wakeup_bytes; /* force a consumer wakeup once this much data is waiting */
	__u32 aggregate;    /* 0: one record per write/send/receive call (for comparison) */
	__u32 files;        /* report file effects */
	__u32 net;          /* report socket effects */
	__u32 dns;          /* capture datagrams to port 53 */
	__u32 max_queued_bytes; /* effects are shed (counted as dropped) while this much waits */
	__u32 fold_opens;   /* 0: one record per open (repeated read-only opens are not folded) */
	__u32 chain_sock;   /* the plain-HTTP sensor's programs are called from here (effects_chain) */
};

#endif /* VIGIL_EFFECTS_H */
