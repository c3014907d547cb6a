"""Reading the kernel's memory cgroups: which one a process is in, its limit, its OOM kills.

Works on cgroup v2 (``memory.max``) and on v1 or hybrid hosts (the ``memory``
controller's ``memory.limit_in_bytes``, which wins where it is mounted). The one place
that reads cgroup files: splinfer sizes itself to the limit that applies to it, the
supervisor (``runa.supervisor.limits``) finds where to create its children's cgroups and
reads their limits and OOM kills back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")

# v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size).
_V1_UNLIMITED = 1 << 62


class NoMemoryCgroup(Exception):
    """No memory cgroup can be found for the process; the message says why."""


@dataclass(frozen=True)
class MemoryCgroup:
    """One cgroup of the memory hierarchy: v1's ``memory`` controller or v2's unified tree."""

    root: Path
    """The hierarchy's root (``/sys/fs/cgroup/memory`` on v1, ``/sys/fs/cgroup`` on v2)."""
    path: Path
    version: int

    @property
    def limit_file(self) -> str:
        return "memory.limit_in_bytes" if self.version == 1 else "memory.max"

    def child(self, name: str) -> MemoryCgroup:
        return MemoryCgroup(self.root, self.path / name, self.version)

    def limit(self) -> int | None:
        """The limit set on this cgroup itself, in bytes (None: unlimited or unreadable)."""
        try:
            raw = (self.path / self.limit_file).read_text().strip()
            return None if raw == "max" or int(raw) >= _V1_UNLIMITED else int(raw)
        except (OSError, ValueError):
            return None

    def tightest_limit(self) -> int | None:
        """The smallest limit on the way up to the root: the one that kills."""
        limits: list[int] = []
        root = self.root.resolve()
        node = self.path.resolve()
        while True:
            limit = MemoryCgroup(root, node, self.version).limit()
            if limit is not None:
                limits.append(limit)
            if node == root or root not in node.parents:
                break
            node = node.parent
        return min(limits) if limits else None

    def oom_kills(self) -> int:
        """How often the kernel's OOM killer acted in this cgroup (0: unknown)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (self.path / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


def own_memory_cgroup(proc_cgroup: Path = PROC_CGROUP,
                      cgroup_root: Path = CGROUP_ROOT) -> MemoryCgroup:
    """The memory cgroup this process is in; NoMemoryCgroup says why there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError as error:
        raise NoMemoryCgroup(f"cannot read {proc_cgroup}: {error}") from None
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    v1 = next((path for _, ctrls, path in entries if "memory" in ctrls.split(",")), None)
    if v1 is not None and (cgroup_root / "memory").is_dir():
        root = cgroup_root / "memory"
        return MemoryCgroup(root, root / v1.lstrip("/"), 1)
    v2 = next((path for hid, ctrls, path in entries if hid == "0" and ctrls == ""), None)
    if v2 is not None:
        return MemoryCgroup(cgroup_root, cgroup_root / v2.lstrip("/"), 2)
    raise NoMemoryCgroup("no memory cgroup controller is mounted")


def memory_limit(proc_cgroup: Path = PROC_CGROUP,
                 cgroup_root: Path = CGROUP_ROOT) -> int | None:
    """The memory limit in bytes that applies to this process, or None if unlimited/unknown."""
    try:
        return own_memory_cgroup(proc_cgroup, cgroup_root).tightest_limit()
    except NoMemoryCgroup:
        return None


# -- which systemd unit a process runs in ---------------------------------------------------
# The one reading of a /proc/<pid>/cgroup text for its unit: coven (is the holder gilgul's
# unit? is coven its own?) and gilgul's secrets broker (which runa-<name>.service asks?).


def read_cgroup(pid: int, proc: Path = Path("/proc")) -> str | None:
    """``/proc/<pid>/cgroup``, or None when the process is gone or hidden."""
    try:
        return (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None


def unit_of(cgroup_text: str) -> str | None:
    """The service a ``/proc/<pid>/cgroup`` text puts the process in, or None.

    The path is the v1 ``name=systemd`` one where there is one (a hybrid host's unified line
    is then ``0::/``), else the unified (``0::``) one. Its unit is read as systemd reads a
    user unit: the first part after ``user@<uid>.service`` (or from the root, outside a user
    manager) that is not a slice; a sub-cgroup the service made (``…service/helper``) is
    still the service. None when that unit is no ``.service`` (a scope: a terminal, a
    ``systemd-run --scope``; the user manager's own ``init.scope``).
    """
    paths = {}
    for line in cgroup_text.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            paths["unified"] = path
        elif controllers == "name=systemd":
            paths["systemd"] = path
    parts = [p for p in (paths.get("systemd") or paths.get("unified") or "").split("/") if p]
    managers = [i for i, part in enumerate(parts)
                if part.startswith("user@") and part.endswith(".service")]
    below = parts[managers[0] + 1:] if managers else parts
    unit = next((part for part in below if not part.endswith(".slice")), None)
    return unit if unit is not None and unit.endswith(".service") else None
