"""What the kernel will enforce on this process: its cgroup's memory limit.

Works on cgroup v2 (``memory.max``) and on v1 or hybrid hosts (the ``memory``
controller's ``memory.limit_in_bytes``), and takes the tightest limit on the way
up the tree, because that is the one that kills.
"""

from __future__ import annotations

from pathlib import Path

# v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size).
_V1_UNLIMITED = 1 << 62


def memory_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> int | None:
    """The memory limit in bytes that applies to this process, or None if unlimited/unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    v1 = next((path for _, ctrls, path in entries if "memory" in ctrls.split(",")), None)
    if v1 is not None and (cgroup_root / "memory").is_dir():
        return _tightest(cgroup_root / "memory", v1, "memory.limit_in_bytes")
    v2 = next((path for hid, ctrls, path in entries if hid == "0" and ctrls == ""), None)
    if v2 is not None:
        return _tightest(cgroup_root, v2, "memory.max")
    return None


def _tightest(root: Path, relative: str, name: str) -> int | None:
    limits: list[int] = []
    root = root.resolve()
    node = (root / relative.lstrip("/")).resolve()
    while True:
        try:
            raw = (node / name).read_text().strip()
            if raw != "max" and int(raw) < _V1_UNLIMITED:
                limits.append(int(raw))
        except (OSError, ValueError):
            pass
        if node == root or root not in node.parents:
            break
        node = node.parent
    return min(limits) if limits else None
