// SPDX-License-Identifier: Apache-2.0
/* A stand-in for effects.bpf.o that every kernel's verifier refuses, for tests/test_features.py
 * (loaded through the VIGIL_TEST_REPLACE_OBJECT hook of vigild.bpf.objects).
 *
 * It has what EffectsSensor configures before loading (the shared maps, the config in .rodata)
 * and an `effects_exit` that reads memory through a plain number: refused by every verifier
 * ("invalid mem access 'scalar'"), so the sensor meets a refusal as it would on a kernel that
 * lacks what the real object needs. */
#include "common.bpf.h"
#include "effects.h"

const volatile struct effects_config cfg = { .files = 1 };

SEC("tp_btf/sys_exit")
int BPF_PROG(effects_exit, struct pt_regs *regs, long ret)
{
	return *(long *)(ret + cfg.files);
}

char LICENSE[] SEC("license") = "GPL";
