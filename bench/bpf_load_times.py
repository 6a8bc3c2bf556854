"""Load+attach time of each shipped BPF object on the running kernel (as root).

Each object is loaded the way vigil loads it (through its sensor, against lineage's shared maps)
and attached, then closed; `--rounds` times, and the median, min and max are printed per object
with what was attached. Most of an object's time is the kernel's verifier, so the figures differ
by kernel: run it on each (shared/v2-guest/run-in-guest.sh -k 6.1 ...).

    /opt/vigild/bin/python bench/bpf_load_times.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Protocol

from vigild.bpf.control import PROGRAMS as CONTROL_PROGRAMS
from vigild.bpf.control import ControlSensor
from vigild.bpf.effects import EffectsSensor
from vigild.bpf.lineage import LineageSensor
from vigild.bpf.tls import TlsSensor


class Sensor(Protocol):
    def close(self) -> None: ...


def _lineage(_shared: LineageSensor) -> tuple[Sensor, int]:
    sensor = LineageSensor()
    return sensor, len(sensor.attached)


def _tls(shared: LineageSensor) -> tuple[Sensor, int]:
    sensor = TlsSensor(shared.shared_maps)
    sensor.attach_system_libraries()
    return sensor, sum(len(f.links) for f in sensor.files.values())


def _effects(shared: LineageSensor) -> tuple[Sensor, int]:
    sensor = EffectsSensor(shared.shared_maps)
    return sensor, len(sensor.attached)


def _control(shared: LineageSensor) -> tuple[Sensor, int]:
    sensor = ControlSensor(shared.shared_maps)
    return sensor, len(CONTROL_PROGRAMS) - len(sensor.refused)


OBJECTS: dict[str, Callable[[LineageSensor], tuple[Sensor, int]]] = {
    "lineage.bpf.o": _lineage,
    "tls.bpf.o": _tls,
    "effects.bpf.o": _effects,
    "control.bpf.o": _control,
}


def measure(load: Callable[[LineageSensor], tuple[Sensor, int]], shared: LineageSensor) -> tuple[float, int]:
    start = time.perf_counter()
    sensor, attached = load(shared)
    elapsed = time.perf_counter() - start
    sensor.close()
    return elapsed, attached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    shared = LineageSensor()
    try:
        print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs, {args.rounds} rounds")
        print(f"{'object':<16}{'median ms':>10}{'min ms':>9}{'max ms':>9}  attached")
        for name, load in OBJECTS.items():
            times, attached = [], 0
            for _ in range(args.rounds):
                elapsed, attached = measure(load, shared)
                times.append(elapsed * 1000)
            print(f"{name:<16}{statistics.median(times):>10.0f}{min(times):>9.0f}{max(times):>9.0f}  "
                  f"{attached} links")
    finally:
        shared.close()


if __name__ == "__main__":
    main()
