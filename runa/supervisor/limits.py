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
from runa.cgroup import CGROUP_ROOT, PROC_CGROUP, MemoryCgroup, NoMemoryCgroup, own_memory_cgroup

Preexec = Callable[[], None]


@dataclass(frozen=True)
class CgroupLayout:
    """Where the supervisor's memory cgroups go: one per child below ``base``."""

    base: MemoryCgroup  # runa-<stack>, below the supervisor's own memory cgroup


def find_layout(stack: str, proc_cgroup: Path = PROC_CGROUP,
                cgroup_root: Path = CGROUP_ROOT) -> CgroupLayout | str:
    """The layout to use, or why none is usable (the reason goes into the warning)."""
    try:
        own = own_memory_cgroup(proc_cgroup, cgroup_root)
    except NoMemoryCgroup as error:
        return str(error)
    if own.version == 2 and not (own.root / "cgroup.controllers").exists():
        return "no memory cgroup controller is mounted"
    layout = _prepare(CgroupLayout(own.child(f"runa-{stack}")))
    if isinstance(layout, CgroupLayout) and own.version == 2:
        base = layout.base.path
        try:  # the base holds no process, so it may hand the controller to its children
            (base / "cgroup.subtree_control").write_text("+memory")
        except OSError as error:
            with contextlib.suppress(OSError):
                base.rmdir()
            return f"cannot enable the memory controller in {base}: {error}"
    return layout


def _prepare(layout: CgroupLayout) -> CgroupLayout | str:
    try:
        layout.base.path.mkdir(exist_ok=True)
    except OSError as error:
        return f"cannot create {layout.base.path}: {error.strerror}"
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
            group = self.layout.base.child(component)
            try:
                group.path.mkdir(exist_ok=True)
                (group.path / group.limit_file).write_text(str(limit))
            except OSError as error:
                self.why_not = f"cannot write the limit in {group.path}: {error.strerror}"
                self.layout = None
            else:
                return _join(group.path / "cgroup.procs")
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
        return self.layout.base.child(component).limit()

    def oom_kills(self, component: str) -> int:
        """How often the kernel's OOM killer acted in ``component``'s cgroup (0: unknown)."""
        if self.layout is None:
            return 0
        return self.layout.base.child(component).oom_kills()

    def cleanup(self) -> None:
        """Remove the cgroups once their processes are gone (a busy one stays, harmlessly)."""
        if self.layout is None or not self.layout.base.path.is_dir():
            return
        for group in self.layout.base.path.iterdir():
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()
        with contextlib.suppress(OSError):
            self.layout.base.path.rmdir()


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
