"""The tieto daemon's background ingests as a person sees them: list them, cancel one by id.

The daemon lists its running and waiting ingests in its ``status`` answer (docs/protocol.md,
"tieto"); an ingest's id is the id of the request that asked for it, and a ``cancel`` naming
it stops it (a waiting one is dropped, a running one stops at its next file or batch and
keeps what it did). A person types the last characters of the id (the random part of a
uuid7; its first characters are a timestamp, shared by ingests asked for close together).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runa.client import ServiceClient
from runa.errors import RunaError, UsageError
from runa.protocol.tieto import request

#: Characters of an id shown and enough to name an ingest.
SHORT_ID = 8


class NoSuchIngest(RunaError):
    """No running or waiting ingest has the id given (it may have ended already)."""

    exit_code = 66  # EX_NOINPUT


class CancelTimeout(RunaError):
    """The daemon was asked to cancel but the ingest is still listed."""

    exit_code = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class IngestInfo:
    """One background ingest as the daemon lists it."""

    id: str
    topic: str
    state: str
    """``running`` or ``waiting``."""
    paths: tuple[str, ...]
    done: int
    total: int

    @classmethod
    def from_status(cls, data: dict[str, Any]) -> IngestInfo:
        return cls(str(data["id"]), str(data["topic"]), str(data["state"]),
                   tuple(data.get("paths", ())), int(data.get("done", 0)),
                   int(data.get("total", 0)))

    @property
    def short_id(self) -> str:
        return self.id[-SHORT_ID:]

    def progress(self) -> str:
        if self.state != "running":
            return "-"
        return f"{self.done}/{self.total} files" if self.total else "starting"

    def kept(self) -> str:
        if self.state != "running":
            return "it had not started"
        if not self.total:
            return "no file was done yet"
        return f"about {self.done} of {self.total} files were done; what they ingested is kept"


def list_ingests(client: ServiceClient) -> list[IngestInfo]:
    """The running ingest (first) and the waiting ones, in order."""
    answer = client.call(request("status"))
    return [IngestInfo.from_status(i) for i in answer.get("ingests", [])]


def find_ingest(ingests: list[IngestInfo], wanted: str | None) -> IngestInfo:
    """The ingest ``wanted`` names (its id or the id's last characters); the running one
    when ``wanted`` is None. NoSuchIngest, or UsageError when it names several."""
    if wanted is None:
        running = [i for i in ingests if i.state == "running"]
        if not running:
            raise NoSuchIngest("no ingest is running" + _listing(ingests))
        return running[0]
    wanted = wanted.strip().lower()
    found = [i for i in ingests if i.id.lower() == wanted or
             (len(wanted) >= 4 and i.id.lower().endswith(wanted))]
    if not found:
        raise NoSuchIngest(f"no ingest {wanted} runs or waits" + _listing(ingests))
    if len(found) > 1:
        raise UsageError(f"{wanted!r} names {len(found)} ingests; give more of the id")
    return found[0]


def _listing(ingests: list[IngestInfo]) -> str:
    if not ingests:
        return " (none runs or waits)"
    return " (" + ", ".join(f"{i.short_id} {i.state} into {i.topic}" for i in ingests) + ")"


def cancel_ingest(client: ServiceClient, target: IngestInfo, timeout: float, *,
                  clock: Callable[[], float] = time.monotonic,
                  interval: float = 0.1) -> IngestInfo:
    """Ask the daemon to cancel ``target`` and wait until it is no longer listed; its last
    listed state. CancelTimeout when it is still listed after ``timeout`` seconds."""
    client.send_cancel(target.id)
    last = target
    deadline = clock() + timeout
    while clock() < deadline:
        now = next((i for i in list_ingests(client) if i.id == target.id), None)
        if now is None:
            return last
        last = now
        time.sleep(interval)
    raise CancelTimeout(
        f"tieto was asked to cancel the ingest {target.short_id} into {target.topic}, but it "
        f"still runs after {timeout:g} s (it stops at its next file or embedding batch); "
        "see 'runa ingest --status'")
