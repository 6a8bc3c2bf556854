"""Repeated read-only opens folded in the kernel (effects_folds.bpf.h), with the real lineage and
effects programs (root only): a thread's first open of a file is an event of its own, its later
read-only opens of it come as counted events (folded, `opens`), and summing `opens` gives every
open, whatever wrote the counts out (exit, exec, eviction, age, a change). Each test runs a small
Python program tracked from its first instruction and looks at its own session's events only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from vigild.bpf.effects_events import FileEffect, FileOpen, FileUnlink

from support.effects_tracer import EffectsTracer

pytestmark = pytest.mark.usefixtures("root")


@pytest.fixture(scope="module")
def folding() -> Any:
    tracer = EffectsTracer(fold_opens=True)
    yield tracer
    tracer.close()


def opens_of(events: list[FileEffect], path: Path) -> list[FileOpen]:
    return [e for e in events if isinstance(e, FileOpen) and e.path == str(path)]


REOPEN = """
import os, sys
for _ in range(int(sys.argv[2])):
    os.close(os.open(sys.argv[1], os.O_RDONLY))
"""


def test_repeated_opens_are_one_event_then_counts_that_survive_exit(folding: EffectsTracer, tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("{}")
    opens = opens_of(folding.python(REOPEN, str(target), "2000"), target)
    assert opens[0].opens == 1 and not opens[0].folded and opens[0].fd >= 0, "the first open is an event at once"
    folded = [e for e in opens if e.folded]
    assert folded, "2,000 opens of one file in a fraction of a second were not folded"
    assert sum(e.opens for e in opens) == 2000
    assert len(opens) < 20
    # nothing opened it after the last fold: the count went out when the process exited, named
    # from the first event (the kernel had no fd of it left to walk)
    assert folded[-1].reason == "exit" and not folded[-1].path_unknown
    for e in folded:
        assert e.read and not e.write and e.flags == opens[0].flags and e.ino == opens[0].ino
        assert opens[0].ts_ns <= e.first_ts_ns <= e.last_ts_ns <= e.ts_ns


def test_distinct_files_are_not_folded_and_each_keeps_its_own_count(folding: EffectsTracer, tmp_path: Path) -> None:
    files = [tmp_path / f"f{i}" for i in range(40)]
    for f in files:
        f.write_text("x")
    events = folding.python("""
        import os, sys
        for name in sys.argv[1:]:
            os.close(os.open(name, os.O_RDONLY))
        for _ in range(5):  # three files, interleaved: each its own slot and count
            for name in sys.argv[1:4]:
                os.close(os.open(name, os.O_RDONLY))
    """, *map(str, files))
    for i, f in enumerate(files):
        opens = opens_of(events, f)
        assert not opens[0].folded and opens[0].opens == 1
        assert sum(e.opens for e in opens) == (6 if i < 3 else 1), (f, opens)
    assert not any(e.folded for f in files[3:] for e in opens_of(events, f))


CYCLE = """
import os, sys
rounds, files = int(sys.argv[1]), sys.argv[2:]
for _ in range(rounds):
    for name in files:
        for _ in range(2):
            os.close(os.open(name, os.O_RDONLY))
"""


def test_more_files_than_slots_evicts_with_counts_and_loses_none(folding: EffectsTracer, tmp_path: Path) -> None:
    files = [tmp_path / f"g{i}" for i in range(100)]  # more than the 64 slots of a thread's table
    for f in files:
        f.write_text("x")
    events = folding.python(CYCLE, "3", *map(str, files))
    for f in files:
        assert sum(e.opens for e in opens_of(events, f)) == 6, f
    assert any(e.reason == "evicted" for f in files for e in opens_of(events, f) if e.folded)


def fold_set(path: Path) -> int:
    """The set of the thread's fold table the kernel puts a file in (effects_folds.bpf.h's
    fold_set, on the kernel's encoding of the device: major << 20 | minor)."""
    st = os.stat(path)
    dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    return (((st.st_ino ^ (dev << 40)) * 0x9E3779B97F4A7C15) & (2**64 - 1)) >> 60


def test_a_cycle_through_dozens_of_files_still_folds(folding: EffectsTracer, tmp_path: Path) -> None:
    """24 files in turn, 20 times, chosen so that no set of the table (4 slots each) draws more
    than 4 of them: every file keeps its slot, and the table folds them all. (Which files share a
    set depends on their inodes; a set that draws more evicts in turn.)"""
    files: list[Path] = []
    per_set: dict[int, int] = {}
    for i in range(400):
        f = tmp_path / f"c{i}"
        f.write_text("x")
        if per_set.get(fold_set(f), 0) < 4 and len(files) < 24:
            per_set[fold_set(f)] = per_set.get(fold_set(f), 0) + 1
            files.append(f)
    assert len(files) == 24
    events = folding.python(CYCLE, "20", *map(str, files))
    opens = [e for f in files for e in opens_of(events, f)]
    assert sum(e.opens for e in opens) == 24 * 20 * 2
    # The interpreter's own opens hold slots when the cycle starts; a file coming into a full set
    # takes the least recently opened way, so those leave first and no cycle file is ever evicted.
    assert [e for e in opens if e.reason == "evicted"] == []
    assert len(opens) < 24 * 20 * 2 / 4, f"{len(opens)} events for {24 * 20 * 2} opens: folding barely helped"


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_APPEND, os.O_RDONLY | os.O_TRUNC],
                         ids=["wronly", "rdwr", "append", "trunc"])
def test_an_open_that_may_change_the_file_is_never_folded(folding: EffectsTracer, tmp_path: Path, flags: int) -> None:
    target = tmp_path / "written"
    target.write_text("x")
    opens = opens_of(folding.python("""
        import os, sys
        for _ in range(50):
            os.close(os.open(sys.argv[1], int(sys.argv[2])))
    """, str(target), str(flags)), target)
    assert len(opens) == 50 and not any(e.folded for e in opens)
    assert all(e.flags & ~os.O_CLOEXEC == flags for e in opens)


def test_counts_go_out_before_a_change_and_at_age(folding: EffectsTracer, tmp_path: Path) -> None:
    target, victim = tmp_path / "read-me", tmp_path / "remove-me"
    target.write_text("x")
    victim.write_text("x")
    events = folding.python("""
        import os, sys, time
        for _ in range(100):
            os.close(os.open(sys.argv[1], os.O_RDONLY))
        os.unlink(sys.argv[2])
        os.close(os.open(sys.argv[1], os.O_RDONLY))
        time.sleep(1.2)
        os.close(os.open(sys.argv[1], os.O_RDONLY))  # the fold is over 1 s old: out with this open's path
        os.close(os.open(sys.argv[1], os.O_RDONLY))
    """, str(target), str(victim))
    unlink = next(i for i, e in enumerate(events) if isinstance(e, FileUnlink) and e.path == str(victim))
    before = [e for e in events[:unlink] if isinstance(e, FileOpen) and e.path == str(target)]
    assert sum(e.opens for e in before) == 100 and before[-1].reason == "change"
    after = opens_of(events[unlink + 1:], target)
    assert [(e.reason, e.opens) for e in after] == [("age", 2), ("exit", 1)]


def test_an_old_count_goes_out_at_the_next_open_of_another_file(folding: EffectsTracer, tmp_path: Path) -> None:
    target, other = tmp_path / "read-often", tmp_path / "read-later"
    target.write_text("x")
    other.write_text("x")
    events = folding.python("""
        import os, sys, time
        for _ in range(100):
            os.close(os.open(sys.argv[1], os.O_RDONLY))
        time.sleep(1.2)
        os.close(os.open(sys.argv[2], os.O_RDONLY))  # a file not in the table: old counts go out first
        time.sleep(0.5)
    """, str(target), str(other))
    first_other = next(i for i, e in enumerate(events) if isinstance(e, FileOpen) and e.path == str(other))
    before = opens_of(events[:first_other], target)
    assert [(e.folded, e.opens) for e in before] == [(False, 1), (True, 99)]
    assert before[-1].reason == "age" and not before[-1].path_unknown
    assert before[-1].ts_ns - before[-1].first_ts_ns > 1_000_000_000
    assert not opens_of(events[first_other:], target)


def test_threads_fold_apart_and_lose_no_count(folding: EffectsTracer, tmp_path: Path) -> None:
    target = tmp_path / "shared"
    target.write_text("x")
    opens = opens_of(folding.python("""
        import os, sys, threading
        def burst():
            for _ in range(3000):
                os.close(os.open(sys.argv[1], os.O_RDONLY))
        threads = [threading.Thread(target=burst) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    """, str(target)), target)
    assert sum(e.opens for e in opens) == 12000
    assert len(opens) < 100
    assert {e.tid for e in opens if not e.folded} == {e.tid for e in opens if e.folded}


def test_an_exec_writes_the_counts_out_under_the_old_program(folding: EffectsTracer, tmp_path: Path) -> None:
    target = tmp_path / "before-exec"
    target.write_text("x")
    opens = opens_of(folding.python("""
        import os, sys
        for _ in range(300):
            os.close(os.open(sys.argv[1], os.O_RDONLY))
        os.execv("/bin/true", ["true"])
    """, str(target)), target)
    assert sum(e.opens for e in opens) == 300
    assert opens[-1].folded and opens[-1].reason == "exec"


def test_fold_off_gives_one_event_per_open(tmp_path: Path) -> None:
    target = tmp_path / "each"
    target.write_text("x")
    tracer = EffectsTracer(fold_opens=False)
    try:
        assert tracer.effects.config.fold_opens == 0
        opens = opens_of(tracer.python(REOPEN, str(target), "500"), target)
    finally:
        tracer.close()
    assert len(opens) == 500 and not any(e.folded for e in opens) and all(e.opens == 1 for e in opens)
