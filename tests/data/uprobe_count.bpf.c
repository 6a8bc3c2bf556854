// Counts calls of a user-space function, per attachment (the cookie picks the slot).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

SEC("uprobe")
int count(struct pt_regs *ctx)
{
	__u32 slot = bpf_get_attach_cookie(ctx) & 3;
	__u64 *n = bpf_map_lookup_elem(&calls, &slot);

	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
