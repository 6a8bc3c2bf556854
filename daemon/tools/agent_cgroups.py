"""Where vigild puts a tool call's group: in the agent's own cgroup when that cgroup is delegated,
so the limits above the agent (its container's, its unit's) stay in force above its tool calls.

`vigil run` needs none of this: the agent is its child and lives in ``<parent>/agent/``, beside its
calls, below vigil's own cgroup. vigild finds agents wherever they run. Moving an agent's tool into
vigild's own subtree would lift its container's limits, so on cgroup v2 a call goes into
``<agent's cgroup>/vigil-run-<vigild's pid>/tools/call-<id>`` when systemd marked that cgroup (or
one above it) delegated, as it does for units with ``Delegate=yes`` (container scopes of docker,
podman and containerd with the systemd cgroup driver, ``systemd-run -p Delegate=yes``), or when
the cgroup is a container's (``vigild.daemon.tools.container_placement``; on v1 hierarchies too).
Otherwise the call goes below vigild's own cgroup, and a warning says so once per agent cgroup.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vigild.cgroups import LEAF, CgroupBackend, CgroupError, HostCgroups, V2Backend, delegated
from vigild.correlate.tool_calls import ToolCall
from vigild.daemon.tools.container_placement import NotInContainer, is_container_cgroup, v1_container_tree
from vigild.daemon.tools.control_loop import PARENT_PREFIX

log = logging.getLogger("vigild.control")


class AgentCgroups:
    """Chooses, per tool call, the backend whose tree receives it, and removes an agent's tree
    once its last call ended."""

    def __init__(self, home: CgroupBackend, host: HostCgroups, parent_name: str) -> None:
        self.home = home
        self.host = host
        self.parent_name = parent_name
        self.trees: dict[Path, CgroupBackend] = {}
        self.fallbacks: dict[str, str] = {}  # agent cgroup (or "cgroup v1") -> why its calls run below vigild's

    def backend_for(self, call: ToolCall) -> CgroupBackend:
        """The agent's own tree when it may have one, else vigild's (with the line that says so)."""
        v2 = self.host.v2
        memory = self.host.hierarchy_for("memory")
        if v2 is None or memory is None or memory.version != 2:
            return self._container_tree_v1(call)
        agent_dir = self._cgroup_of(call.pid, v2.mount)
        if agent_dir is None or (isinstance(self.home, V2Backend) and agent_dir == self.home.enclosing):
            return self.home
        tree = self.trees.get(agent_dir)
        if tree is not None:
            return tree
        if not delegated(agent_dir, v2.mount) and not is_container_cgroup(agent_dir, v2.mount):
            self._fallback(str(agent_dir), f"it is not delegated (no Delegate=yes on its unit), so the limits of "
                           f"{agent_dir} do not apply to them")
            return self.home
        return self._set_up(agent_dir, V2Backend(agent_dir / self.parent_name, self.home.controllers))

    def _container_tree_v1(self, call: ToolCall) -> CgroupBackend:
        """On v1 (or a hybrid host), the agent's container's groups in each hierarchy, else vigild's."""
        try:
            _, tree = v1_container_tree(call.pid, self.host, self.parent_name, self.home.controllers)
        except NotInContainer as exc:
            self._fallback("cgroup v1", "placing tool calls in the agent's own cgroup needs the memory "
                           f"controller on cgroup v2 or a container's own groups ({exc})")
            return self.home
        where = tree.path("").parent
        known = self.trees.get(where)
        return known if known is not None else self._set_up(where, tree)

    def _set_up(self, agent_dir: Path, tree: CgroupBackend) -> CgroupBackend:
        try:
            for name in tree.remove_dead_runs(PARENT_PREFIX):
                log.info("removed stale cgroups %s in %s", name, agent_dir)
            tree.ensure_layout()
        except CgroupError as exc:
            tree.remove_layout(kill=False)
            self._fallback(str(agent_dir), f"its tree could not be set up: {exc}")
            return self.home
        self.trees[agent_dir] = tree
        log.info("tool calls of agents in %s go below it, in %s", agent_dir, tree.path(""))
        return tree

    def release(self, tree: CgroupBackend) -> None:
        """An agent tree whose last call ended: removed, and its cgroup given back as it was."""
        for agent_dir, known in list(self.trees.items()):
            if known is tree:
                del self.trees[agent_dir]
                tree.remove_layout(kill=False, timeout=2.0)

    def close(self) -> None:
        for tree in list(self.trees.values()):
            try:
                self.release(tree)
            except CgroupError as exc:
                log.warning("cannot remove the tool-call groups in %s: %s", tree.path(""), exc)

    @staticmethod
    def _cgroup_of(pid: int, mount: Path) -> Path | None:
        """The process's v2 cgroup (its enclosing cgroup if it sits in a ``LEAF``), None if gone."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        path = next((line[3:] for line in lines if line.startswith("0::")), None)
        if path is None:
            return None
        directory = mount / path.lstrip("/")
        return directory.parent if directory.name == LEAF and directory != mount else directory

    def describe(self) -> dict[str, object]:
        """For `vigil status`: where calls go inside agents' own cgroups, and where they cannot."""
        return {"agent_trees": sorted(str(tree.path("")) for tree in self.trees.values()),
                "below_vigild": dict(self.fallbacks)}

    def _fallback(self, where: str, why: str) -> None:
        if where not in self.fallbacks:
            self.fallbacks[where] = why
            log.warning("tool calls of agents in %s run below vigild's own cgroup: %s", where, why)
