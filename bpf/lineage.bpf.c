// SPDX-License-Identifier: Apache-2.0
/* Process lineage: fork, exec (filename + full argv) and exit of tracked process trees.
 *
 * Only processes in the `tracked` map produce events; a child of a tracked process is added at
 * fork, in the kernel, before it can run. Untracked processes cost one hash lookup and produce no
 * ring-buffer traffic at all. */
#include "common.bpf.h"
#include "core_fixes.bpf.h"

const volatile struct lineage_config cfg = {
	.wakeup_bytes = 256 * 1024,
	.match_comm = 0,
};

/* comm -> TRACK_* flags for the root: processes whose new comm matches become roots of a new
 * session at exec. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, char[TASK_COMM_LEN]);
	__type(value, __u32);
} root_comms SEC(".maps");

/* One exec record's worth of scratch per CPU. A per-CPU array cannot hold values over 32 KiB, so
 * this is a plain array with one slot per possible CPU (set by the loader); sched tracepoints run
 * with preemption disabled, so a slot is never shared by two programs at once. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1); /* the loader sets the number of possible CPUs */
	__type(key, __u32);
	__type(value, struct exec_event);
} exec_scratch SEC(".maps");

/* tgid -> when it was stopped: tool-call processes held (SIGSTOP at their first exec) until user
 * space has put them in their call's cgroup. User space deletes the entry when it lets the
 * process go; vigil's watchdog process holds this map too and lets every entry go if vigil dies. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} held SEC(".maps");

/* A second copy of each exec held for its call's placement (and for nothing else), for user
 * space's held lane (daemon/pipeline/held_lane.py): in `events` it can sit behind seconds of a
 * flood's effects. Losing this copy costs only time: the one in `events` is placed in order. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} held_events SEC(".maps");

/* Executables user space has examined for TLS to hook (exe_key -> 1). A tracked process that
 * execs any other is held like a tool call (same `held` map, same watchdog) until user space has
 * hooked what the executable carries, so its first TLS call is not missed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct exe_key);
	__type(value, __u8);
} exe_seen SEC(".maps");

#define SIGSTOP 19

/* Counter behind kernel-minted session ids (see KERNEL_SESSION_BIT). */
__u64 next_kernel_session = 0;

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = BPF_CORE_READ(parent, tgid);
	__u32 child_pid = BPF_CORE_READ(child, pid);
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	struct tracked_info *pinfo, cinfo;
	struct fork_event ev = {};

	if (child_pid != child_tgid) /* a new thread, not a new process */
		return 0;
	pinfo = bpf_map_lookup_elem(&tracked, &parent_tgid);
	if (!pinfo)
		return 0;
	cinfo.session_id = pinfo->session_id;
	cinfo.root_pid = pinfo->root_pid;
	cinfo.depth = pinfo->depth + 1;
	/* Children of a controlled root start tool calls when they exec; their descendants inherit
	 * the call, as they inherit its cgroup at fork. Children of an observed root start them too,
	 * but are never stopped for it: nothing is placed. */
	if (pinfo->flags & TRACK_CONTROLLED)
		cinfo.flags = TRACK_CALL_CANDIDATE;
	else if (pinfo->flags & TRACK_OBSERVED)
		cinfo.flags = TRACK_CALL_CANDIDATE | TRACK_CALL_UNHELD;
	else
		cinfo.flags = 0;
	cinfo.call_id = pinfo->call_id;
	bpf_map_update_elem(&tracked, &child_tgid, &cinfo, BPF_ANY);

	fill_header(&ev.hdr, EVENT_FORK, child, &cinfo);
	ev.hdr.ppid = parent_tgid;
	emit(EVENT_FORK, &ev, sizeof(ev), cfg.wakeup_bytes);
	return 0;
}

/* A process not yet tracked whose new program name is in root_comms becomes a root. */
static __always_inline struct tracked_info *track_by_comm(__u32 tgid, struct task_struct *task)
{
	char comm[TASK_COMM_LEN] = {};
	struct tracked_info info = {};
	__u32 *root_flags;

	if (!cfg.match_comm)
		return 0;
	BPF_CORE_READ_STR_INTO(&comm, task, comm);
	root_flags = bpf_map_lookup_elem(&root_comms, &comm);
	if (!root_flags)
		return 0;
	/* TRACK_CONTROLLED here, not later from user space: children the agent forks in its first
	 * milliseconds must already start tool calls. */
	info.flags = *root_flags & (TRACK_CONTROLLED | TRACK_OBSERVED);
	info.session_id = KERNEL_SESSION_BIT | (cfg.session_base + __sync_fetch_and_add(&next_kernel_session, 1));
	info.root_pid = tgid;
	info.depth = 0;
	bpf_map_update_elem(&tracked, &tgid, &info, BPF_NOEXIST);
	return bpf_map_lookup_elem(&tracked, &tgid);
}

/* The first exec of a child of a controlled root starts a tool call: the process is stopped before
 * the new program's first instruction (the signal is delivered on the way back to user space) so
 * user space can place it in the call's cgroup first. A child of an observed root starts one
 * without the stop. Returns EXEC_* flags for the event. */
static __always_inline __u32 start_call(__u32 tgid, struct tracked_info *info)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u32 flags = EXEC_CALL_START;

	if (!(info->flags & TRACK_CALL_CANDIDATE) || info->call_id)
		return 0;
	info->call_id = tgid;
	if (info->flags & TRACK_CALL_UNHELD) { /* observed: marked, never stopped */
		info->flags &= ~(TRACK_CALL_CANDIDATE | TRACK_CALL_UNHELD);
		return flags;
	}
	info->flags &= ~TRACK_CALL_CANDIDATE;
	if (bpf_map_update_elem(&held, &tgid, &now, BPF_ANY))
		return flags;
	if (bpf_send_signal(SIGSTOP)) {
		bpf_map_delete_elem(&held, &tgid);
		return flags;
	}
	return flags | EXEC_HELD;
}

/* Hold an exec of an executable user space has not examined yet (see exe_seen). */
static __always_inline __u32 hold_new_exe(__u32 tgid, struct linux_binprm *bprm, __u32 call_flags)
{
	struct exe_key key = {};
	__u64 now;

	if (!cfg.hold_new_exe)
		return 0;
	key.ino = BPF_CORE_READ(bprm, file, f_inode, i_ino);
	key.dev = BPF_CORE_READ(bprm, file, f_inode, i_sb, s_dev);
	if (bpf_map_lookup_elem(&exe_seen, &key))
		return 0;
	if (call_flags & EXEC_HELD) /* already stopped for its call's placement */
		return EXEC_EXE_HELD;
	now = bpf_ktime_get_boot_ns();
	if (bpf_map_update_elem(&held, &tgid, &now, BPF_ANY))
		return 0;
	if (bpf_send_signal(SIGSTOP)) {
		bpf_map_delete_elem(&held, &tgid);
		return 0;
	}
	return EXEC_EXE_HELD;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 cpu = bpf_get_smp_processor_id(), new_root = 0, call_flags;
	struct tracked_info *info;
	struct exec_event *ev;
	__u64 arg_start, arg_end, args_len, fn_len;
	long n;

	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!info) {
		info = track_by_comm(tgid, task);
		if (!info)
			return 0;
		new_root = EXEC_NEW_ROOT;
	}
	call_flags = start_call(tgid, info);
	call_flags |= hold_new_exe(tgid, bprm, call_flags);
	ev = bpf_map_lookup_elem(&exec_scratch, &cpu);
	if (!ev) {
		count_event(EVENT_EXEC, -1);
		return 0;
	}
	fill_header(&ev->hdr, EVENT_EXEC, task, info);
	ev->hdr.flags = new_root | call_flags;
	ev->old_pid = old_pid;

	n = bpf_probe_read_kernel_str(ev->data, FILENAME_MAX_LEN, BPF_CORE_READ(bprm, filename));
	if (n < 0)
		n = 0;
	if (n >= FILENAME_MAX_LEN)
		ev->hdr.flags |= EXEC_FILENAME_TRUNCATED;
	fn_len = n & (FILENAME_MAX_LEN - 1);
	ev->filename_len = fn_len;

	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	args_len = arg_end > arg_start ? arg_end - arg_start : 0;
	ev->args_total = args_len;
	if (args_len > ARGS_MAX_LEN) {
		args_len = ARGS_MAX_LEN;
		ev->hdr.flags |= EXEC_ARGS_TRUNCATED;
	}
	barrier_var(args_len);
	if (args_len > ARGS_MAX_LEN) /* restated for the verifier after the barrier */
		args_len = ARGS_MAX_LEN;
	if (args_len && bpf_probe_read_user(ev->data + fn_len, args_len, (void *)arg_start)) {
		args_len = 0;
		ev->hdr.flags |= EXEC_ARGS_UNREADABLE;
	}
	ev->args_len = args_len;
	/* Held for placement alone (not also for TLS hooks, which only the pipeline makes): the held
	 * lane can place it at once. Woken every time: a stopped process waits on it. */
	if ((call_flags & (EXEC_HELD | EXEC_EXE_HELD)) == EXEC_HELD)
		bpf_ringbuf_output(&held_events, ev, offsetof(struct exec_event, data) + fn_len + args_len,
				   BPF_RB_FORCE_WAKEUP);
	/* A held process waits for user space, and a new root ends the consumer's idle wait (it
	 * blocks for a second while nothing is tracked): wake it now rather than at the next poll. */
	emit(EVENT_EXEC, ev, offsetof(struct exec_event, data) + fn_len + args_len,
	     call_flags || new_root ? 0 : cfg.wakeup_bytes);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	__u32 tgid = BPF_CORE_READ(task, tgid);
	struct tracked_info *info;
	struct exit_event ev = {};

	/* The process is gone when its last thread exits, whichever thread that is. */
	if (!last_thread_exiting(task))
		return 0;
	info = bpf_map_lookup_elem(&tracked, &tgid);
	if (!info)
		return 0;
	fill_header(&ev.hdr, EVENT_EXIT, task, info);
	ev.exit_code = BPF_CORE_READ(task, exit_code);
	bpf_map_delete_elem(&tracked, &tgid);
	emit(EVENT_EXIT, &ev, sizeof(ev), cfg.wakeup_bytes);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
