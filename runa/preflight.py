"""What the schema cannot know: the configuration checked against this machine.

A value can be well-formed and still unusable here (a ``bus.group`` no such group
exists for, a ``bus.dir`` that is not a directory) or usable but unwise (segments
every user may write, on a disk instead of in memory). ``runa config check``
reports every finding; the component that would use the value refuses the fatal
ones at start with the same message, so the check and the daemons agree.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from runa.config import Config
from runa.errors import ConfigError

#: File systems that keep their files in memory, as /dev/shm does.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


@dataclass(frozen=True)
class Finding:
    """One problem with a configured value; ``fatal`` when a component refuses to start."""

    error: ConfigError
    fatal: bool

    def __str__(self) -> str:
        return str(self.error) if self.fatal else f"warning: {self.error}"


def _finding(config: Config, key: str, problem: str, *, fatal: bool) -> Finding:
    return Finding(ConfigError(config.origin(key), key, config[key], problem), fatal)


def bus_findings(config: Config) -> list[Finding]:
    """Problems with ``bus.dir``, ``bus.group`` and ``bus.mode`` on this machine."""
    findings = []
    group = config["bus.group"]
    if group:
        try:
            grp.getgrnam(group)
        except KeyError:
            findings.append(_finding(config, "bus.group", "no such group", fatal=True))
    findings += _dir_findings(config)
    if int(config["bus.mode"], 8) & 0o007:
        findings.append(_finding(
            config, "bus.mode", "every user of this machine may read or write the bus; use "
            "0600 (or 0660 with bus.group)", fatal=False))
    return findings


def _dir_findings(config: Config) -> list[Finding]:
    where = Path(config["bus.dir"])
    if not where.exists():
        return [_finding(config, "bus.dir", "does not exist", fatal=True)]
    if not where.is_dir():
        return [_finding(config, "bus.dir", "is not a directory", fatal=True)]
    if not os.access(where, os.W_OK | os.X_OK):
        return [_finding(config, "bus.dir", f"this user (uid {os.getuid()}) cannot create "
                         "files there", fatal=True)]
    kind = filesystem_type(where)
    if kind is not None and kind not in MEMORY_FILESYSTEMS:
        return [_finding(config, "bus.dir", f"is on a {kind} file system, not in memory: the "
                         "bus would be written to disk; use /dev/shm", fatal=False)]
    return []


def filesystem_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the file system ``path`` is on (``tmpfs``, ``ext4`` …), None if unknown."""
    target = os.path.realpath(path)
    best, kind = "", None
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, tail.split()[0]
    return kind


def refuse(findings: Iterable[Finding]) -> None:
    """Raise the first fatal finding's ConfigError (the message ``runa config check`` prints)."""
    for finding in findings:
        if finding.fatal:
            raise finding.error
