"""The cgroup2 mount option `favordynmods`, turned on for as long as vigil places tool calls.

Why: every `cgroup.procs` write takes the kernel's one global `cgroup_threadgroup_rwsem` for
writing, and when no move happened for a grace period that writer first waits a whole RCU grace
period (~5-17 ms measured here; bench/README.md). The placement warmer keeps that away only while
it knows a call is near: a session's first call, or one after a pause the model's intent did not
announce, still waits. `favordynmods` (Linux 6.0+) keeps the rwsem's readers on their slow path
for good, so a move never waits for a grace period; the price is paid by every fork and exit on
the host. That is the host's trade, so it is an explicit opt-in (`[control] favordynmods = true`):
vigil remounts the cgroup2 mount with it when it starts placing, and puts the mount back as it
found it when it stops. A kernel or mount that already has it is left alone.

The remount carries the mount's other cgroup2 options (`nsdelegate`, `memory_recursiveprot`, ...):
the kernel applies a reconfiguration's options as a whole, so leaving one out would turn it off.
util-linux `mount` does the remount (it keeps the per-mount flags such as nosuid, which a bare
mount(2) with MS_REMOUNT would reset).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from vigild.cgroups.base import CgroupError, CgroupUnavailable

log = logging.getLogger("vigild.cgroups")

OPTION = "favordynmods"
MOUNTINFO = Path("/proc/self/mountinfo")
_ACCESS = ("rw", "ro")  # per-superblock access, not a cgroup2 option: the remount keeps the mount's


def super_options(mountinfo: str, mount: Path) -> tuple[str, ...]:
    """The cgroup2 superblock options of the mount at ``mount``, from /proc/self/mountinfo's text
    (the field after the source); raises CgroupUnavailable when no cgroup2 is mounted there."""
    target = str(mount)
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) > sep + 3 and fields[4] == target and fields[sep + 1] == "cgroup2":
            return tuple(option for option in fields[sep + 3].split(",") if option)
    raise CgroupUnavailable(f"no cgroup2 is mounted at {target}")


def remount_options(options: tuple[str, ...], favor: bool) -> str:
    """The `-o` of a remount that keeps ``options`` and has `favordynmods` on or off."""
    kept = [option for option in options if option not in _ACCESS and option != OPTION]
    return ",".join(["remount", *kept, *([OPTION] if favor else [])])


class FavorDynmods:
    """`favordynmods` on one cgroup2 mount while vigil places calls; `restore` puts it back."""

    def __init__(self, mount: Path, changed: bool) -> None:
        self.mount = mount
        self.changed = changed  # False: it was on already, there is nothing to put back

    @classmethod
    def enable(cls, mount: Path, mountinfo: Path = MOUNTINFO) -> FavorDynmods:
        """Turn it on at ``mount``; raises CgroupError when the kernel refuses (before 6.0 it does
        not know the option) or the mount does not show it afterwards."""
        before = super_options(mountinfo.read_text(), mount)
        if OPTION in before:
            return cls(mount, changed=False)
        _remount(mount, remount_options(before, favor=True))
        if OPTION not in super_options(mountinfo.read_text(), mount):
            raise CgroupUnavailable(f"{mount} does not show {OPTION} after the remount (a kernel before 6.0?)")
        log.info("cgroup2 at %s remounted with %s: tool-call moves skip the RCU grace period; "
                 "every fork and exit on the host takes the slower path until vigil stops", mount, OPTION)
        return cls(mount, changed=True)

    def restore(self, mountinfo: Path = MOUNTINFO) -> None:
        """Put the mount back as `enable` found it (nothing when it was on already)."""
        if not self.changed:
            return
        options = super_options(mountinfo.read_text(), self.mount)
        _remount(self.mount, remount_options(options, favor=False))
        self.changed = False
        log.info("cgroup2 at %s remounted without %s again", self.mount, OPTION)


def _remount(mount: Path, options: str) -> None:
    try:
        proc = subprocess.run(["mount", "-o", options, str(mount)], capture_output=True, text=True, timeout=30,
                              check=False)
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
