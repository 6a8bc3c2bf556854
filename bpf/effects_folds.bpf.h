/* SPDX-License-Identifier: Apache-2.0 */
/* Repeated read-only opens, folded: the first open of a file by a thread is a record at once (a
 * secret read is detected on it, the tool-call link and the timeline need it); later opens of the
 * same file with the same flags only count, in the thread's open_folds table, until the count is
 * written out as one file_open record flagged FILE_OPEN_FOLDED whose `calls` says how many opens
 * it stands for. A Python agent's imports, `git status`, a build's header reads open the same files
 * again and again: each of those opens otherwise costs the pipeline a record.
 *
 * A count is written out, so nothing waits long and nothing is lost silently:
 * - at the next open of the file once it holds FOLD_MAX_COUNT opens or its first fold is over
 *   FOLD_MAX_AGE_NS old (with the path: the open has the file), and at the thread's next open of
 *   a file not in the table, or failed open, once it is over FOLD_MAX_AGE_NS old (without);
 * - when its slot is taken by another file (the least recently opened of its set's ways), when the thread changes
 *   a file (a write-side open, unlink, rename, mkdir, chmod) or its tool call, at exec and at the
 *   thread's exit (without a path: user space names it from the thread's first record of it).
 * A count that cannot be written out (ring full, scratch busy) is counted as lost like any record.
 *
 * Part of effects.bpf.c, included by it only, after effects_fds.bpf.h. */
#ifndef VIGIL_EFFECTS_FOLDS_H
#define VIGIL_EFFECTS_FOLDS_H

/* An open that cannot change the file: read-only access, no O_CREAT, O_TRUNC or O_APPEND (a
 * writer's sign even read-only), no O_TMPFILE. O_PATH, O_DIRECTORY, O_CLOEXEC, O_NOFOLLOW and
 * the like fold; the flags are part of what must match. */
#define O_ACCMODE 03
#define O_APPEND 02000
#define O_TMPFILE_BIT 020000000
#define FOLD_REFUSED_FLAGS (O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE_BIT)

enum fold_action { FOLD_ABSORBED = 0, FOLD_EMIT = 1, FOLD_FLUSH_COUNT = 2, FOLD_FLUSH_AGE = 3 };

#define FOLD_PATH_CUT (1u << 31) /* in fold_emit's `path`: the path was truncated */

/* Write out slot `i`'s count as a folded file_open record of the current thread. `path`: the
 * length of the path already in s->file.data (the caller just walked it for this file; with
 * FOLD_PATH_CUT when truncated), or 0: no path. (Five arguments at most: BPF passes no more.) */
static void fold_emit(struct scratch *s, struct open_folds *t, __u32 i, __u32 reason, __u32 path)
{
	struct tracked_info info = { .session_id = t->session_id, .call_id = t->call_id };
	struct fold_slot *slot = &t->slot[i & (FOLD_SLOTS - 1)];
	__u32 len = path & ~FOLD_PATH_CUT;

	file_header(s, EVENT_FILE_OPEN, bpf_get_current_task_btf(), &info);
	s->file.hdr.flags = FILE_OPEN_FOLDED | (path & FOLD_PATH_CUT ? FILE_PATH_TRUNCATED : 0);
	s->file.calls = slot->count;
	s->file.first_ns = slot->first_ns;
	s->file.last_ns = slot->last_ns;
	s->file.ino = slot->ino;
	s->file.dev = slot->dev;
	s->file.open_flags = slot->flags;
	s->file.reason = reason;
	s->file.len[1] = len;
	file_emit(s, EVENT_FILE_OPEN, len);
	slot->count = 0;
	if (t->pending)
		t->pending--;
}

struct fold_flush_ctx {
	struct scratch *s;
	struct open_folds *t;
	__u64 before;   /* counts whose first fold is no later than this go out */
	__u64 oldest;   /* the first fold of those that stay */
	__u32 reason;
};

static long fold_flush_slot(__u32 i, struct fold_flush_ctx *c)
{
	struct fold_slot *slot = &c->t->slot[i & (FOLD_SLOTS - 1)];

	if (!slot->count)
		return 0;
	if (slot->first_ns <= c->before)
		fold_emit(c->s, c->t, i, c->reason, 0);
	else if (slot->first_ns < c->oldest)
		c->oldest = slot->first_ns;
	return 0;
}

/* The counts of the current thread's table that began no later than `before` written out
 * (bpf_loop: one callback verified, not FOLD_SLOTS copies of the body). */
static void fold_flush_before(struct scratch *s, struct open_folds *t, __u32 reason, __u64 before)
{
	struct fold_flush_ctx c = { .s = s, .t = t, .before = before, .oldest = ~0ULL, .reason = reason };

	bpf_loop(FOLD_SLOTS, fold_flush_slot, &c, 0);
	t->oldest_ns = c.oldest;
}

/* Every count of the current thread's table written out. */
static __always_inline void fold_flush(struct scratch *s, struct open_folds *t, __u32 reason)
{
	fold_flush_before(s, t, reason, ~0ULL);
}

/* Counts that began over FOLD_MAX_AGE_NS ago written out: a file the thread stopped opening
 * does not keep its count until the thread ends, as long as the thread opens something. */
static __always_inline void fold_sweep(struct scratch *s, struct open_folds *t, __u64 now)
{
	if (t->pending && now - t->oldest_ns > FOLD_MAX_AGE_NS)
		fold_flush_before(s, t, FLUSH_AGE, now - FOLD_MAX_AGE_NS);
}

/* A failed open of the current thread: no fold, but the time to write old counts out. */
static void fold_tick(struct call *c)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct open_folds *t = bpf_map_lookup_elem(&open_folds, &tid);

	if (t)
		fold_sweep(c->s, t, bpf_ktime_get_boot_ns());
}

/* The current thread ends or execs: its counts out, its table gone. */
static void fold_release(struct scratch *s, __u32 tid, __u32 reason)
{
	struct open_folds *t = bpf_map_lookup_elem(&open_folds, &tid);

	if (!t)
		return;
	if (t->pending)
		fold_flush(s, t, reason);
	bpf_map_delete_elem(&open_folds, &tid);
}

/* The thread changed a file: the reads counted before go out first. */
static void fold_changed(struct call *c)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct open_folds *t = bpf_map_lookup_elem(&open_folds, &tid);

	if (t && t->pending)
		fold_flush(c->s, t, FLUSH_CHANGE);
}

/* The thread's table, created on first use; a table left by another session or tool call (a
 * reused tid, a process moved to another call) is written out and started again. */
static struct open_folds *fold_table(struct call *c, __u32 tid)
{
	struct open_folds *t = bpf_map_lookup_elem(&open_folds, &tid), *empty;
	__u32 zero = 0;

	if (t && t->session_id == c->info->session_id && t->call_id == c->info->call_id)
		return t;
	if (t) {
		if (t->pending)
			fold_flush(c->s, t, FLUSH_CHANGE);
		bpf_map_delete_elem(&open_folds, &tid);
	}
	empty = bpf_map_lookup_elem(&open_folds_empty, &zero);
	if (!empty || bpf_map_update_elem(&open_folds, &tid, empty, BPF_NOEXIST))
		return 0; /* table full: this thread's opens are all emitted, none folded */
	t = bpf_map_lookup_elem(&open_folds, &tid);
	if (t) {
		t->session_id = c->info->session_id;
		t->call_id = c->info->call_id;
	}
	return t;
}

/* The first slot of the set a file's slots are in: a multiplicative hash of (dev, ino), top bits. */
static __always_inline __u32 fold_set(__u32 dev, __u64 ino)
{
	return (__u32)(((ino ^ ((__u64)dev << 40)) * 0x9E3779B97F4A7C15ULL) >> 60) * FOLD_WAYS;
}

/* The way of set `set` a file not in the table takes: the least recently opened (a free way has
 * last_ns 0). Not a round robin: a counter shared by the table's sets let a slot of a file the
 * thread no longer opens outlive, miss after miss, the files it does open, which then evicted one
 * another every cycle. A function of its own, not inlined: inlined, it grew on_open's frame by 64
 * bytes, and the deepest call chain went over the 512 bytes of stack the verifier allows. */
static __noinline __u32 fold_victim(struct open_folds *t, __u32 set)
{
	__u64 oldest = ~0ULL;
	__u32 i, victim = set;

	for (i = set; i < set + FOLD_WAYS; i++) {
		struct fold_slot *slot = &t->slot[i & (FOLD_SLOTS - 1)];

		if (slot->last_ns < oldest) {
			oldest = slot->last_ns;
			victim = i;
		}
	}
	return victim;
}

/* A successful foldable open of `f`: absorbed into its slot, or to be emitted (a file not in the
 * table takes a slot of its set, the previous file's count written out), or absorbed and its slot
 * `*hit` of the thread's table `*table` to be written out now with this open's path. */
static __u32 fold_open(struct call *c, struct file *f, __u32 flags, __u32 *hit, struct open_folds **table)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev), i, v, set;
	__u64 ino = BPF_CORE_READ(f, f_inode, i_ino), now;
	struct open_folds *t;
	struct fold_slot *slot;

	if (!ino)
		return FOLD_EMIT;
	t = fold_table(c, tid);
	if (!t)
		return FOLD_EMIT;
	now = bpf_ktime_get_boot_ns();
	set = fold_set(dev, ino);
	for (i = set; i < set + FOLD_WAYS; i++) {
		slot = &t->slot[i & (FOLD_SLOTS - 1)];
		if (slot->ino != ino || slot->dev != dev || slot->flags != flags)
			continue;
		if (!slot->count) {
			slot->first_ns = now;
			if (!t->pending++)
				t->oldest_ns = now;
		}
		slot->count++;
		slot->last_ns = now;
		*hit = i;
		*table = t;
		if (slot->count >= FOLD_MAX_COUNT)
			return FOLD_FLUSH_COUNT;
		if (now - slot->first_ns > FOLD_MAX_AGE_NS)
			return FOLD_FLUSH_AGE;
		return FOLD_ABSORBED;
	}
	fold_sweep(c->s, t, now); /* on a miss only: a hit stays a lookup and a count */
	v = fold_victim(t, set);
	slot = &t->slot[v & (FOLD_SLOTS - 1)];
	if (slot->count)
		fold_emit(c->s, t, v, FLUSH_EVICTED, 0);
	slot->ino = ino;
	slot->dev = dev;
	slot->flags = flags;
	slot->count = 0;
	slot->first_ns = 0;
	slot->last_ns = now;
	return FOLD_EMIT;
}

#endif /* VIGIL_EFFECTS_FOLDS_H */
