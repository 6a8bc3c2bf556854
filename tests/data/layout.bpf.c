// Every record, config and key struct of the headers as a global, so clang writes all of them into
// BTF: the ABI test checks the mirrors no shipped object carries (records built on the stack of
// inlined code leave no type behind) against the headers the objects are built from.
#include <linux/types.h>
#include "events.h"
#include "effects.h"

struct event_header a_event_header;
struct fork_event a_fork_event;
struct exec_event a_exec_event;
struct exit_event a_exit_event;
struct kind_stats a_kind_stats;
struct tracked_info a_tracked_info;
struct tls_data_event a_tls_data_event;
struct tls_close_event a_tls_close_event;
struct tls_config a_tls_config;
struct lineage_config a_lineage_config;
struct mem_spike_event a_mem_spike_event;
struct oom_kill_event a_oom_kill_event;
struct control_config a_control_config;
struct exe_key a_exe_key;
struct tls_link_key a_tls_link_key;
struct tls_mapped_event a_tls_mapped_event;
struct file_event a_file_event;
struct net_event a_net_event;
struct dns_event a_dns_event;
struct effects_config a_effects_config;
