"""The cgroup2 mount option `favordynmods`, turned on for as long as vigil places tool calls.

Why: every `cgroup.procs` write takes the kernel's one global `cgroup_threadgroup_rwsem` for
writing, and when no move happened for a grace period that writer first waits a whole RCU grace
period (~5-17 ms measured here; bench/README.md). The placement warmer keeps that away only while
it knows a call is near: a session's first call, or one after a pause the model's intent did not
announce, still waits. `favordynmods` (Linux 6.0+) keeps the rwsem's readers on their slow path
for good, so a move never waits for a grace period; the price is paid by every fork and exit on
the host. That is the host's trade, so it is an explicit opt-in (`[control] favordynmods = true`):
vigil remounts the cgroup2 mount with it when it starts placing, and puts the mount back as it
found it when it stops. A kernel or mount that already has it is left alone. From Linux 6.18 on,
turning it on also switches `cgroup.procs` writes to a per-threadgroup lock for good (the kernel's
`cgroup_enable_per_threadgroup_rwsem`, a one-way switch: a remount without the option only clears
the flag and warns), so there vigil leaves it on when it stops, and says so.

The remount names every option the mount has: its cgroup2 ones (`nsdelegate`,
`memory_recursiveprot`, ...: the kernel applies a reconfiguration's options as a whole, leaving one
out turns it off) and its per-mount flags (`nosuid`, `nodev`, `noexec`, `relatime`: a remount
resets them to what it is given). util-linux `mount` does it, with `--options-mode ignore`: by
default it merges in the options the mount has now, which would keep `favordynmods` on when
putting the mount back (cgroup2 has no option to say it off).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from vigild.cgroups.base import CgroupError, CgroupUnavailable

log = logging.getLogger("vigild.cgroups")

OPTION = "favordynmods"
ONE_WAY_FROM = (6, 18)  # the kernel that made turning it on switch cgroup.procs writes for good
MOUNTINFO = Path("/proc/self/mountinfo")
_ACCESS = ("rw", "ro")  # per-superblock access, not a cgroup2 option: the remount keeps the mount's


def mount_options(mountinfo: str, mount: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The per-mount options and the cgroup2 superblock options of the mount at ``mount``, from
    /proc/self/mountinfo's text (the last mount there: the one in effect); raises
    CgroupUnavailable when no cgroup2 is mounted there."""
    target = str(mount)
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) > sep + 3 and fields[4] == target:
            found = fields[5], fields[sep + 3] if fields[sep + 1] == "cgroup2" else None
    if found is None or found[1] is None:
        raise CgroupUnavailable(f"no cgroup2 is mounted at {target}")
    return _split(found[0]), _split(found[1])


def super_options(mountinfo: str, mount: Path) -> tuple[str, ...]:
    """The cgroup2 superblock options of the mount at ``mount`` (see `mount_options`)."""
    return mount_options(mountinfo, mount)[1]


def remount_options(per_mount: tuple[str, ...], options: tuple[str, ...], favor: bool) -> str:
    """The `-o` of a remount that keeps ``per_mount`` and ``options`` and has `favordynmods` on or off."""
    kept = [option for option in options if option not in _ACCESS and option != OPTION]
    return ",".join(["remount", *per_mount, *kept, *([OPTION] if favor else [])])


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.18.44-fc``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    if match is None:
        raise CgroupUnavailable(f"cannot read the kernel version from {release!r}")
    return int(match[1]), int(match[2])


def _split(options: str) -> tuple[str, ...]:
    return tuple(option for option in options.split(",") if option)


class FavorDynmods:
    """`favordynmods` on one cgroup2 mount while vigil places calls; `restore` puts it back."""

    def __init__(self, mount: Path, changed: bool, release: str | None = None) -> None:
        self.mount = mount
        self.changed = changed  # False: it was on already, there is nothing to put back
        self.one_way = kernel_version(release or os.uname().release) >= ONE_WAY_FROM

    @classmethod
    def enable(cls, mount: Path, mountinfo: Path = MOUNTINFO) -> FavorDynmods:
        """Turn it on at ``mount``; raises CgroupError when the kernel refuses (before 6.0 it does
        not know the option) or the mount does not show it afterwards."""
        per_mount, before = mount_options(mountinfo.read_text(), mount)
        if OPTION in before:
            return cls(mount, changed=False)
        _remount(mount, remount_options(per_mount, before, favor=True))
        if OPTION not in super_options(mountinfo.read_text(), mount):
            raise CgroupUnavailable(f"{mount} does not show {OPTION} after the remount (a kernel before 6.0?)")
        log.info("cgroup2 at %s remounted with %s: tool-call moves skip the RCU grace period; "
                 "every fork and exit on the host takes the slower path until vigil stops", mount, OPTION)
        return cls(mount, changed=True)

    def restore(self, mountinfo: Path = MOUNTINFO) -> None:
        """Put the mount back as `enable` found it (nothing when it was on already); on a kernel
        where turning it on cannot be undone (6.18+), leave it on and say so."""
        if not self.changed:
            return
        if self.one_way:
            self.changed = False
            log.info("cgroup2 at %s keeps %s: on Linux %d.%d+ the kernel cannot turn it off again until a reboot",
                     self.mount, OPTION, *ONE_WAY_FROM)
            return
        per_mount, options = mount_options(mountinfo.read_text(), self.mount)
        _remount(self.mount, remount_options(per_mount, options, favor=False))
        if OPTION in super_options(mountinfo.read_text(), self.mount):
            raise CgroupError(f"{self.mount} still shows {OPTION} after the remount without it", self.mount)
        self.changed = False
        log.info("cgroup2 at %s remounted without %s again", self.mount, OPTION)


def _remount(mount: Path, options: str) -> None:
    try:
        proc = subprocess.run(["mount", "--options-mode", "ignore", "-o", options, str(mount)], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CgroupError(f"cannot run mount -o {options}: {exc}", mount) from exc
    if proc.returncode != 0:
        raise CgroupError(f"mount -o {options} failed: {proc.stderr.strip() or proc.returncode}", mount)


def open_favor_dynmods() -> FavorDynmods | None:
    """`favordynmods` on this host's cgroup2 mount, or None (said once in the log) where there is
    no cgroup2 mount or the kernel refuses: placement then works as before, a cold move waiting
    one grace period."""
    from vigild.cgroups.detect import detect

    host = detect()
    if host.v2 is None:
        log.warning("%s not set: no cgroup2 is mounted", OPTION)
        return None
    try:
        return FavorDynmods.enable(host.v2.mount)
    except CgroupError as exc:
        log.warning("%s not set: %s; a tool call placed after a pause waits one RCU grace period", OPTION, exc)
        return None
