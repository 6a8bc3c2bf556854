/* SPDX-License-Identifier: Apache-2.0 */
/* x86-64 syscall numbers, for the programs that tell syscalls apart by number: the effects sensor
 * (effects_syscalls.bpf.h) and the plain-HTTP sensor's exit program (sockdata.bpf.c), which
 * serves several syscalls' tracepoints. Their loaders refuse other architectures. */
#ifndef VIGIL_SYSCALL_NR_H
#define VIGIL_SYSCALL_NR_H

#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_dup2 33
#define NR_sendfile 40
#define NR_connect 42
#define NR_accept 43
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_bind 49
#define NR_execve 59
#define NR_rename 82
#define NR_mkdir 83
#define NR_rmdir 84
#define NR_creat 85
#define NR_unlink 87
#define NR_chmod 90
#define NR_fchmod 91
#define NR_openat 257
#define NR_mkdirat 258
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_fchmodat 268
#define NR_splice 275
#define NR_accept4 288
#define NR_dup3 292
#define NR_pwritev 296
#define NR_recvmmsg 299
#define NR_sendmmsg 307
#define NR_renameat2 316
#define NR_execveat 322
#define NR_copy_file_range 326
#define NR_pwritev2 328
#define NR_close_range 436
#define NR_openat2 437
#define NR_fchmodat2 452

#endif /* VIGIL_SYSCALL_NR_H */
