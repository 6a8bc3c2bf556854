"""Which container a traced process runs in, read from the host: ``/proc/PID/cgroup`` parsed by
``vigild.correlate.containers``, completed with the names the runtimes' state on the host tells
(kubelet's pod log directories, containerd/CRI-O OCI bundles, podman's and docker's stores).

Answers are cached per cgroup path: a session's root is looked up once, and the many processes of
one container cost one parse. State files that cannot be read leave the names unknown (said in the
debug log); they never fail the lookup, since the id and runtime already come from the path.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

from vigild.correlate.containers import (
    Container,
    name_from_docker_config,
    name_from_podman_containers,
    names_from_oci_annotations,
    parse_proc_cgroup,
    pod_from_log_dirs,
)

log = logging.getLogger(__name__)

CACHED = 4096  # distinct cgroup paths remembered; a host runs far fewer containers at once

# Where runtimes keep state, relative to the host's root (vigild in a DaemonSet sees the host at
# a mount point, hence the root prefix).
POD_LOGS = "var/log/pods"
OCI_BUNDLES = ("run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json",
               "run/containers/storage/overlay-containers/{id}/userdata/config.json",
               "var/lib/containers/storage/overlay-containers/{id}/userdata/config.json")
PODMAN_STORES = ("var/lib/containers/storage/overlay-containers/containers.json",
                 "var/lib/containers/storage/vfs-containers/containers.json")
DOCKER_CONFIG = "var/lib/docker/containers/{id}/config.v2.json"


class ContainerResolver:
    """pid -> Container (or None: not in a container, or gone before it was looked up: a root that
    exits before user space handles its exec has no /proc/PID/cgroup left to read)."""

    def __init__(self, host_root: Path = Path("/")) -> None:
        self.host_root = host_root
        self._by_cgroup: OrderedDict[str, Container | None] = OrderedDict()

    def of_pid(self, pid: int) -> Container | None:
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        return self.of_proc_cgroup(text)

    def of_proc_cgroup(self, text: str) -> Container | None:
        key = text.strip()
        if key in self._by_cgroup:
            self._by_cgroup.move_to_end(key)
            return self._by_cgroup[key]
        container = parse_proc_cgroup(text)
        if container is not None:
            container = self._named(container)
        self._by_cgroup[key] = container
        while len(self._by_cgroup) > CACHED:
            self._by_cgroup.popitem(last=False)
        return container

    def _named(self, c: Container) -> Container:
        if c.pod_uid is not None:
            try:
                pod = pod_from_log_dirs(os.listdir(self.host_root / POD_LOGS), c.pod_uid)
            except OSError as exc:
                log.debug("no kubelet pod logs to name pod %s: %s", c.pod_uid, exc)
                pod = None
            if pod is not None:
                c = c.with_names(pod_namespace=pod[0], pod_name=pod[1])
        for template in OCI_BUNDLES:
            text = self._read(template.format(id=c.id))
            if text is not None:
                try:
                    c = c.with_names(*names_from_oci_annotations(text))
                except ValueError as exc:
                    log.debug("unreadable OCI bundle of %s: %s", c.id, exc)
        if c.name is None and c.runtime == "podman":
            for store in PODMAN_STORES:
                if (text := self._read(store)) is not None:
                    try:
                        c = c.with_names(name_from_podman_containers(text, c.id))
                    except ValueError as exc:
                        log.debug("unreadable podman store %s: %s", store, exc)
        if c.name is None and c.runtime == "docker" and (text := self._read(DOCKER_CONFIG.format(id=c.id))):
            try:
                c = c.with_names(name_from_docker_config(text))
            except ValueError as exc:
                log.debug("unreadable docker config of %s: %s", c.id, exc)
        if c.name is None and c.runtime in ("systemd-nspawn", "lxc"):
            c = c.with_names(c.id)  # their id is the machine's name
        return c

    def _read(self, relative: str) -> str | None:
        try:
            return (self.host_root / relative).read_text()
        except OSError:
            return None
