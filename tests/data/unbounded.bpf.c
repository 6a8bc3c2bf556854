// A program the verifier must refuse: it indexes a map value with an unbounded value.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[64]);
} scratch SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int bad(void *ctx)
{
	__u32 zero = 0;
	char *v = bpf_map_lookup_elem(&scratch, &zero);
	__u64 i = bpf_get_prandom_u32();

	if (v)
		v[i] = 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
