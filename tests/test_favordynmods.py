"""`[control] favordynmods = true` (cgroups/dynmods.py): the cgroup2 mount remounted with
`favordynmods` while vigil places tool calls, so a move never waits an RCU grace period, and put
back as it was found when vigil stops.

The option is host-wide, so the tests that remount run only where the whole cgroup tree is a test
machine's own: the pure cgroup v2 guests (`.ci/run`). On a hybrid host they are skipped, even under
VIGIL_REQUIRE_BPF=1: remounting the host's cgroup2 would change every other process's forks and
exits for the length of the test. The options' parsing and composition are pure and run anywhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.helpers import VIGIL, events_and_output, run_own_group
from support.run_cgroups import leftovers

from vigild.cgroups import CgroupUnavailable, detect
from vigild.cgroups.dynmods import (MOUNTINFO, OPTION, FavorDynmods, kernel_version, mount_options, remount_options,
                                    super_options)
from vigild.daemon.config import ConfigError, load

PURE_V2 = ("29 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
           "rw,nsdelegate,memory_recursiveprot\n")
HYBRID = ("24 21 0:21 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:5 - tmpfs tmpfs ro,mode=755\n"
          "25 24 0:22 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:6 - cgroup2 cgroup2 rw\n"
          "27 24 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:8 - cgroup cgroup rw,memory\n")


def test_the_options_are_read_from_mountinfo() -> None:
    assert mount_options(PURE_V2, Path("/sys/fs/cgroup")) == (
        ("rw", "nosuid", "nodev", "noexec", "relatime"), ("rw", "nsdelegate", "memory_recursiveprot"))
    assert super_options(HYBRID, Path("/sys/fs/cgroup/unified")) == ("rw",)


def test_the_last_mount_on_a_path_is_the_one_in_effect() -> None:
    over = PURE_V2 + "40 29 0:30 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw\n"
    with pytest.raises(CgroupUnavailable, match="no cgroup2"):
        super_options(over, Path("/sys/fs/cgroup"))


def test_a_path_without_cgroup2_is_refused() -> None:
    with pytest.raises(CgroupUnavailable, match="no cgroup2 is mounted at /sys/fs/cgroup/memory"):
        super_options(HYBRID, Path("/sys/fs/cgroup/memory"))  # a v1 hierarchy, not cgroup2
    with pytest.raises(CgroupUnavailable, match="no cgroup2"):
        super_options(HYBRID, Path("/sys/fs/cgroup"))  # the tmpfs above them


def test_the_remount_keeps_the_other_options() -> None:
    """The kernel applies a reconfiguration's cgroup2 options as a whole (dropping nsdelegate
    from the remount would turn it off) and resets the per-mount flags to the remount's."""
    per_mount = ("rw", "nosuid", "nodev", "noexec", "relatime")
    options = ("rw", "nsdelegate", "memory_recursiveprot")
    assert remount_options(per_mount, options, favor=True) == \
        "remount,rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot,favordynmods"
    assert remount_options(per_mount, (*options, OPTION), favor=False) == \
        "remount,rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot"
    assert remount_options(("rw",), ("rw",), favor=True) == "remount,rw,favordynmods"


def test_from_6_18_on_it_is_left_on(caplog: pytest.LogCaptureFixture) -> None:
    """Linux 6.18 made turning it on a one-way switch (per-threadgroup locking for good): there
    restore must not remount (it would only half undo it), and says why."""
    assert kernel_version("6.18.44-fc-v1045") == (6, 18) and kernel_version("6.1.0-57-amd64") == (6, 1)
    with pytest.raises(CgroupUnavailable, match="kernel version"):
        kernel_version("unknown")
    kept = FavorDynmods(Path("/nonexistent/cgroup2"), changed=True, release="6.18.44")
    with caplog.at_level("INFO", logger="vigild.cgroups"):
        kept.restore()  # a remount here would fail: there is no such mount
    assert not kept.changed and "cannot turn it off again" in caplog.text
    assert not FavorDynmods(Path("/"), changed=True, release="6.12.117+deb12-amd64").one_way


def test_the_config_knob_is_a_bool(tmp_path: Path) -> None:
    config = tmp_path / "vigild.toml"
    config.write_text("[control]\nfavordynmods = true\n")
    assert load(config).favordynmods is True
    config.write_text('[control]\nfavordynmods = "on"\n')
    with pytest.raises(ConfigError, match="favordynmods"):
        load(config)


# ---- on a machine whose cgroup tree is the test's own (the v2 guests) ------------------------------

@pytest.fixture
def own_cgroup2(root: None) -> Iterator[Path]:
    """The cgroup2 mount, on a pure v2 machine only; whatever a test left, the mount's options are
    put back as found."""
    host = detect()
    if host.mode != "v2" or host.v2 is None:
        pytest.skip(f"cgroup mode {host.mode}: favordynmods is host-wide, so it is only changed on the pure v2 "
                    "test guests (.ci/run), never on a shared host; skipped even under VIGIL_REQUIRE_BPF=1")
    if FavorDynmods(host.v2.mount, changed=False).one_way:
        pytest.skip("on Linux 6.18+ turning favordynmods on cannot be undone before a reboot: not on a test machine")
    before = super_options(MOUNTINFO.read_text(), host.v2.mount)
    if OPTION in before:
        pytest.skip("this kernel mounts cgroup2 with favordynmods already (CONFIG_CGROUP_FAVOR_DYNMODS)")
    yield host.v2.mount
    if super_options(MOUNTINFO.read_text(), host.v2.mount) != before:
        FavorDynmods(host.v2.mount, changed=True).restore()


def test_enable_then_restore_on_the_real_mount(own_cgroup2: Path) -> None:
    before = mount_options(MOUNTINFO.read_text(), own_cgroup2)
    favoring = FavorDynmods.enable(own_cgroup2)
    per_mount, during = mount_options(MOUNTINFO.read_text(), own_cgroup2)
    assert favoring.changed and OPTION in during and set(before[1]) <= set(during), (before, during)
    assert per_mount == before[0]
    again = FavorDynmods.enable(own_cgroup2)  # on already: nothing to put back for this one
    assert not again.changed
    again.restore()
    assert OPTION in super_options(MOUNTINFO.read_text(), own_cgroup2)
    favoring.restore()
    assert mount_options(MOUNTINFO.read_text(), own_cgroup2) == before


def test_vigil_run_favours_dynmods_while_it_places(own_cgroup2: Path, tmp_path: Path) -> None:
    """The agent's tool calls see the option on the mount; after vigil's end it is gone, and no
    placement warmer ran (nothing left for it to do)."""
    config = tmp_path / "vigild.toml"
    config.write_text("[control]\nfavordynmods = true\n")
    seen = tmp_path / "seen"
    agent = ("import os\n"
             "os.posix_spawn('/bin/true', ['/bin/true'], os.environ); os.wait()\n"
             f"open({str(seen)!r}, 'w').write(open('/proc/self/mountinfo').read())\n")
    before = super_options(MOUNTINFO.read_text(), own_cgroup2)
    ran = run_own_group([*VIGIL, "-v", "run", "-o", "json", "--no-tls", "--config", str(config), "--",
                         sys.executable, "-c", agent], timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert not leftovers(ran.pid), leftovers(ran.pid)
    events, _ = events_and_output(ran.stdout, "")
    starts = [e for e in events if e["type"] == "tool_start"]
    assert len(starts) == 1 and starts[0]["cgroup"] and starts[0]["placement_error"] is None, starts
    assert OPTION in super_options(seen.read_text(), own_cgroup2)
    assert "remounted with favordynmods" in ran.stderr and "placement warmer:" not in ran.stderr, ran.stderr[-2000:]
    assert super_options(MOUNTINFO.read_text(), own_cgroup2) == before
