"""Memory limits for the supervisor's children: a cgroup where one is writable, else RLIMIT_DATA.

Under systemd a component's ``MemoryMax=`` is its cgroup's limit. The supervisor does the
same where it can: it creates ``runa-<stack>/<component>`` below its own memory cgroup
(cgroup v1's ``memory`` controller, or v2 where the memory controller can be enabled for a
child), writes the limit, and each child joins its cgroup before exec, so the kernel counts
and kills exactly as it would under systemd. Where no cgroup is writable (a container, a
user without delegation) it falls back to ``RLIMIT_DATA``, which bounds heap and anonymous
memory but not the mapped model file; never ``RLIMIT_AS``, which counts the whole mapping
and would refuse the model (DESIGN §5). The fallback is logged once as a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runa import log

# v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size).
_V1_UNLIMITED = 1 << 62

Preexec = Callable[[], None]


@dataclass(frozen=True)
class CgroupLayout:
    """Where the supervisor's memory cgroups go and which files hold the limit."""

    base: Path  # runa-<stack>, below the supervisor's own memory cgroup
    limit_file: str  # memory.limit_in_bytes (v1) or memory.max (v2)
    version: int


def find_layout(stack: str, proc_cgroup: Path = Path("/proc/self/cgroup"),
                cgroup_root: Path = Path("/sys/fs/cgroup")) -> CgroupLayout | str:
    """The layout to use, or why none is usable (the reason goes into the warning)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError as error:
        return f"cannot read {proc_cgroup}: {error}"
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    v1 = next((path for _, ctrls, path in entries if "memory" in ctrls.split(",")), None)
    if v1 is not None and (cgroup_root / "memory").is_dir():
        own = cgroup_root / "memory" / v1.lstrip("/")
        return _prepare(CgroupLayout(own / f"runa-{stack}", "memory.limit_in_bytes", 1))
    v2 = next((path for hid, ctrls, path in entries if hid == "0" and ctrls == ""), None)
    if v2 is not None and (cgroup_root / "cgroup.controllers").exists():
        own = cgroup_root / v2.lstrip("/")
        layout = _prepare(CgroupLayout(own / f"runa-{stack}", "memory.max", 2))
        if isinstance(layout, CgroupLayout):
            try:  # the base holds no process, so it may hand the controller to its children
                (layout.base / "cgroup.subtree_control").write_text("+memory")
            except OSError as error:
                with contextlib.suppress(OSError):
                    layout.base.rmdir()
                return f"cannot enable the memory controller in {layout.base}: {error}"
        return layout
    return "no memory cgroup controller is mounted"


def _prepare(layout: CgroupLayout) -> CgroupLayout | str:
    try:
        layout.base.mkdir(exist_ok=True)
    except OSError as error:
        return f"cannot create {layout.base}: {error.strerror}"
    return layout


class MemoryLimiter:
    """Hands each child the step that puts it under its limit; cleans the cgroups up after."""

    def __init__(self, layout: CgroupLayout | str, logger: logging.Logger) -> None:
        self.layout = layout if isinstance(layout, CgroupLayout) else None
        self.why_not = layout if isinstance(layout, str) else ""
        self.logger = logger
        self._warned = False

    @property
    def mode(self) -> str:
        return "cgroup" if self.layout else "rlimit"

    def prepare(self, component: str, limit: int | None) -> Preexec | None:
        """What the child runs before exec to live under ``limit`` bytes (None: no limit)."""
        if limit is None:
            return None
        if self.layout is not None:
            group = self.layout.base / component
            try:
                group.mkdir(exist_ok=True)
                (group / self.layout.limit_file).write_text(str(limit))
            except OSError as error:
                self.why_not = f"cannot write the limit in {group}: {error.strerror}"
                self.layout = None
            else:
                return _join(group / "cgroup.procs")
        if not self._warned:
            self._warned = True
            log.event(self.logger, "memory_limit_fallback",
                      f"memory limits fall back to RLIMIT_DATA, which does not count the "
                      f"mapped model or page cache ({self.why_not})",
                      level=logging.WARNING, reason=self.why_not)
        return _rlimit_data(limit)

    def limit_of(self, component: str) -> int | None:
        """The limit the kernel enforces on ``component``'s cgroup (None: not a cgroup)."""
        if self.layout is None:
            return None
        try:
            raw = (self.layout.base / component / self.layout.limit_file).read_text().strip()
        except OSError:
            return None
        return None if raw == "max" or int(raw) >= _V1_UNLIMITED else int(raw)

    def oom_kills(self, component: str) -> int:
        """How often the kernel's OOM killer acted in ``component``'s cgroup (0: unknown)."""
        if self.layout is None:
            return 0
        name = "memory.oom_control" if self.layout.version == 1 else "memory.events"
        try:
            text = (self.layout.base / component / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def cleanup(self) -> None:
        """Remove the cgroups once their processes are gone (a busy one stays, harmlessly)."""
        if self.layout is None or not self.layout.base.is_dir():
            return
        for group in self.layout.base.iterdir():
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()
        with contextlib.suppress(OSError):
            self.layout.base.rmdir()


def _join(procs: Path) -> Preexec:
    target = str(procs)

    def join() -> None:  # pragma: no cover - runs in the child before exec
        fd = os.open(target, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    return join


def _rlimit_data(limit: int) -> Preexec:
    def cap() -> None:  # pragma: no cover - runs in the child before exec
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))

    return cap
