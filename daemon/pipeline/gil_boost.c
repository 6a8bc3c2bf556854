// SPDX-License-Identifier: Apache-2.0
/*
 * Priority inheritance by hand for the held lane (daemon/pipeline/gil_boost.py says how it is used).
 *
 * The lane's real-time thread, woken by the held ring, needs the GIL to place the held process.
 * Under a flood of effects the GIL is held by the pipeline thread, which a normal task may have
 * preempted: the lane then waits the rest of that task's slice (3-7.5 ms measured, bench/README.md)
 * although its own wakeup took 0.1 ms. Raising the holder to real time lets it run at once, reach
 * the interpreter's drop request and hand the GIL over. The raise has to happen between the
 * ring's wakeup and the lane's request for the GIL, and Python code cannot run there (it needs the
 * GIL it is waiting for), so it is this compiled function, called through ctypes with the GIL
 * released. Undoing the raise is the caller's job once it holds the GIL (vigil_restore).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_EVENTS 8

/* Whether tid is a thread of this process right now: a tid of a thread that ended may already
 * name another process's thread, which must never be raised. */
static int ours(int tid)
{
	return syscall(SYS_tgkill, getpid(), tid, 0) == 0;
}

/* Raise one thread to SCHED_FIFO at prio, unless it already runs at that real-time priority or
 * above (or under a policy this must not change). *policy and *prio get what it ran at before,
 * *policy -1 when it was left alone. Returns 0 or an errno. */
static int raise_one(int tid, int prio, int *policy, int *old_prio)
{
	struct sched_param param;
	int current;

	*policy = -1;
	if (!ours(tid))
		return ESRCH;
	current = sched_getscheduler(tid);
	if (current < 0 || sched_getparam(tid, &param) < 0)
		return errno;
	switch (current & ~SCHED_RESET_ON_FORK) {
	case SCHED_OTHER:
	case SCHED_BATCH:
	case SCHED_IDLE:
		break;
	case SCHED_FIFO:
	case SCHED_RR:
		if (param.sched_priority >= prio)
			return 0;
		break;
	default: /* SCHED_DEADLINE, or a policy newer than this file: not ours to change */
		return 0;
	}
	*old_prio = param.sched_priority;
	param.sched_priority = prio;
	/* SCHED_RESET_ON_FORK: nothing the raised thread starts inherits real time. */
	if (sched_setscheduler(tid, SCHED_FIFO | SCHED_RESET_ON_FORK, &param) < 0)
		return errno;
	*policy = current;
	return 0;
}

/*
 * Wait up to timeout_ms on the epoll set epfd. When one of its descriptors other than wake_fd is
 * ready (a ring has records), raise each of the n threads in tids as raise_one says, writing
 * policies[i], prios[i] and errs[i] (0 or the errno of a refusal). A ready wake_fd (an eventfd)
 * is read, so it does not stay ready.
 * Returns how many descriptors were ready other than wake_fd (0: timeout or only woken), or
 * -errno when the wait failed (-EINTR included: the caller simply waits again).
 */
int vigil_wait_and_raise(int epfd, int wake_fd, int timeout_ms, int n, const int *tids, int prio,
			 int *policies, int *prios, int *errs)
{
	struct epoll_event events[MAX_EVENTS];
	uint64_t count;
	int ready, records = 0, i;

	for (i = 0; i < n; i++) {
		policies[i] = -1;
		errs[i] = 0;
	}
	ready = epoll_wait(epfd, events, MAX_EVENTS, timeout_ms);
	if (ready < 0)
		return -errno;
	for (i = 0; i < ready; i++) {
		if (events[i].data.fd == wake_fd) {
			if (read(wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
				return -errno;
		} else {
			records++;
		}
	}
	if (records)
		for (i = 0; i < n; i++)
			errs[i] = raise_one(tids[i], prio, &policies[i], &prios[i]);
	return records;
}

/*
 * Put back the threads vigil_wait_and_raise raised (policies[i] >= 0) at their own policy and
 * priority; errs[i] gets 0 or the errno. A normal policy keeps its nice value (the kernel keeps it
 * across sched_setscheduler). Returns how many could not be put back.
 */
int vigil_restore(int n, const int *tids, const int *policies, const int *prios, int *errs)
{
	struct sched_param param;
	int failed = 0, i;

	for (i = 0; i < n; i++) {
		errs[i] = 0;
		if (policies[i] < 0)
			continue;
		if (!ours(tids[i]))
			continue; /* it ended: nothing is left raised */
		param.sched_priority = prios[i];
		if (sched_setscheduler(tids[i], policies[i], &param) < 0) {
			errs[i] = errno;
			failed++;
		}
	}
	return failed;
}
