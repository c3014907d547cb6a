"""The person's own chat files: input history and the conversation to resume.

They live in the person's state directory even when talking to the shared stack, whose
state directory (/var/lib/runa) belongs to the service, not to the person. What was typed
is private, so the files are 0600 in a 0700 directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runa.paths import Paths, personal_stack
from runa.protocol.names import conversation_id_problem


def valid_conversation_id(value: str) -> bool:
    """The wire contract's rule (runa.protocol.names), which splinfer holds ids to."""
    return conversation_id_problem(value) is None


@dataclass(frozen=True)
class ChatFiles:
    """Where one person's chat files for one stack are."""

    directory: Path
    stack: str

    @classmethod
    def for_person(cls, env: Mapping[str, str], stack: str) -> ChatFiles:
        return cls(Paths.for_stack(personal_stack(), env).state, stack)

    @property
    def history(self) -> Path:
        """prompt-toolkit's input history (what was typed, for the arrow keys)."""
        return self.directory / "chat_history"

    @property
    def conversation(self) -> Path:
        """The id of the conversation ``runa chat`` resumes on this stack."""
        return self.directory / f"chat_conversation.{self.stack}"

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def ensure_history(self) -> Path:
        """Create the history file 0600 (prompt-toolkit would create it with the umask)."""
        self._ensure_directory()
        fd = os.open(self.history, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return self.history

    def last_conversation(self) -> str | None:
        """The remembered id; None when there is none or the file holds something else."""
        try:
            value = self.conversation.read_text(encoding="utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return value if valid_conversation_id(value) else None

    def remember(self, conversation: str) -> None:
        """Write the id atomically: a crash leaves the old id or the new one, never half."""
        self._ensure_directory()
        temporary = self.conversation.with_name(f".{self.conversation.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(conversation + "\n")
        os.replace(temporary, self.conversation)

    def forget_last(self) -> None:
        """The remembered conversation was deleted: the next ``runa chat`` starts afresh."""
        self.conversation.unlink(missing_ok=True)
