// SPDX-License-Identifier: Apache-2.0
/* Per-tool-call control: memory spikes and OOM kills of tool-call processes, seen in the kernel.
 *
 * Shares `tracked`, `events` and `stats` with lineage.bpf.o (the loader reuses its maps); a
 * process belongs to a tool call when its tracked_info.call_id is set (lineage does that at the
 * call's first exec and at every fork below it). Memory is followed on kmem:rss_stat, which the
 * kernel fires whenever a resident-memory counter of an mm changes: no /proc polling, and a burst
 * is seen while it happens rather than at the next sample. */
#include "common.bpf.h"
#include "core_fixes.bpf.h"

const volatile struct control_config cfg = {
	.spike_bytes = 100ULL << 20,
	.spike_window_ns = 1000000000ULL,
	.wakeup_bytes = 0,
	.page_shift = 12,
};

/* Last resident size reported for a tool-call process, so the call's total moves by the delta. */
struct proc_mem {
	__u64 rss;
	__u32 call_id;
	__u32 _pad;
};

/* A call's resident memory and the lowest total seen in the current and the previous half
 * window: growth measured against the lower of the two spans between half a window and a whole
 * one, which a tumbling window would miss when a burst straddles its boundary. */
struct call_mem {
	__u64 total;
	__u64 low_prev;
	__u64 low_cur;
	__u64 bucket; /* index of the current half window */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct proc_mem);
} proc_mem SEC(".maps");

/* call_id -> state; user space deletes a call's entry when the call ends. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct call_mem);
} call_mem SEC(".maps");

/* Resident pages as the kernel's own get_mm_counter() reads them, in bytes (the counter's layout
 * differs before 6.2: core_fixes.bpf.h). */
static __always_inline __u64 mm_rss_bytes(struct mm_struct *mm)
{
	__s64 pages = mm_counter_pages(mm, MM_FILEPAGES) + mm_counter_pages(mm, MM_ANONPAGES) +
		      mm_counter_pages(mm, MM_SHMEMPAGES);

	return pages > 0 ? (__u64)pages << (cfg.page_shift & 31) : 0;
}

static __always_inline struct proc_mem *call_process(__u32 tgid)
{
	struct proc_mem fresh = {}, *pm = bpf_map_lookup_elem(&proc_mem, &tgid);
	struct tracked_info *info;

	if (pm)
		return pm;
	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!info || !info->call_id)
		return 0;
	fresh.call_id = info->call_id;
	bpf_map_update_elem(&proc_mem, &tgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&proc_mem, &tgid);
}

static __always_inline void emit_spike(struct task_struct *task, __u32 tgid, __u32 call_id, __u64 growth,
				       __u64 total, __u64 rss)
{
	struct tracked_info *info = bpf_map_lookup_elem(&tracked, &tgid);
	struct mem_spike_event ev = {};

	if (!info)
		return;
	fill_header(&ev.hdr, EVENT_MEM_SPIKE, task, info);
	ev.hdr.pid = tgid; /* the mm's owner, which may not be the task that changed its counter */
	ev.call_id = call_id;
	ev.growth_bytes = growth;
	ev.call_rss_bytes = total;
	ev.rss_bytes = rss;
	ev.window_ns = cfg.spike_window_ns;
	emit(EVENT_MEM_SPIKE, &ev, sizeof(ev), cfg.wakeup_bytes);
}

SEC("tp_btf/rss_stat")
int BPF_PROG(on_rss_stat, struct mm_struct *mm, int member)
{
	struct call_mem fresh = {}, *cm;
	struct task_struct *owner;
	struct proc_mem *pm;
	__u64 rss, total, now, half, bucket, low;
	__u32 tgid, call_id;

	if (!cfg.spike_bytes)
		return 0;
	owner = BPF_CORE_READ(mm, owner);
	if (!owner)
		return 0;
	tgid = BPF_CORE_READ(owner, tgid);
	pm = call_process(tgid);
	if (!pm)
		return 0;
	call_id = pm->call_id;
	cm = bpf_map_lookup_elem(&call_mem, &call_id);
	if (!cm) {
		bpf_map_update_elem(&call_mem, &call_id, &fresh, BPF_NOEXIST);
		cm = bpf_map_lookup_elem(&call_mem, &call_id);
		if (!cm)
			return 0;
	}
	rss = mm_rss_bytes(mm);
	__sync_fetch_and_add(&cm->total, rss - pm->rss); /* wraps correctly when it shrinks */
	pm->rss = rss;
	total = cm->total;

	now = bpf_ktime_get_boot_ns();
	half = cfg.spike_window_ns / 2;
	if (!half)
		half = 1;
	bucket = now / half;
	if (bucket != cm->bucket) {
		cm->low_prev = bucket == cm->bucket + 1 ? cm->low_cur : total;
		cm->low_cur = total;
		cm->bucket = bucket;
	} else if (total < cm->low_cur) {
		cm->low_cur = total;
	}
	low = cm->low_prev < cm->low_cur ? cm->low_prev : cm->low_cur;
	if (total > low && total - low > cfg.spike_bytes) {
		/* Re-arm from here: the next event needs another spike_bytes of growth. */
		cm->low_prev = total;
		cm->low_cur = total;
		emit_spike(bpf_get_current_task_btf(), tgid, call_id, total - low, total, rss);
	}
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_call_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct proc_mem *pm;
	struct call_mem *cm;

	if (!last_thread_exiting(task))
		return 0;
	pm = bpf_map_lookup_elem(&proc_mem, &tgid);
	if (!pm)
		return 0;
	cm = bpf_map_lookup_elem(&call_mem, &pm->call_id);
	if (cm)
		__sync_fetch_and_add(&cm->total, -pm->rss);
	bpf_map_delete_elem(&proc_mem, &tgid);
	return 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task, uid_t uid)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct tracked_info *info = bpf_map_lookup_elem(&tracked, &tgid);
	struct oom_kill_event ev = {};
	struct mm_struct *mm;

	if (!info)
		return 0;
	fill_header(&ev.hdr, EVENT_OOM_KILL, task, info);
	ev.hdr.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id); /* the victim's, not current's */
	ev.hdr.uid = uid;
	ev.call_id = info->call_id;
	mm = BPF_CORE_READ(task, mm);
	if (mm) {
		ev.rss_bytes = mm_rss_bytes(mm);
		ev.total_vm_bytes = BPF_CORE_READ(mm, total_vm) << (cfg.page_shift & 31);
	}
	emit(EVENT_OOM_KILL, &ev, sizeof(ev), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
