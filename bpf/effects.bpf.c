// SPDX-License-Identifier: Apache-2.0
/* File and network effects of tracked processes, from the syscall tracepoints: the per-syscall
 * ones of the syscalls in the table where tracefs is there (or can be mounted), else the raw
 * sys_enter/sys_exit (see "dispatch" below for what each costs processes nobody tracks).
 *
 * Paths come from the kernel's own objects where the syscall produced one (the new fd of an
 * open, the fd of a write): a dentry walk up to the task's root. Paths a process named (unlink,
 * rename, mkdir, chmod) are sent as its string plus the resolved cwd or dirfd directory;
 * user space joins and normalises them.
 *
 * Writes and socket traffic are summed per (tgid, fd) in fd_state and written out once, when
 * the fd is closed, replaced, closed at exec or left open at exit. Repeated read-only opens of a
 * file by one thread are counted, not each sent (effects_folds.bpf.h). Syscall numbers are x86-64's;
 * the loader refuses other architectures.
 *
 * The parts live in headers included below, in this order: the syscall table, the maps and
 * scratch, paths, socket addresses, per-fd sums; this file keeps the handlers and the dispatch. */
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
	.max_queued_bytes = 8 * 1024 * 1024, /* bpf/effects.py sets it from the ring's size (effects_queue_bytes) */
	.fold_opens = 1,
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

#include "effects_syscalls.bpf.h"
#include "effects_state.bpf.h"
#include "effects_paths.bpf.h"
#include "effects_net.bpf.h"
#include "effects_fds.bpf.h"
#include "effects_folds.bpf.h"

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
	__u32 truncated = 0, len, action = FOLD_EMIT, hit = 0;
	struct open_folds *folds = 0;
	struct file *f = 0;

	if (c->ret >= 0) {
		drop_stale(c, c->ret);
		f = fd_file(c->task, c->ret);
		if (f && cfg.fold_opens && !(flags & FOLD_REFUSED_FLAGS))
			action = fold_open(c, f, flags, &hit, &folds);
		else if (cfg.fold_opens)
			fold_changed(c);
		if (action == FOLD_ABSORBED)
			return;
	} else if (cfg.fold_opens) {
		fold_tick(c);
	}
	if (f && action != FOLD_EMIT) { /* a count written out now, named by this open's path */
		if (folds) {
			len = put_file_path(s, c->task, f, 0, &truncated);
			fold_emit(s, folds, hit, action == FOLD_FLUSH_COUNT ? FLUSH_COUNT : FLUSH_AGE,
				  len | (truncated ? FOLD_PATH_CUT : 0));
		}
		return;
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

	if (cfg.fold_opens)
		fold_changed(c);
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

	if (cfg.fold_opens)
		fold_changed(c);
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

/* The exit of a syscall in the table; `regs` are the task's syscall registers, or taken from the
 * task when `regs_from_task` (the per-syscall tracepoints pass no registers, only the number and
 * the result; the arguments are still in the registers saved at entry). The tracked check comes
 * before anything else so that an untracked process pays one map lookup. Returns whether the
 * process is tracked. */
static __always_inline int on_exit_nr(struct pt_regs *regs, long nr, long ret, const bool regs_from_task)
{
	struct call c = { .regs = regs, .nr = nr, .ret = ret };

	if (!regs_from_task && !interesting_exit(nr)) /* per-syscall: attached to those only */
		return 0;
	c.tgid = bpf_get_current_pid_tgid() >> 32;
	c.info = bpf_map_lookup_elem(&tracked, &c.tgid);
	if (!c.info)
		return 0;
	c.s = scratch_get();
	if (!c.s)
		return 1;
	c.task = bpf_get_current_task_btf();
	if (regs_from_task)
		c.regs = regs = (struct pt_regs *)bpf_task_pt_regs(c.task);
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
	return 1;
}

/* Sums are written out before the fd goes away, while it still names the file. Returns whether
 * the process is tracked (for a close, dup2, dup3 or close_range; 0 for an exec).
 *
 * A close or dup of a process nobody tracks, most of the host's, leaves after one lookup: the
 * tracked set is looked at first. A process that had sums and was dropped from it while alive (a
 * root turned down, whose session user space discards) has them written at its exit instead. An
 * exec looks at the thread's folds and the sums whatever the tracked set says. */
static __always_inline int on_enter_nr(struct pt_regs *regs, long nr, const bool regs_from_task)
{
	__u32 tgid, tid;
	struct task_struct *task;
	struct scratch *s;
	long a0, a1, a2;
	int exec, folds = 0, known = 0;

	if (nr != NR_close && nr != NR_close_range && nr != NR_dup2 && nr != NR_dup3 && nr != NR_execve &&
	    nr != NR_execveat)
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	tid = (__u32)bpf_get_current_pid_tgid();
	exec = nr == NR_execve || nr == NR_execveat;
	if (exec) {
		folds = bpf_map_lookup_elem(&open_folds, &tid) != 0;
	} else {
		if (!bpf_map_lookup_elem(&tracked, &tgid))
			return 0;
		known = 1;
	}
	if (!bpf_map_lookup_elem(&fd_owners, &tgid) && !folds)
		return known;
	s = scratch_get();
	if (!s)
		return known;
	task = bpf_get_current_task_btf();
	if (regs_from_task)
		regs = (struct pt_regs *)bpf_task_pt_regs(task);
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
		if (folds)
			fold_release(s, tid, FLUSH_EXEC);
		flush_range(s, task, tgid, 0, ~0u, FLUSH_EXEC, 1);
	}
	s->busy = 0;
	return known;
}

/* Two ways in, one loaded (bpf/effects.py picks before loading):
 *
 * - per-syscall tracepoints (syscalls:sys_exit_X, syscalls:sys_enter_X), one program attached to
 *   each syscall of the table. The kernel tests a bit per syscall number before it runs anything,
 *   so every other syscall of every process costs no BPF program at all. They need tracefs (libbpf
 *   reads the event ids there) and CONFIG_FTRACE_SYSCALLS.
 * - the raw sys_enter/sys_exit through BTF: no tracefs, but every syscall of every process on the
 *   host enters the program (the number is compared first, then the tracked map).
 *
 * The per-syscall record starts with the common fields (8 bytes) and the syscall number; the exit
 * record then has the result. The enter programs read no argument from the record (its size
 * depends on the syscall's argument count, and one program serves them all): the arguments come
 * from the registers saved at entry, as in the raw variant. */
struct syscall_exit_record {
	__u64 common;
	int nr;
	long ret;
};

struct syscall_enter_record {
	__u64 common;
	int nr;
};

/* The plain-HTTP sensor's programs (sockdata.bpf.c) for the syscalls both sensors look at, called
 * from these for tracked processes only: each of those tracepoints then runs one program, not
 * two, for every process nobody tracks. bpf/sockdata.py fills the slots and attaches nothing of
 * its own there; an empty slot (that sensor off) makes the tail call a no-op. */
#define CHAIN_SOCK_EXIT 0  /* sock_exit: write, read and the other payload syscalls */
#define CHAIN_SOCK_CLOSE 1 /* sock_close: close */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} effects_chain SEC(".maps");

static __always_inline int sock_syscall(long nr)
{
	return nr == NR_write || nr == NR_read || nr == NR_sendto || nr == NR_recvfrom || nr == NR_writev ||
	       nr == NR_readv || nr == NR_sendmsg || nr == NR_recvmsg;
}

SEC("tracepoint")
int effects_sys_exit(struct syscall_exit_record *rec)
{
	if (on_exit_nr(0, rec->nr, rec->ret, true) && cfg.chain_sock && sock_syscall(rec->nr))
		bpf_tail_call(rec, &effects_chain, CHAIN_SOCK_EXIT);
	return 0;
}

SEC("tracepoint")
int effects_sys_enter(struct syscall_enter_record *rec)
{
	if (on_enter_nr(0, rec->nr, true) && cfg.chain_sock && rec->nr == NR_close)
		bpf_tail_call(rec, &effects_chain, CHAIN_SOCK_CLOSE);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(effects_exit, struct pt_regs *regs, long ret)
{
	on_exit_nr(regs, BPF_CORE_READ(regs, orig_ax), ret, false);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(effects_enter, struct pt_regs *regs, long nr)
{
	on_enter_nr(regs, nr, false);
	return 0;
}

/* A thread's folded opens when it ends; fds still open when the process ends: the fd table is
 * still there at this tracepoint (whose group_dead argument older kernels lack: core_fixes.bpf.h). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(effects_process_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid), tid = BPF_CORE_READ(task, pid);
	int folds = bpf_map_lookup_elem(&open_folds, &tid) != 0;
	int fds = last_thread_exiting(task) && bpf_map_lookup_elem(&fd_owners, &tgid);
	struct scratch *s;

	if (!folds && !fds)
		return 0;
	s = scratch_get();
	if (s) {
		if (folds)
			fold_release(s, tid, FLUSH_EXIT);
		if (fds)
			flush_range(s, task, tgid, 0, ~0u, FLUSH_EXIT, 0);
		s->busy = 0;
	}
	if (folds)
		bpf_map_delete_elem(&open_folds, &tid);
	if (fds)
		bpf_map_delete_elem(&fd_owners, &tgid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
