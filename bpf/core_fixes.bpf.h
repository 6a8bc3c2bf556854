/* SPDX-License-Identifier: Apache-2.0 */
/* Kernel layout differences, resolved when the object is loaded (CO-RE), in one place.
 *
 * The objects are compiled once against the build host's vmlinux.h; a structure whose layout
 * changed between kernels is read through a `___flavour` definition of its older shape, and
 * bpf_core_field_exists() (a constant libbpf fills in at load time, so the dead branch is never
 * verified) picks the shape the running kernel has. Every such difference vigild's programs
 * meet lives here, so the programs themselves read the same on every kernel >= 5.15 with BTF. */
#ifndef VIGIL_CORE_FIXES_BPF_H
#define VIGIL_CORE_FIXES_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* mm->rss_stat: before 6.2 one `struct mm_rss_stat { atomic_long_t count[NR_MM_COUNTERS]; }`,
 * since 6.2 (commit f1a7941243c1) an array of `struct percpu_counter`, whose `count` is the
 * folded value the kernel's own get_mm_counter() returns. The old struct is gone from newer
 * kernels' BTF, hence its definition here. */
struct mm_rss_stat___pre6_2 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));

struct mm_struct___pre6_2 {
	struct mm_rss_stat___pre6_2 rss_stat;
} __attribute__((preserve_access_index));

/* One resident-memory counter of an mm (MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES ...), in pages;
 * approximate by at most the per-CPU batch, like get_mm_counter(). A macro, not a function:
 * `member` must be a constant so the index is part of the CO-RE access and is scaled by the
 * running kernel's element size (struct percpu_counter's size depends on the kernel's config). */
#define mm_counter_pages(mm, member)                                                              \
	(bpf_core_field_exists(((struct mm_struct___pre6_2 *)(mm))->rss_stat.count)               \
		 ? (__s64)BPF_CORE_READ((struct mm_struct___pre6_2 *)(mm), rss_stat.count[member].counter) \
		 : (__s64)BPF_CORE_READ((mm), rss_stat[member].count))

/* sched_process_exit: the tracepoint passes `group_dead` only on newer kernels (6.18 has it, 6.1
 * and 6.12 do not), and a tp_btf program reading an argument the kernel lacks is refused. The last
 * thread of a process is the one whose exit took signal->live to 0, which do_exit() does before
 * the tracepoint on every kernel. */
static __always_inline int last_thread_exiting(struct task_struct *task)
{
	return BPF_CORE_READ(task, signal, live.counter) == 0;
}

#endif /* VIGIL_CORE_FIXES_BPF_H */
