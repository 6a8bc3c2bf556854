/* SPDX-License-Identifier: Apache-2.0 */
/* Maps and helpers every vigild BPF object shares.
 *
 * Each object declares these maps; the loader makes later objects reuse the first object's map
 * file descriptors (bpf_map__reuse_fd), so all programs see one tracked-process set, one ring
 * buffer and one set of counters. */
#ifndef VIGIL_COMMON_BPF_H
#define VIGIL_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "events.h"

/* tgid -> tracked_info. Children are added in the kernel at fork, so none escapes a race with
 * user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct tracked_info);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EVENT_KIND_MAX);
	__type(key, __u32);
	__type(value, struct kind_stats);
} stats SEC(".maps");

/* Waking the consumer for every record costs ~2 us per event on these machines (an IRQ work
 * interrupt on the producing CPU); waking it only once `wakeup_bytes` are waiting (the consumer
 * also polls every few ms) costs a quarter of that. Only the record that brings the waiting bytes
 * up to `wakeup_bytes` wakes it: while the consumer is busy with a backlog, a wakeup per record
 * past the mark would be an interrupt per record that nobody waits on (measured: 0.7-0.9 per open
 * at 100k opens/s, over half of the opener's system time), and the one wakeup is not lost
 * while it is busy (its epoll set keeps the ring ready, and the ring's poll is level-triggered).
 * Records reserved at once on two CPUs can both miss the mark; the consumer's next poll then
 * takes them, as it takes every record below the mark. wakeup_bytes 0: every record wakes. */
static __always_inline __u64 wakeup_flag(__u32 wakeup_bytes, __u64 size)
{
	__u64 avail;

	if (!wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	/* what the record takes in the ring: its 8-byte header, rounded up to 8 bytes */
	if (avail < wakeup_bytes && avail + ((size + BPF_RINGBUF_HDR_SZ + 7) & ~7ULL) >= wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void count_event(__u32 kind, long err)
{
	struct kind_stats *s = bpf_map_lookup_elem(&stats, &kind);

	if (!s)
		return;
	if (err)
		s->dropped++;
	else
		s->emitted++;
}

/* Copy `size` bytes of `data` into the ring buffer, counting the loss when it is full. */
static __always_inline void emit(__u32 kind, void *data, __u64 size, __u32 wakeup_bytes)
{
	long err = bpf_ringbuf_output(&events, data, size, wakeup_flag(wakeup_bytes, size));

	count_event(kind, err);
}

/* As emit(), but a record that finds the consumer caught up also wakes it (the ring buffer's
 * adaptive notification): one wakeup per burst, not per record, and a lone record is not left
 * waiting for the consumer's next poll. For records someone waits on (TLS plaintext:
 * capture-to-event latency). */
static __always_inline void emit_prompt(__u32 kind, void *data, __u64 size, __u32 wakeup_bytes)
{
	__u64 flags = wakeup_flag(wakeup_bytes, size) == BPF_RB_FORCE_WAKEUP ? BPF_RB_FORCE_WAKEUP : 0;
	long err = bpf_ringbuf_output(&events, data, size, flags);

	count_event(kind, err);
}

static __always_inline void fill_header(struct event_header *hdr, __u32 kind, struct task_struct *task,
					const struct tracked_info *info)
{
	hdr->kind = kind;
	hdr->flags = 0;
	hdr->ts_ns = bpf_ktime_get_boot_ns();
	hdr->session_id = info->session_id;
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->pid = BPF_CORE_READ(task, tgid);
	hdr->tid = BPF_CORE_READ(task, pid);
	hdr->ppid = BPF_CORE_READ(task, real_parent, tgid);
	hdr->uid = (__u32)bpf_get_current_uid_gid();
	BPF_CORE_READ_STR_INTO(&hdr->comm, task, comm);
	hdr->call_id = info->call_id;
	hdr->_reserved = 0;
}

/* The file behind one of a task's fds (0 when there is none): effects, TLS and socket
 * payload all name connections and files by it. */
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

#endif /* VIGIL_COMMON_BPF_H */
