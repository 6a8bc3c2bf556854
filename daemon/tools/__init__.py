"""Tool-call governance: per-call cgroups and their bookkeeping (control_loop), per-tool policies
(policy), declared needs (declare), adaptive memory.high (adaptive), delay accounting (taskstats),
the fail-safe watchdog (watchdog) and placement in delegated agent cgroups (agent_cgroups)."""
