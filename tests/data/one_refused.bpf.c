// SPDX-License-Identifier: Apache-2.0
/* Two programs, one of which every verifier refuses (it reads memory through a plain number):
 * tests/test_features.py loads it with load_leaving_out_refused, which must keep the other. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/sched_process_fork")
int BPF_PROG(kept, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(refused, struct task_struct *task)
{
	return *(long *)(long)task->pid;
}

char LICENSE[] SEC("license") = "GPL";
