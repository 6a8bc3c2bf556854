/* SPDX-License-Identifier: Apache-2.0 */
/* The syscall table of the effects sensor: x86-64 syscall numbers, the uapi constants the
 * handlers compare against, and which syscalls' exits are looked at.
 *
 * Part of effects.bpf.c, included by it only, after the headers before it in that file's order
 * (one object, one set of maps: the split is for reading, the compiled code is unchanged). */
#ifndef VIGIL_EFFECTS_SYSCALLS_H
#define VIGIL_EFFECTS_SYSCALLS_H

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define CLOSE_RANGE_CLOEXEC (1u << 2)
#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define S_IFMT 0170000
#define S_IFREG 0100000
#define S_IFSOCK 0140000
#define O_WRONLY 01
#define O_CREAT 0100
#define O_TRUNC 01000
#define FMODE_CREATED (1u << 20)
#define NAME_MAX 255
#define DNS_PORT 53
#define DNS_MMSG_MAX 4 /* datagrams of one sendmmsg looked at for DNS (glibc sends 2) */
#define MMSG_MAX 1024  /* UIO_MAXIOV: most messages one sendmmsg/recvmmsg moves */

#include "syscall_nr.bpf.h"

/* The syscalls whose exit effects_exit looks at; the rest leave after this switch. */
static __always_inline int interesting_exit(long nr)
{
	switch (nr) {
	case NR_read: case NR_write: case NR_open: case NR_pwrite64: case NR_readv: case NR_writev:
	case NR_sendfile: case NR_connect: case NR_accept: case NR_sendto: case NR_recvfrom: case NR_sendmsg:
	case NR_recvmsg: case NR_bind: case NR_rename: case NR_mkdir: case NR_rmdir: case NR_creat:
	case NR_unlink: case NR_chmod: case NR_fchmod: case NR_openat: case NR_mkdirat: case NR_unlinkat:
	case NR_renameat: case NR_fchmodat: case NR_splice: case NR_accept4: case NR_pwritev: case NR_recvmmsg:
	case NR_sendmmsg: case NR_renameat2: case NR_copy_file_range: case NR_pwritev2: case NR_openat2:
	case NR_fchmodat2:
		return 1;
	}
	return 0;
}

#endif /* VIGIL_EFFECTS_SYSCALLS_H */
