/* SPDX-License-Identifier: Apache-2.0 */
/* The effects sensor's maps and per-CPU scratch, the syscall being handled, and the way from an
 * fd to its struct file and socket.
 *
 * Part of effects.bpf.c, included by it only, after the headers before it in that file's order
 * (one object, one set of maps: the split is for reading, the compiled code is unchanged). */
#ifndef VIGIL_EFFECTS_STATE_H
#define VIGIL_EFFECTS_STATE_H

enum fd_kind { FD_OTHER = 0, FD_FILE = 1, FD_SOCKET = 2 };

struct fd_key {
	__u32 tgid;
	__s32 fd;
};

/* What one fd of a tracked process has moved since it was last written out. */
struct fd_state {
	__u64 session_id;
	__u64 file;      /* the struct file seen first: a flush checks the fd still holds it */
	__u64 first_ns;
	__u64 bytes_out;
	__u64 bytes_in;
	__u64 calls_out;
	__u64 calls_in;
	__u32 kind;      /* enum fd_kind; FD_OTHER entries (pipes, ttys) only cache the answer */
	__u16 sock_type;
	__u16 _pad;
	__u32 call_id;   /* the tool call that first used the fd: exit flushes come after lineage */
	__u32 _pad2;     /* has dropped the process from `tracked` */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fd_key);
	__type(value, struct fd_state);
} fd_state SEC(".maps");

/* tgids that have fd_state entries: the close/exec/exit paths look here before anything else.
 * An entry whose close went unseen (io_uring) outlives its process; fd_state_get drops it when
 * the tgid comes back in another session. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} fd_owners SEC(".maps");

/* Repeated read-only opens of one thread, folded (effects_folds.bpf.h): files it opened, each with
 * the opens of it not yet written out. Per thread, not per process, so that one CPU at a time
 * changes a table (threads of a process open at once; a shared table would need a lock, which
 * tracepoint programs cannot take on 6.1). Set-associative: a file's (dev, ino) hash picks one of
 * FOLD_SETS sets of FOLD_WAYS slots, so an open looks at 4 slots, and a thread cycling through a
 * few dozen files still folds (a 16-slot round robin folded nothing past 16 files). A file coming
 * into a full set takes the way least recently opened: a file the thread stopped opening (the
 * interpreter's start-up reads) leaves first, and the files it cycles through keep their ways. */
#define FOLD_WAYS 4
#define FOLD_SETS 16
#define FOLD_SLOTS (FOLD_WAYS * FOLD_SETS)
#define FOLD_MAX_COUNT 65536             /* a fold is written out once it holds this many opens */
#define FOLD_MAX_AGE_NS 1000000000ULL    /* ... or at its next open over a second after its first */

struct fold_slot {
	__u64 ino;       /* 0: free */
	__u64 first_ns;  /* the first folded open (count > 0) */
	__u64 last_ns;   /* the last open of the file: when it took the slot or was last folded */
	__u32 dev;
	__u32 flags;     /* O_* of the emitted open: a different set is another slot */
	__u32 count;     /* opens folded since the slot was taken or last written out */
	__u32 _pad;
};

struct open_folds {
	__u64 session_id;
	__u64 oldest_ns; /* no pending slot's first fold is older (a lower bound, exact after a sweep) */
	__u32 call_id;
	__u32 pending;   /* slots with count > 0 */
	struct fold_slot slot[FOLD_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048); /* ~5 MiB; a thread past them is not folded (every open sent) */
	__type(key, __u32); /* tid */
	__type(value, struct open_folds);
} open_folds SEC(".maps");

/* A new thread's table: one zeroed entry nothing writes (too large to zero on the stack or with an
 * inlined memset), copied in by the map update. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct open_folds);
} open_folds_empty SEC(".maps");

/* The dentry walk's position: one step up per bpf_loop iteration. */
struct walk_state {
	struct dentry *d;
	struct vfsmount *mnt;
	struct dentry *root_d;
	struct vfsmount *root_mnt;
	__u32 pos;  /* the path built so far is walk[pos, EFFECT_PATH_MAX) */
	__u32 done; /* the walk reached the task's root (or the top of a mount tree) */
};

/* The path(s) an unlink, rename, mkdir or chmod named. */
struct named {
	const char *path;
	const char *path2; /* rename's target, else 0 */
	__s32 dfd;
	__s32 dfd2;
	__u32 mode;
	__u32 flags;
};

/* Per-CPU room for a record, a path being built and the larger working values of a syscall.
 * They live here rather than on the BPF stack: 6.1 and 6.12 cap the stack of a whole call chain
 * (a program, its subprograms and bpf_loop callbacks, each frame rounded up to 32 bytes) at 512
 * bytes, so the path walk under an open's handler only fits when each frame keeps a few scalars
 * (6.18 gives tracing programs a private stack and accepted more). `busy` turns a nested use (a
 * program interrupting another on this CPU) into a counted loss instead of a corrupted record. */
struct scratch {
	__u32 busy;
	__u32 _pad;
	struct walk_state w;
	struct named named;
	struct open_how how;
	struct user_msghdr msg;
	struct iovec iov;
	struct fd_state fresh;
	char walk[EFFECT_PATH_MAX + NAME_MAX + 1]; /* built right to left, ending at EFFECT_PATH_MAX */
	union {
		struct file_event file;
		struct net_event net;
		struct dns_event dns;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

static __always_inline struct scratch *scratch_get(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s)
		return 0;
	if (s->busy) {
		count_event(EVENT_EFFECTS_BUSY, -1);
		return 0;
	}
	s->busy = 1;
	return s;
}

/* One syscall being handled: who made it and what it returned (arguments stay in regs). */
struct call {
	struct scratch *s;
	struct task_struct *task;
	const struct tracked_info *info;
	struct pt_regs *regs;
	long nr;
	long ret;
	__u32 tgid;
};

/* ---- from fds to kernel objects ---- */

static __always_inline struct sock *file_sock(struct file *f)
{
	struct socket *sock = BPF_CORE_READ(f, private_data);

	return BPF_CORE_READ(sock, sk);
}

#endif /* VIGIL_EFFECTS_STATE_H */
