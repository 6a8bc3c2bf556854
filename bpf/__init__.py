"""The kernel side: CO-RE BPF objects, their loaders and the Python mirrors of their records.

Every sensor has the same three parts: `x.bpf.c` (one object, its parts in `x_*.bpf.h` when it is
large), `x.py` (open, configure, load, attach; what is lost without each program) and the ctypes
mirror of what it writes with the decoders to typed events (`events.py` for the shared header,
lineage, TLS and control records, `effects_events.py` for effects). Each mirror module lists its
structs in BTF_MIRRORS; `abi.py` checks them, and the one table of event kinds (`events.Kind`, C's
enum event_kind), against the BTF of the compiled objects.
"""
