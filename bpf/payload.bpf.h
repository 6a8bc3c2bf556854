/* SPDX-License-Identifier: Apache-2.0 */
/* What the two payload sensors share (tls.bpf.c: TLS plaintext at the library boundary;
 * sockdata.bpf.c: plain socket and pipe payload at the syscalls): the per-CPU record slot taken by
 * nesting depth and the loop that moves one call's bytes into the ring in TLS_CHUNK_MAX chunks.
 * Both emit struct tls_data_event records, under their own kinds. */
#ifndef VIGIL_PAYLOAD_BPF_H
#define VIGIL_PAYLOAD_BPF_H

#include "common.bpf.h"

/* A call's record is assembled in a per-CPU slot before it is copied into the ring with its
 * exact length. These programs run with migration disabled but can be preempted (PREEMPT
 * kernels), so another thread's call may run on this CPU while one is mid-copy: each CPU has a few
 * slots, taken by nesting depth, so a preempting call gets its own. Only deeper nesting than
 * PAYLOAD_NEST is counted as lost (the sensor's BUSY kind). */
#define PAYLOAD_NEST 4

struct payload_nest {
	__u64 depth;
	__u64 seq;
};

#define PAYLOAD_MAPS(prefix)							\
struct {									\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);				\
	__uint(max_entries, PAYLOAD_NEST);					\
	__type(key, __u32);							\
	__type(value, struct tls_data_event);					\
} prefix##_scratch SEC(".maps");						\
struct {									\
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);				\
	__uint(max_entries, 1);							\
	__type(key, __u32);							\
	__type(value, struct payload_nest);					\
} prefix##_nest SEC(".maps")

/* This CPU's slot at the current depth (the depth taken: give it back with payload_release), or
 * 0 when nested too deep (counted as busy_kind, depth given back already) or the maps fail. */
static __always_inline struct tls_data_event *payload_slot(void *scratch, void *nest_map, struct payload_nest **nest,
							   __u32 busy_kind)
{
	__u32 zero = 0, level;
	struct tls_data_event *ev;

	*nest = bpf_map_lookup_elem(nest_map, &zero);
	if (!*nest)
		return 0;
	level = __sync_fetch_and_add(&(*nest)->depth, 1);
	ev = level < PAYLOAD_NEST ? bpf_map_lookup_elem(scratch, &level) : 0;
	if (!ev) {
		count_event(busy_kind, -1);
		__sync_fetch_and_sub(&(*nest)->depth, 1);
		return 0;
	}
	ev->call_id = __sync_fetch_and_add(&(*nest)->seq, 1) | ((__u64)bpf_get_smp_processor_id() << 56);
	return ev;
}

static __always_inline void payload_release(struct payload_nest *nest)
{
	__sync_fetch_and_sub(&nest->depth, 1);
}

/* One contiguous piece of a call: `len` bytes at user address `src`, starting `start` bytes into
 * the call; records go out as `kind`, waking the consumer promptly when `prompt` (emit_prompt). */
struct payload_copy {
	struct tls_data_event *ev;
	__u64 src;
	__u32 start;
	__u32 len;
	__u32 kind;
	__u32 prompt;
	__u32 wakeup_bytes;
	__u32 _pad;
};

static long payload_chunk(__u64 index, struct payload_copy *c)
{
	struct tls_data_event *ev = c->ev;
	__u64 at = index * TLS_CHUNK_MAX;
	__u32 len;

	if (at >= c->len)
		return 1;
	len = c->len - at;
	if (len > TLS_CHUNK_MAX)
		len = TLS_CHUNK_MAX;
	ev->offset = c->start + at;
	ev->len = len;
	if (bpf_probe_read_user(ev->data, len, (void *)(c->src + at))) {
		count_event(c->kind, -1);
		return 0; /* the gap shows in the offsets */
	}
	if (c->prompt)
		emit_prompt(c->kind, ev, offsetof(struct tls_data_event, data) + len, c->wakeup_bytes);
	else
		emit(c->kind, ev, offsetof(struct tls_data_event, data) + len, c->wakeup_bytes);
	return 0;
}

/* Move the piece into the ring, TLS_CHUNK_MAX bytes per record. */
static __always_inline void payload_emit(struct payload_copy *c)
{
	bpf_loop((c->len + TLS_CHUNK_MAX - 1) / TLS_CHUNK_MAX, payload_chunk, c, 0);
}

#endif /* VIGIL_PAYLOAD_BPF_H */
