// Every event struct as a global, so clang writes all of them into BTF for the layout test.
#include <linux/types.h>
#include "events.h"

struct event_header a_event_header;
struct fork_event a_fork_event;
struct exec_event a_exec_event;
struct exit_event a_exit_event;
struct kind_stats a_kind_stats;
struct tracked_info a_tracked_info;
struct lineage_config a_lineage_config;
struct mem_spike_event a_mem_spike_event;
struct oom_kill_event a_oom_kill_event;
struct control_config a_control_config;
