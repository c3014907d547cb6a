"""Conversations on disk: the history (always kept) and the saved model state (a cache).

Under ``<state>/conversations/`` each conversation has

- ``<id>.json``: its persona, its messages, and the *basis* of its next turn (the
  tokens of the last prompt and answer, and a digest of the text they stand for),
  rewritten after every answered turn. This is the conversation; it is never
  dropped by the size cap.
- ``<id>.state``: its KV state (``statefile.py``), written when the conversation
  leaves its sequence (evicted for another one, the model unloaded, splinfer
  stopping) or after it has been idle a while. It only saves time: without it
  the history is re-processed. The state files together stay under
  ``splinfer.state_max_mib``; the least recently saved go first. A state file not
  saved for ``splinfer.state_max_age_days`` is dropped as well (0: kept at any age).
- ``models/<sha256>/<id>.state``: the state another model made, put aside when
  ``use_model`` switched away from it and brought back when it returns (not counted
  by the cap).

Every write goes through ``storage.atomic_write`` (temporary file, fsync, rename),
so a crash or a full disk leaves the previous file in place. Each state file's
metadata is also published on the bus as ``splinfer:conv:<id>`` (DESIGN §3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runa import log
from runa.protocol.names import conversation_id_problem
from runa.splinfer import statefile
from runa.splinfer.errors import InferenceError
from runa.splinfer.statefile import SavedState, StateHeader, StateIdentity
from runa.splinfer.storage import Writer, atomic_write, remove_temporaries

HISTORY_FORMAT = 1
#: Where the states another model made wait for it to come back: ``models/<sha256>/<id>.state``.
MODELS_DIR = "models"

#: ``publish(conversation id, metadata or None to remove)``: the bus mirror of state files.
MetaPublisher = Callable[[str, dict[str, Any] | None], None]


class ConversationError(InferenceError):
    """A conversation cannot be found, read or written."""


class UnknownConversationError(ConversationError):
    exit_code = 65

    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        super().__init__(f"no conversation {conversation!r}")


class StateSaveError(ConversationError):
    """Writing a state file failed (e.g. a full disk); the previous file is still there."""


def check_id(conversation: object) -> str:
    """The id if it is one (``runa.protocol.names``), else ValueError."""
    problem = conversation_id_problem(conversation)
    if problem:
        raise ValueError(problem)
    return conversation  # type: ignore[return-value]  # a str: the rule says so


@dataclass(frozen=True)
class Basis:
    """What the next turn can build on: the tokens of the last prompt plus its answer."""

    model: str
    """sha256 of the model the tokens belong to."""
    digest: str
    """sha256 of the text the tokens stand for (the rendered prompt and the answer)."""
    tokens: tuple[int, ...]


@dataclass
class Conversation:
    id: str
    persona: str
    messages: list[dict[str, str]] = field(default_factory=list)
    """User and assistant messages, oldest first (the system prompt comes from the persona)."""
    window: int = 0
    """Index of the first message in the model's context; older ones were dropped to fit."""
    basis: Basis | None = None
    created: float = 0.0
    updated: float = 0.0
    policy: str = ""
    """The policy set a chat request chose for it ("" : the persona's or policy.default)."""
    whispers: list[str] = field(default_factory=list)
    """Notes a whisper of the last answer adds to the next turn's context (then cleared)."""

    def as_json(self) -> dict[str, Any]:
        basis = self.basis
        return {
            "format": HISTORY_FORMAT, "id": self.id, "persona": self.persona,
            "created": self.created, "updated": self.updated, "window": self.window,
            "messages": self.messages, "policy": self.policy, "whispers": self.whispers,
            "basis": None if basis is None else {"model": basis.model, "digest": basis.digest,
                                                 "tokens": list(basis.tokens)},
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        """The conversation in ``data``; ValueError naming the first bad message row."""
        messages = [_message(n, m) for n, m in enumerate(data["messages"], 1)]
        raw = data.get("basis")
        basis = None
        if raw:
            basis = Basis(str(raw["model"]), str(raw["digest"]),
                          tuple(int(t) for t in raw["tokens"]))
        return cls(id=str(data["id"]), persona=str(data["persona"]), messages=messages,
                   window=max(0, min(int(data.get("window", 0)), len(messages))),
                   basis=basis, created=float(data.get("created", 0.0)),
                   updated=float(data.get("updated", 0.0)),
                   policy=str(data.get("policy") or ""),
                   whispers=[str(w) for w in data.get("whispers") or ()])


#: The roles a kept history holds (the system prompt comes from the persona).
HISTORY_ROLES = ("user", "assistant")


def _message(number: int, row: object) -> dict[str, str]:
    """One history row checked, so a damaged one is refused instead of read as another role.

    The error names the row and its role, never its content (errors reach the journal).
    """
    if not isinstance(row, dict):
        raise ValueError(f"message {number} is {type(row).__name__}, not an object")
    role, content = row.get("role"), row.get("content")
    if role not in HISTORY_ROLES:
        raise ValueError(f"message {number} has role {role!r}; a history holds only "
                         f"{' and '.join(HISTORY_ROLES)} messages")
    if not isinstance(content, str):
        raise ValueError(f"message {number} ({role}) has no text 'content' "
                         f"({type(content).__name__})")
    return {"role": role, "content": content}


@dataclass(frozen=True)
class Summary:
    """One line of ``runa chat --list``: what a person needs to recognise a conversation."""

    id: str
    persona: str
    messages: int
    created: float
    updated: float
    first: str
    """The first line of the first message, cut to ``FIRST_LINE_CHARS``."""
    state_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "persona": self.persona, "messages": self.messages,
                "created": self.created, "updated": self.updated, "first": self.first,
                "state_bytes": self.state_bytes}


FIRST_LINE_CHARS = 80


def first_line(messages: Sequence[dict[str, str]]) -> str:
    text = next((m["content"] for m in messages if m.get("role") == "user"), "")
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= FIRST_LINE_CHARS else line[: FIRST_LINE_CHARS - 1] + "…"


@dataclass(frozen=True)
class StateFile:
    conversation: str
    path: Path
    size: int
    mtime: float


class ConversationStore:
    """The ``conversations`` directory of one stack."""

    def __init__(
        self,
        root: Path,
        *,
        max_state_bytes: int,
        max_state_age_s: float = 0.0,
        writer: Writer = atomic_write,
        clock: Callable[[], float] = time.time,
        publish: MetaPublisher | None = None,
        logger: logging.Logger | None = None,
        reader: Callable[[Path], bytes] = Path.read_bytes,
    ) -> None:
        self.root = root
        self.max_state_bytes = max_state_bytes
        self.max_state_age_s = max_state_age_s
        """A state file not saved for this long is dropped (0: no age limit)."""
        self.writer = writer
        self.clock = clock
        self.publish = publish
        self.log = logger or logging.getLogger(__name__)
        self.reader = reader
        self._summaries: dict[str, tuple[tuple[int, int, int], Summary | None]] = {}
        """conversation → ((mtime_ns, size, inode) of its history, its summary)."""

    def open(self) -> None:
        """Create the directory (0700) and clear what a crashed writer left behind."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        removed = remove_temporaries(self.root)
        if removed:
            self.log.info("removed %d unfinished file(s) from %s", removed, self.root)

    def history_path(self, conversation: str) -> Path:
        return self.root / f"{check_id(conversation)}.json"

    def state_path(self, conversation: str) -> Path:
        return self.root / f"{check_id(conversation)}.state"

    # -- history -------------------------------------------------------------------

    def exists(self, conversation: str) -> bool:
        return self.history_path(conversation).is_file()

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")
                      if conversation_id_problem(p.stem) is None)

    def summaries(self, prefix: str = "") -> list[Summary]:
        """Every readable conversation whose id starts with ``prefix``, latest used first.

        Answered on the main loop, also while answers stream: a history is read again only
        when its file changed (another mtime, size or inode), so a listing of many long
        conversations costs a ``stat`` each."""
        states = {f.conversation: f.size for f in self.state_files()}
        ids = self.ids()
        for gone in self._summaries.keys() - set(ids):
            del self._summaries[gone]
        found = []
        for conversation in ids:
            if not conversation.startswith(prefix):
                continue
            summary = self._summary(conversation)
            if summary is not None:
                found.append(replace(summary, state_bytes=states.get(conversation, 0)))
        return sorted(found, key=lambda s: (-s.updated, s.id))

    def _summary(self, conversation: str) -> Summary | None:
        """The summary of one history (None: gone or damaged), from the cache while unchanged."""
        try:
            st = self.history_path(conversation).stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._summaries.get(conversation)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            conv = self.load(conversation)
        except ConversationError:
            summary = None  # damaged: reported when it is used, not while listing
        else:
            summary = Summary(conv.id, conv.persona, len(conv.messages), conv.created,
                              conv.updated, first_line(conv.messages), 0)
        self._summaries[conversation] = (key, summary)
        return summary

    def new(self, conversation: str, persona: str) -> Conversation:
        now = self.clock()
        return Conversation(id=check_id(conversation), persona=persona, created=now,
                            updated=now)

    def load(self, conversation: str) -> Conversation:
        """The stored conversation; UnknownConversationError, or ConversationError if damaged."""
        path = self.history_path(conversation)
        try:
            data = json.loads(self.reader(path))
        except FileNotFoundError:
            raise UnknownConversationError(conversation) from None
        except (OSError, ValueError) as error:
            raise ConversationError(f"{path}: the history cannot be read: {error}") from None
        try:
            conv = Conversation.from_json(data)
        except (KeyError, TypeError, ValueError) as error:
            detail = str(error) if type(error) is ValueError else repr(error)
            raise ConversationError(f"{path}: the history is damaged ({detail})") from None
        if conv.id != conversation:
            raise ConversationError(f"{path}: holds conversation {conv.id!r}")
        return conv

    def save(self, conv: Conversation) -> None:
        """Write the history (atomically); ConversationError if that fails."""
        conv.updated = self.clock()
        path = self.history_path(conv.id)
        data = json.dumps(conv.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
        try:
            self.writer(path, [data], size=len(data))
        except OSError as error:
            raise ConversationError(f"{path}: the history could not be written: "
                                    f"{error.strerror or error}") from None

    def forget(self, conversation: str) -> None:
        """Delete the history and the saved state; UnknownConversationError if neither exists."""
        history, state = self.history_path(conversation), self.state_path(conversation)
        if not history.exists() and not state.exists():
            raise UnknownConversationError(conversation)
        self.drop_state(conversation)
        for kept in self.root.glob(f"{MODELS_DIR}/*/{check_id(conversation)}.state"):
            kept.unlink(missing_ok=True)  # the states other models made of it go too
        history.unlink(missing_ok=True)

    # -- saved model state ----------------------------------------------------------

    def save_state(self, conversation: str, identity: StateIdentity, tokens: Sequence[int],
                   data: memoryview) -> StateHeader:
        """Write the state file; StateSaveError keeps the previous one. Then apply the cap."""
        path = self.state_path(conversation)
        chunks, size, header = statefile.encode(conversation, identity, tokens, data,
                                                now=self.clock())
        try:
            self.writer(path, chunks, size=size)
        except OSError as error:
            raise StateSaveError(f"{path}: the state could not be saved "
                                 f"({error.strerror or error}); the previous one is kept") \
                from None
        if self.publish is not None:
            self.publish(conversation, header.meta(path))
        self.enforce_cap()
        return header

    def load_state(self, conversation: str, identity: StateIdentity) -> SavedState:
        """The verified state; statefile.StateError (missing, corrupt, foreign) if unusable."""
        return statefile.read(self.state_path(conversation), identity, conversation)

    def drop_state(self, conversation: str) -> None:
        self.state_path(conversation).unlink(missing_ok=True)
        if self.publish is not None:
            self.publish(conversation, None)

    def switch_states(self, old_model: str, new_model: str) -> int:
        """The model changes from ``old_model`` to ``new_model`` (sha256s): the states the old
        one made are put aside under ``models/<old>/``, for when it comes back, and those the
        new one made before come back into use; how many came back."""
        aside = self.root / MODELS_DIR / old_model
        aside.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in self.root.glob("*.state"):
            os.replace(path, aside / path.name)
            if self.publish is not None:
                self.publish(path.stem, None)
        return self._bring_back(new_model)

    def _bring_back(self, model: str) -> int:
        """The states ``model`` made, put aside before, in use again (a conversation's state
        in use stays); how many came back."""
        back = self.root / MODELS_DIR / model
        returned = 0
        for path in sorted(back.glob("*.state")):
            if self.exists(path.stem) and not (self.root / path.name).exists():
                os.replace(path, self.root / path.name)
                returned += 1
            else:
                path.unlink(missing_ok=True)  # forgotten meanwhile, or saved again since
        with contextlib.suppress(OSError):
            back.rmdir()
        return returned

    def settle_states(self, model: str) -> int:
        """At start, under ``model`` (a sha256): the states in use that another model made
        (the stack ran another one, `runa models use`, before it stopped) are put aside for
        that model, and ``model``'s own states come back; how many came back."""
        for path in self.root.glob("*.state"):
            try:
                header, _ = statefile.read_header(path)
            except statefile.StateError:
                continue  # unreadable: loading it later says so and drops it
            if header.model != model and re.fullmatch(r"[0-9A-Za-z]{1,128}", header.model):
                aside = self.root / MODELS_DIR / header.model
                aside.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(path, aside / path.name)
        return self._bring_back(model)

    def state_files(self) -> list[StateFile]:
        """Every state file, least recently saved first."""
        found = []
        for path in self.root.glob("*.state"):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append(StateFile(path.stem, path, st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: (f.mtime, f.conversation))

    def set_aside_files(self) -> list[StateFile]:
        """The states other models made, waiting under ``models/`` for them to come back;
        least recently saved first."""
        found = []
        for path in self.root.glob(f"{MODELS_DIR}/*/*.state"):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append(StateFile(path.stem, path, st.st_size, st.st_mtime))
        return sorted(found, key=lambda f: (f.mtime, f.conversation))

    def _trim_set_aside(self, room: int) -> int:
        """Delete other models' states past the age limit, then the oldest of them until at
        most ``room`` bytes are left to them (they count against the same limits as the
        states in use, and go first); the bytes they still take."""
        aside = self.set_aside_files()
        cutoff = (self.clock() - self.max_state_age_s if self.max_state_age_s > 0
                  else float("-inf"))
        total = sum(f.size for f in aside)
        for f in aside:
            if f.mtime >= cutoff and total <= room:
                continue
            f.path.unlink(missing_ok=True)
            total -= f.size
            log.event(self.log, "state_dropped", f"dropped a saved state of {f.conversation} "
                      "kept for another model (age or size limit)", conversation=f.conversation)
        return total

    def enforce_cap(self) -> list[str]:
        """Delete states older than ``max_state_age_s``, then the least recently saved
        until they fit ``max_state_bytes``. Other models' states (``models/``) count too,
        and go first."""
        files = self.state_files()
        dropped = []
        in_use = sum(f.size for f in files)
        aside = self._trim_set_aside(max(0, self.max_state_bytes - in_use))
        if self.max_state_age_s > 0:
            cutoff = self.clock() - self.max_state_age_s
            for f in [f for f in files if f.mtime < cutoff]:
                self.drop_state(f.conversation)
                dropped.append(f.conversation)
                log.event(self.log, "state_dropped",
                          f"dropped the saved state of {f.conversation}: not used for "
                          f"{self.max_state_age_s / 86400:g} days", conversation=f.conversation)
            files = [f for f in files if f.conversation not in dropped]
        total = sum(f.size for f in files) + aside
        for f in files:
            if total <= self.max_state_bytes:
                break
            self.drop_state(f.conversation)
            total -= f.size
            dropped.append(f.conversation)
            log.event(self.log, "state_dropped",
                      f"dropped the saved state of {f.conversation} ({f.size >> 20} MiB) to "
                      f"stay under {self.max_state_bytes >> 20} MiB", conversation=f.conversation)
        return dropped

    def republish(self) -> int:
        """Put the metadata of every state file on the bus (after a restart); how many."""
        if self.publish is None:
            return 0
        count = 0
        for f in self.state_files():
            try:
                header, _ = statefile.read_header(f.path)
            except statefile.StateError:
                continue
            self.publish(f.conversation, header.meta(f.path))
            count += 1
        return count
