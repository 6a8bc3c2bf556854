// SPDX-License-Identifier: Apache-2.0
/* File and network effects of tracked processes, from the raw syscall tracepoints.
 *
 * Why raw sys_enter/sys_exit and not syscalls:sys_exit_*: the per-syscall events need tracefs to
 * attach (libbpf reads their ids there) and these hosts do not mount it; tp_btf needs only BTF.
 * The price is that every syscall of every process enters the program: the syscall number is
 * compared first (a few instructions), then the tracked map, so untracked processes and
 * uninteresting syscalls cost no map access and emit nothing.
 *
 * Paths come from the kernel's own objects where the syscall produced one (the new fd of an
 * open, the fd of a write): a dentry walk up to the task's root. Paths a process named (unlink,
 * rename, mkdir, chmod) are sent as its string plus the resolved cwd or dirfd directory;
 * user space joins and normalises them.
 *
 * Writes and socket traffic are summed per (tgid, fd) in fd_state and written out once, when
 * the fd is closed, replaced, closed at exec or left open at exit. Syscall numbers are x86-64's;
 * the loader refuses other architectures. */
#include "common.bpf.h"
#include "core_fixes.bpf.h"
#include "effects.h"
#include <bpf/bpf_endian.h>

const volatile struct effects_config cfg = {
	.wakeup_bytes = 256 * 1024,
	.aggregate = 1,
	.files = 1,
	.net = 1,
	.dns = 1,
	.max_queued_bytes = 1024 * 1024,
};

/* Effects share the ring buffer with lifecycle events (fork, exec, exit, TLS, OOM): a flood of
 * opens must never take the room an exit or a session's end needs, nor queue more than user space
 * decodes in a few seconds. So an effect is shed in the kernel, counted as dropped for its kind
 * (user space reports it as a `lost` event), while max_queued_bytes are already waiting; the rest
 * of the ring stays for lifecycle events. */
static __always_inline void emit_effect(__u32 kind, void *data, __u64 size)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size > cfg.max_queued_bytes) {
		count_event(kind, 1);
		return;
	}
	emit(kind, data, size, cfg.wakeup_bytes);
}

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define S_IFMT 0170000
#define S_IFREG 0100000
#define S_IFSOCK 0140000
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
#define FMODE_CREATED (1u << 20)
#define NAME_MAX 255
#define DNS_PORT 53
#define DNS_MMSG_MAX 4 /* datagrams of one sendmmsg looked at for DNS (glibc sends 2) */
#define MMSG_MAX 1024  /* UIO_MAXIOV: most messages one sendmmsg/recvmmsg moves */

/* x86-64 syscall numbers */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_dup2 33
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_bind 49
#define NR_execve 59
#define NR_rename 82
#define NR_mkdir 83
#define NR_rmdir 84
#define NR_creat 85
#define NR_unlink 87
#define NR_chmod 90
#define NR_fchmod 91
#define NR_openat 257
#define NR_mkdirat 258
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_fchmodat 268
#define NR_splice 275
#define NR_accept4 288
#define NR_dup3 292
#define NR_pwritev 296
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_renameat2 316
#define NR_execveat 322
#define NR_copy_file_range 326
#define NR_pwritev2 328
#define NR_close_range 436
#define NR_openat2 437
#define NR_fchmodat2 452

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

static __always_inline struct file *fd_file(struct task_struct *task, __s32 fd)
{
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt;
	struct file **arr;
	struct file *f = 0;

	if (!files || fd < 0)
		return 0;
	fdt = BPF_CORE_READ(files, fdt);
	if ((__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	arr = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), arr + fd);
	return f;
}

static __always_inline struct sock *file_sock(struct file *f)
{
	struct socket *sock = BPF_CORE_READ(f, private_data);

	return BPF_CORE_READ(sock, sk);
}

/* ---- paths ---- */

/* One step up: prepend a component, or cross from a mount's root to where it is mounted. The
 * loop's context is a pointer to the scratch (bpf_loop wants a stack pointer; the state is in
 * the map). */
static long walk_step(__u32 i, struct scratch **sp)
{
	struct scratch *s = *sp;
	struct walk_state *w = &s->w;
	struct dentry *d = w->d, *parent, *mnt_root;
	struct vfsmount *mnt = w->mnt;
	struct mount *m, *mp;
	const unsigned char *name;
	__u32 len, pos;

	if (d == w->root_d && mnt == w->root_mnt) {
		w->done = 1;
		return 1;
	}
	parent = BPF_CORE_READ(d, d_parent);
	mnt_root = BPF_CORE_READ(mnt, mnt_root);
	if (d == mnt_root) {
		m = (void *)mnt - bpf_core_field_offset(struct mount, mnt);
		mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m) { /* top of the mount tree without meeting the root: outside it */
			w->done = 1;
			return 1;
		}
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->mnt = (void *)mp + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	if (d == parent) { /* a disconnected dentry (pipe, anonymous inode) */
		w->done = 1;
		return 1;
	}
	len = BPF_CORE_READ(d, d_name.len);
	if (len > NAME_MAX)
		len = NAME_MAX;
	if (len + 1 > w->pos)
		return 1; /* no room: truncated */
	pos = w->pos - len - 1;
	if (pos >= EFFECT_PATH_MAX)
		return 1;
	name = BPF_CORE_READ(d, d_name.name);
	bpf_probe_read_kernel(s->walk + pos + 1, len, name);
	s->walk[pos] = '/';
	w->pos = pos;
	w->d = parent;
	return 0;
}

/* Write the path of (s->w.d, s->w.mnt), relative to the task's root, at data[off]; returns its
 * length and sets *truncated when it did not fit. */
static __u32 put_path(struct scratch *s, struct task_struct *task, __u32 off, __u32 *truncated)
{
	struct scratch *sp = s;
	__u32 pos, len;

	if (!s->w.d || !s->w.mnt)
		return 0;
	s->w.root_d = BPF_CORE_READ(task, fs, root.dentry);
	s->w.root_mnt = BPF_CORE_READ(task, fs, root.mnt);
	s->w.pos = EFFECT_PATH_MAX;
	s->w.done = 0;
	bpf_loop(EFFECT_PATH_STEPS, walk_step, &sp, 0);
	if (!s->w.done)
		*truncated = 1;
	pos = s->w.pos;
	if (pos >= EFFECT_PATH_MAX) { /* the root itself */
		s->walk[EFFECT_PATH_MAX - 1] = '/';
		pos = EFFECT_PATH_MAX - 1;
	}
	len = EFFECT_PATH_MAX - pos;
	if (off > (EFFECT_PATH_PARTS - 1) * EFFECT_PATH_MAX || len > EFFECT_PATH_MAX)
		return 0;
	bpf_probe_read_kernel(s->file.data + off, len, s->walk + pos);
	return len;
}

static __always_inline __u32 put_file_path(struct scratch *s, struct task_struct *task, struct file *f, __u32 off,
					   __u32 *truncated)
{
	s->w.d = BPF_CORE_READ(f, f_path.dentry);
	s->w.mnt = BPF_CORE_READ(f, f_path.mnt);
	return put_path(s, task, off, truncated);
}

/* The directory a relative name is resolved from: the cwd, or the file dirfd refers to. */
static __u32 put_dir(struct scratch *s, struct task_struct *task, __s32 dfd, __u32 off, __u32 *truncated)
{
	struct file *f;

	if (dfd == AT_FDCWD) {
		s->w.d = BPF_CORE_READ(task, fs, pwd.dentry);
		s->w.mnt = BPF_CORE_READ(task, fs, pwd.mnt);
		return put_path(s, task, off, truncated);
	}
	f = fd_file(task, dfd);
	if (!f)
		return 0;
	return put_file_path(s, task, f, off, truncated);
}

static __u32 put_user_str(struct scratch *s, const char *src, __u32 off)
{
	long n;

	if (off > (EFFECT_PATH_PARTS - 1) * EFFECT_PATH_MAX)
		return 0;
	n = bpf_probe_read_user_str(s->file.data + off, EFFECT_PATH_MAX, src);
	if (n <= 0) {
		s->file.hdr.flags |= FILE_PATH_UNREADABLE;
		return 0;
	}
	return (n - 1) & (EFFECT_PATH_MAX - 1); /* without the NUL; n <= EFFECT_PATH_MAX */
}

/* A path the process named: (resolved directory, its string) as parts `part` and `part + 1`. */
static __u32 put_named(struct call *c, __s32 dfd, const char *upath, __u32 off, int part)
{
	struct scratch *s = c->s;
	__u32 truncated = 0, base = 0, name;
	char first = 0;

	bpf_probe_read_user(&first, 1, upath);
	if (first != '/')
		base = put_dir(s, c->task, dfd, off, &truncated);
	if (truncated)
		s->file.hdr.flags |= part ? FILE_PATH2_TRUNCATED : FILE_PATH_TRUNCATED;
	if (base > EFFECT_PATH_MAX)
		base = EFFECT_PATH_MAX;
	name = put_user_str(s, upath, off + base);
	if (name > EFFECT_PATH_MAX)
		name = EFFECT_PATH_MAX;
	s->file.len[part & 2] = base;
	s->file.len[(part & 2) + 1] = name;
	return base + name;
}

static __always_inline void file_header(struct scratch *s, __u32 kind, struct task_struct *task,
					const struct tracked_info *info)
{
	fill_header(&s->file.hdr, kind, task, info);
	s->file.ret = 0;
	s->file.bytes = 0;
	s->file.calls = 0;
	s->file.first_ns = 0;
	s->file.ino = 0;
	s->file.dev = 0;
	s->file.fd = -1;
	s->file.open_flags = 0;
	s->file.mode = 0;
	s->file.reason = 0;
	s->file.len[0] = s->file.len[1] = s->file.len[2] = s->file.len[3] = 0;
}

static __always_inline void file_emit(struct scratch *s, __u32 kind, __u32 used)
{
	if (used > sizeof(s->file.data))
		used = sizeof(s->file.data);
	emit_effect(kind, &s->file, offsetof(struct file_event, data) + used);
}

static __always_inline void file_identity(struct scratch *s, struct file *f)
{
	s->file.ino = BPF_CORE_READ(f, f_inode, i_ino);
	s->file.dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
}

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

/* ---- file effects ---- */

/* The fd a new open returned still has sums: a close went unseen (io_uring, for one). */
static __always_inline void drop_stale(struct call *c, __s32 fd)
{
	struct fd_key key = { .tgid = c->tgid, .fd = fd };

	if (bpf_map_lookup_elem(&fd_state, &key))
		flush_fd(c->s, c->task, c->tgid, fd, FLUSH_REPLACED);
}

static void on_open(struct call *c, __s32 dfd, const char *upath, __u32 flags, __u32 mode)
{
	struct scratch *s = c->s;
	__u32 truncated = 0, len;
	struct file *f = 0;

	if (c->ret >= 0) {
		drop_stale(c, c->ret);
		f = fd_file(c->task, c->ret);
	}
	file_header(s, EVENT_FILE_OPEN, c->task, c->info);
	s->file.ret = c->ret;
	s->file.open_flags = flags;
	s->file.mode = flags & O_CREAT ? mode : 0;
	if (f) { /* the kernel's own resolution of what was opened */
		s->file.fd = c->ret;
		file_identity(s, f);
		if (BPF_CORE_READ(f, f_mode) & FMODE_CREATED)
			s->file.hdr.flags |= FILE_CREATED;
		len = put_file_path(s, c->task, f, 0, &truncated);
		if (truncated)
			s->file.hdr.flags |= FILE_PATH_TRUNCATED;
		s->file.len[1] = len;
	} else { /* failed: what the process asked for */
		len = put_named(c, dfd, upath, 0, 0);
	}
	file_emit(s, EVENT_FILE_OPEN, len);
}

static void on_named(struct call *c, __u32 kind, const struct named *n)
{
	struct scratch *s = c->s;
	__u32 used;

	file_header(s, kind, c->task, c->info);
	s->file.ret = c->ret;
	s->file.mode = n->mode;
	s->file.open_flags = n->flags;
	if (kind == EVENT_FILE_UNLINK && (n->flags & AT_REMOVEDIR))
		s->file.hdr.flags |= FILE_IS_DIR;
	used = put_named(c, n->dfd, n->path, 0, 0);
	if (n->path2) {
		if (used > 2 * EFFECT_PATH_MAX)
			used = 2 * EFFECT_PATH_MAX;
		used += put_named(c, n->dfd2, n->path2, used, 2);
	}
	file_emit(s, kind, used);
}

static void on_fchmod(struct call *c, __s32 fd, __u32 mode)
{
	struct scratch *s = c->s;
	__u32 truncated = 0, len = 0;
	struct file *f = fd_file(c->task, fd);

	file_header(s, EVENT_FILE_CHMOD, c->task, c->info);
	s->file.ret = c->ret;
	s->file.mode = mode;
	s->file.fd = fd;
	if (f) {
		file_identity(s, f);
		len = put_file_path(s, c->task, f, 0, &truncated);
	}
	if (truncated)
		s->file.hdr.flags |= FILE_PATH_TRUNCATED;
	s->file.len[1] = len;
	file_emit(s, EVENT_FILE_CHMOD, len);
}

static void file_syscall(struct call *c)
{
	struct pt_regs *regs = c->regs;
	long a0 = PT_REGS_PARM1_CORE_SYSCALL(regs), a1 = PT_REGS_PARM2_CORE_SYSCALL(regs);
	long a2 = PT_REGS_PARM3_CORE_SYSCALL(regs), a3 = PT_REGS_PARM4_CORE_SYSCALL(regs);
	struct named *n = &c->s->named;
	struct open_how *how = &c->s->how;

	__builtin_memset(n, 0, sizeof(*n));
	n->dfd = AT_FDCWD;
	n->dfd2 = AT_FDCWD;
	switch (c->nr) {
	case NR_open:
		return on_open(c, AT_FDCWD, (void *)a0, a1, a2);
	case NR_creat:
		return on_open(c, AT_FDCWD, (void *)a0, O_CREAT | O_WRONLY | O_TRUNC, a1);
	case NR_openat:
		return on_open(c, a0, (void *)a1, a2, a3);
	case NR_openat2:
		bpf_probe_read_user(how, sizeof(*how), (void *)a2); /* zeroed when unreadable */
		return on_open(c, a0, (void *)a1, how->flags, how->mode);
	case NR_fchmod:
		return on_fchmod(c, a0, a1);
	case NR_unlink:
	case NR_rmdir:
	case NR_mkdir:
	case NR_chmod:
		n->path = (void *)a0;
		n->mode = c->nr == NR_mkdir || c->nr == NR_chmod ? a1 : 0;
		n->flags = c->nr == NR_rmdir ? AT_REMOVEDIR : 0;
		break;
	case NR_unlinkat:
	case NR_mkdirat:
	case NR_fchmodat:
	case NR_fchmodat2:
		n->dfd = a0;
		n->path = (void *)a1;
		n->mode = c->nr == NR_unlinkat ? 0 : a2;
		n->flags = c->nr == NR_unlinkat ? a2 : c->nr == NR_fchmodat2 ? a3 : 0;
		break;
	case NR_rename:
		n->path = (void *)a0;
		n->path2 = (void *)a1;
		break;
	case NR_renameat:
	case NR_renameat2:
		n->dfd = a0;
		n->path = (void *)a1;
		n->dfd2 = a2;
		n->path2 = (void *)a3;
		n->flags = c->nr == NR_renameat2 ? PT_REGS_PARM5_CORE_SYSCALL(regs) : 0;
		break;
	default:
		return;
	}
	switch (c->nr) {
	case NR_unlink: case NR_rmdir: case NR_unlinkat:
		return on_named(c, EVENT_FILE_UNLINK, n);
	case NR_mkdir: case NR_mkdirat:
		return on_named(c, EVENT_FILE_MKDIR, n);
	case NR_chmod: case NR_fchmodat: case NR_fchmodat2:
		return on_named(c, EVENT_FILE_CHMOD, n);
	default:
		return on_named(c, EVENT_FILE_RENAME, n);
	}
}

/* ---- network effects ---- */

static void on_sockaddr(struct call *c, __u32 kind, __s32 fd, const void *uaddr, __u32 alen)
{
	struct file *f = fd_file(c->task, fd);
	struct net_event *ev = &c->s->net;
	struct sock *sk;

	if (!f)
		return;
	sk = file_sock(f);
	fill_header(&ev->hdr, kind, c->task, c->info);
	net_clear(ev);
	ev->ret = c->ret;
	ev->fd = fd;
	ev->sock_id = BPF_CORE_READ(f, f_inode, i_ino);
	ev->sock_type = BPF_CORE_READ(sk, sk_type);
	ev->protocol = BPF_CORE_READ(sk, sk_protocol);
	sockaddr_fill(ev, uaddr, alen, kind == EVENT_NET_CONNECT);
	if (ev->family == AF_INET || ev->family == AF_INET6) {
		if (kind == EVENT_NET_CONNECT) {
			ev->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
			sock_local(ev->laddr, sk, ev->family);
		} else if (c->ret == 0 && ev->lport == 0) {
			ev->lport = BPF_CORE_READ(sk, __sk_common.skc_num); /* the port the kernel picked */
		}
	}
	emit_effect(kind, ev, sizeof(*ev));
	if (c->ret == 0 || c->ret == -115 /* EINPROGRESS */)
		fd_state_get(c, fd);
}

static void on_accept(struct call *c)
{
	struct file *f;

	if (c->ret < 0)
		return;
	drop_stale(c, c->ret);
	f = fd_file(c->task, c->ret);
	if (!f)
		return;
	fill_header(&c->s->net.hdr, EVENT_NET_ACCEPT, c->task, c->info);
	net_clear(&c->s->net);
	c->s->net.fd = c->ret;
	sock_fill(&c->s->net, f);
	emit_effect(EVENT_NET_ACCEPT, &c->s->net, sizeof(c->s->net));
	fd_state_get(c, c->ret);
}

static void net_syscall(struct call *c)
{
	struct pt_regs *regs = c->regs;

	switch (c->nr) {
	case NR_connect:
	case NR_bind:
		on_sockaddr(c, c->nr == NR_connect ? EVENT_NET_CONNECT : EVENT_NET_BIND, PT_REGS_PARM1_CORE_SYSCALL(regs),
			    (void *)PT_REGS_PARM2_CORE_SYSCALL(regs), PT_REGS_PARM3_CORE_SYSCALL(regs));
		break;
	case NR_accept:
	case NR_accept4:
		on_accept(c);
		break;
	}
}

/* ---- dispatch ---- */

static __always_inline int interesting_exit(long nr)
{
	switch (nr) {
	case NR_read: case NR_write: case NR_open: case NR_pwrite64: case NR_readv: case NR_writev:
	case NR_sendfile: case NR_connect: case NR_accept: case NR_sendto: case NR_recvfrom: case NR_sendmsg:
	case NR_recvmsg: case NR_bind: case NR_rename: case NR_mkdir: case NR_rmdir: case NR_creat:
	case NR_unlink: case NR_chmod: case NR_fchmod: case NR_openat: case NR_mkdirat: case NR_unlinkat:
	case NR_renameat: case NR_fchmodat: case NR_splice: case NR_accept4: case NR_pwritev: case NR_recvmmsg:
	case NR_sendmmsg: case NR_renameat2: case NR_copy_file_range: case NR_pwritev2: case NR_openat2:
	case NR_fchmodat2:
		return 1;
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(effects_exit, struct pt_regs *regs, long ret)
{
	long nr = BPF_CORE_READ(regs, orig_ax);
	struct call c = { .regs = regs, .nr = nr, .ret = ret };

	if (!interesting_exit(nr))
		return 0;
	c.tgid = bpf_get_current_pid_tgid() >> 32;
	c.info = bpf_map_lookup_elem(&tracked, &c.tgid);
	if (!c.info)
		return 0;
	c.s = scratch_get();
	if (!c.s)
		return 0;
	c.task = bpf_get_current_task_btf();
	switch (nr) {
	case NR_write: case NR_pwrite64: case NR_writev: case NR_pwritev: case NR_pwritev2: case NR_sendto:
	case NR_sendmsg: case NR_sendmmsg: case NR_sendfile:
		on_transfer(&c, PT_REGS_PARM1_CORE_SYSCALL(regs), 1);
		break;
	case NR_copy_file_range: case NR_splice: /* (fd_in, off_in, fd_out, ...) */
		on_transfer(&c, PT_REGS_PARM3_CORE_SYSCALL(regs), 1);
		break;
	case NR_read: case NR_readv: case NR_recvfrom: case NR_recvmsg: case NR_recvmmsg:
		on_transfer(&c, PT_REGS_PARM1_CORE_SYSCALL(regs), 0);
		break;
	default:
		if (cfg.files)
			file_syscall(&c);
		if (cfg.net)
			net_syscall(&c);
	}
	c.s->busy = 0;
	return 0;
}

/* Sums are written out before the fd goes away, while it still names the file. */
SEC("tp_btf/sys_enter")
int BPF_PROG(effects_enter, struct pt_regs *regs, long nr)
{
	__u32 tgid;
	struct task_struct *task;
	struct scratch *s;
	long a0, a1, a2;

	if (nr != NR_close && nr != NR_close_range && nr != NR_dup2 && nr != NR_dup3 && nr != NR_execve &&
	    nr != NR_execveat)
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&fd_owners, &tgid))
		return 0;
	s = scratch_get();
	if (!s)
		return 0;
	task = bpf_get_current_task_btf();
	a0 = PT_REGS_PARM1_CORE_SYSCALL(regs);
	a1 = PT_REGS_PARM2_CORE_SYSCALL(regs);
	a2 = PT_REGS_PARM3_CORE_SYSCALL(regs);
	if (nr == NR_close)
		flush_fd(s, task, tgid, a0, FLUSH_CLOSE);
	else if (nr == NR_dup2 || nr == NR_dup3) {
		if (a0 != a1)
			flush_fd(s, task, tgid, a1, FLUSH_REPLACED);
	} else if (nr == NR_close_range) {
		if (!(a2 & CLOSE_RANGE_CLOEXEC))
			flush_range(s, task, tgid, a0, a1, FLUSH_CLOSE, 0);
	} else {
		flush_range(s, task, tgid, 0, ~0u, FLUSH_EXEC, 1);
	}
	s->busy = 0;
	return 0;
}

/* fds still open when the process ends: the fd table is still there at this tracepoint (whose
 * group_dead argument older kernels lack: core_fixes.bpf.h). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(effects_process_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct scratch *s;

	if (!last_thread_exiting(task) || !bpf_map_lookup_elem(&fd_owners, &tgid))
		return 0;
	s = scratch_get();
	if (s) {
		flush_range(s, task, tgid, 0, ~0u, FLUSH_EXIT, 0);
		s->busy = 0;
	}
	bpf_map_delete_elem(&fd_owners, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
