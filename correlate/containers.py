"""Container identity from a cgroup path and the container runtimes' conventions.

A process in a container carries no container id of its own; the cgroup path the runtime put it in
does. Every runtime names its cgroups its own way, on the systemd driver (``.scope`` units under a
slice) and on the cgroupfs driver (plain directories), on v1 and v2 alike:

- docker: ``system.slice/docker-<id>.scope``, ``/docker/<id>``
- podman: ``machine.slice/libpod-<id>.scope[/container]``, ``/libpod_parent/libpod-<id>``,
  rootless ``user@1000.service/user.slice/libpod-<id>.scope``
- containerd (CRI and nerdctl): ``cri-containerd-<id>.scope``, ``nerdctl-<id>.scope``
- CRI-O: ``crio-<id>.scope``
- Kubernetes pods: ``kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/...``
  (systemd escapes the uid's ``-`` as ``_``) or ``/kubepods/<qos>/pod<uid>/<id>`` (cgroupfs)
- systemd-nspawn: ``machine.slice/systemd-nspawn@<name>.service[/payload]``,
  ``machine.slice/machine-<name>.scope``
- LXC: ``/lxc.payload.<name>``, ``/lxc/<name>``

A runtime's monitor (``libpod-conmon-<id>.scope``, ``crio-conmon-<id>.scope``) is not the
container and is not reported as one. The pod's name and namespace are not in the path; the
kubelet's log directories and the runtimes' state files (see :func:`pod_from_log_dirs`,
:func:`names_from_oci_annotations`) tell them. Everything here is pure; reading the host is
``vigild.daemon.containers``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from typing import Any

_ID = r"[0-9a-f]{64}"
_SCOPE_RUNTIMES = {"docker": "docker", "libpod": "podman", "cri-containerd": "containerd",
                   "nerdctl": "containerd", "crio": "cri-o"}
_SCOPE = re.compile(rf"^(docker|libpod|cri-containerd|nerdctl|crio)-({_ID})\.scope$")
_PLAIN_PARENTS = {"docker": "docker"}
_LIBPOD_PLAIN = re.compile(rf"^libpod-({_ID})$")
_BARE_ID = re.compile(rf"^({_ID})$")
_POD_SLICE = re.compile(r"^kubepods(?:-[a-z]+)?-pod([0-9a-f_]{36})\.slice$")
_POD_DIR = re.compile(r"^pod([0-9a-f-]{36})$")
_NSPAWN_SERVICE = re.compile(r"^systemd-nspawn@(.+)\.service$")
_MACHINE_SCOPE = re.compile(r"^machine-(.+)\.scope$")
_LXC_PAYLOAD = re.compile(r"^lxc\.payload\.(.+)$")
_LIBVIRT_VM = "qemu-"  # machined's name for libvirt's VMs: machines, not containers


@dataclass(frozen=True)
class Container:
    """Who a process belongs to. ``id`` is the runtime's container id (the machine name for
    systemd-nspawn and LXC); ``cgroup`` the container's own cgroup path, the subtree in which its
    processes (and per-call groups placed inside it) live."""

    id: str
    runtime: str
    cgroup: str
    name: str | None = None
    pod_uid: str | None = None
    pod_name: str | None = None
    pod_namespace: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def with_names(self, name: str | None = None, pod_name: str | None = None,
                   pod_namespace: str | None = None) -> Container:
        """The same container with the names the host's state tells (what is already known stays)."""
        return replace(self, name=self.name or name, pod_name=self.pod_name or pod_name,
                       pod_namespace=self.pod_namespace or pod_namespace)


def container_label(d: dict[str, Any] | None) -> str:
    """A session's container in a few words, for tables and trees: ``podman 1a2b3c4d5e6f web``,
    ``containerd 1a2b3c4d5e6f agent (pod ci/runner-7)``; ``-`` outside containers."""
    if not d:
        return "-"
    words = [d.get("runtime") or "?", (d.get("id") or "?")[:12]]
    if d.get("name"):
        words.append(d["name"])
    if d.get("pod_name") or d.get("pod_uid"):
        words.append(f"(pod {d.get('pod_namespace') or '?'}/{d.get('pod_name') or d.get('pod_uid')})")
    return " ".join(words)


RESOURCE_KEYS = {"id": "container.id", "runtime": "container.runtime", "name": "container.name",
                 "pod_uid": "k8s.pod.uid", "pod_name": "k8s.pod.name", "pod_namespace": "k8s.namespace.name"}


def resource_attributes(d: dict[str, Any] | None) -> dict[str, str]:
    """A session's container as OpenTelemetry resource attributes (semantic conventions'
    ``container.*`` and ``k8s.*``), so collectors' k8s processors and backends group by them."""
    return {RESOURCE_KEYS[k]: v for k, v in (d or {}).items() if k in RESOURCE_KEYS and isinstance(v, str)}


def _unescape_systemd(text: str) -> str:
    r"""systemd's unit-name escaping (``\x2d`` for ``-``) undone, for machine names."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _pod_uid(text: str) -> str:
    """A pod uid in its canonical dashed form (systemd slices write ``_`` for ``-``)."""
    return text.replace("_", "-")


def parse_cgroup_path(path: str) -> Container | None:
    """The container whose cgroup `path` is (or is below), None for a path no runtime made.

    The path is as ``/proc/PID/cgroup`` shows it in the host's cgroup namespace; leading ``/..``
    components (a reader in its own cgroup namespace) are skipped, since only the runtime's own
    components carry meaning. The innermost container wins (a container in a pod, a container in
    a container)."""
    parts = [p for p in path.split("/") if p and p != ".."]
    found: Container | None = None
    pod_uid: str | None = None
    for i, part in enumerate(parts):
        prefix = "/" + "/".join(parts[:i + 1])
        parent = parts[i - 1] if i else ""
        if m := _POD_SLICE.match(part):
            pod_uid = _pod_uid(m.group(1))
            continue
        if parent in ("kubepods", "burstable", "besteffort", "guaranteed") and (m := _POD_DIR.match(part)):
            pod_uid = _pod_uid(m.group(1))
            continue
        if m := _SCOPE.match(part):
            found = Container(m.group(2), _SCOPE_RUNTIMES[m.group(1)], prefix, pod_uid=pod_uid)
        elif m := _LIBPOD_PLAIN.match(part):  # cgroupfs driver, below libpod_parent or --cgroup-parent
            found = Container(m.group(1), "podman", prefix, pod_uid=pod_uid)
        elif parent in _PLAIN_PARENTS and (m := _BARE_ID.match(part)):
            found = Container(m.group(1), _PLAIN_PARENTS[parent], prefix)
        elif pod_uid is not None and parent.startswith("pod") and (m := _BARE_ID.match(part)):
            # cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>; the runtime is not in the path
            found = Container(m.group(1), "kubernetes", prefix, pod_uid=pod_uid)
        elif parent == "machine.slice" and (m := _NSPAWN_SERVICE.match(part)):
            found = Container(_unescape_systemd(m.group(1)), "systemd-nspawn", prefix)
        elif parent == "machine.slice" and (m := _MACHINE_SCOPE.match(part)):
            name = _unescape_systemd(m.group(1))
            if name.startswith("lxc-"):  # libvirt's LXC driver registers its containers as lxc-<pid>-<name>
                found = Container(name, "libvirt-lxc", prefix)
            elif not name.startswith(_LIBVIRT_VM):
                found = Container(name, "systemd-nspawn", prefix)
        elif i == 0 and (m := _LXC_PAYLOAD.match(part)):
            found = Container(m.group(1), "lxc", prefix)
        elif parent == "lxc" and i == 1:
            found = Container(part, "lxc", prefix)
    return found


def parse_proc_cgroup(text: str) -> Container | None:
    """The container of a process from its ``/proc/PID/cgroup``: the v2 line first (``0::``),
    then the v1 hierarchies (on a hybrid host a runtime may only have made v1 groups)."""
    entries = [line.split(":", 2) for line in text.splitlines() if line.count(":") >= 2]
    entries.sort(key=lambda e: e[0] != "0")
    for _, _, path in entries:
        if (container := parse_cgroup_path(path)) is not None:
            return container
    return None


_POD_LOG_DIR = re.compile(r"^([a-z0-9][-a-z0-9]*)_([a-z0-9][-a-z0-9.]*)_([0-9a-f-]{36})$")


def pod_from_log_dirs(names: list[str], pod_uid: str) -> tuple[str, str] | None:
    """(namespace, pod name) of `pod_uid` from the kubelet's ``/var/log/pods`` directory names,
    ``<namespace>_<pod name>_<uid>`` (the kubelet's layout since 1.14). None when no entry has it."""
    for name in names:
        m = _POD_LOG_DIR.match(name)
        if m and m.group(3) == pod_uid:
            return m.group(1), m.group(2)
    return None


_ANNOTATIONS = (  # (container name, pod name, pod namespace) keys, per runtime's OCI bundle
    ("io.kubernetes.cri.container-name", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.sandbox-namespace"),
    ("io.kubernetes.container.name", "io.kubernetes.pod.name", "io.kubernetes.pod.namespace"),
)


def names_from_oci_annotations(config_json: str) -> tuple[str | None, str | None, str | None]:
    """(container name, pod name, pod namespace) from an OCI bundle's ``config.json`` written by
    containerd's CRI plugin or CRI-O. Unknown shapes give Nones; bad JSON raises ValueError."""
    doc = json.loads(config_json)
    annotations = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(annotations, dict):
        return None, None, None
    for keys in _ANNOTATIONS:
        values = [annotations.get(k) if isinstance(annotations.get(k), str) else None for k in keys]
        if any(values):
            return values[0], values[1], values[2]
    return None, None, None


def name_from_podman_containers(containers_json: str, container_id: str) -> str | None:
    """A podman container's name from containers/storage's ``containers.json`` (a list of
    ``{"id", "names"}``). None when the id is not there; bad JSON raises ValueError."""
    doc = json.loads(containers_json)
    for entry in doc if isinstance(doc, list) else []:
        if isinstance(entry, dict) and entry.get("id") == container_id:
            names = entry.get("names")
            return names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    return None


def name_from_docker_config(config_json: str) -> str | None:
    """A docker container's name from ``/var/lib/docker/containers/<id>/config.v2.json``."""
    doc = json.loads(config_json)
    name = doc.get("Name") if isinstance(doc, dict) else None
    if not isinstance(name, str):
        return None
    return name.lstrip("/") or None
