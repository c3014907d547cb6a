"""Logging to journald with structured fields, or to stderr where there is no journal.

Every record a component writes carries ``RUNA_COMPONENT``; events add
``RUNA_EVENT`` and any other ``RUNA_*`` field (``RUNA_CONVERSATION``,
``RUNA_INCARNATION``, ...), which ``journalctl RUNA_EVENT=restart`` and
``runa audit`` read back. Secrets and message bodies are never logged.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, TextIO

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_FIELD = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def field_name(name: str) -> str:
    """The journal field for a structured attribute: ``conversation`` → ``RUNA_CONVERSATION``."""
    upper = name.upper()
    field = upper if upper.startswith("RUNA_") else f"RUNA_{upper}"
    if not _FIELD.match(field):
        raise ValueError(f"not a valid journal field name: {name!r}")
    return field


class _ComponentFilter(logging.Filter):
    """Stamps every record with the component's name, unless the record names another.

    gilgul's events about a component (``restart``, ``escalated``) carry that component's
    name, so ``journalctl RUNA_COMPONENT=splinfer`` tells splinfer's whole story; who wrote
    the record stays in ``SYSLOG_IDENTIFIER``.
    """

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "RUNA_COMPONENT", None):
            record.RUNA_COMPONENT = self.component
        return True


class _StderrFormatter(logging.Formatter):
    """``component: level: message [FIELD=value ...]`` — the journal's fields, made readable."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{key}={value}"
            for key, value in sorted(record.__dict__.items())
            if key.startswith("RUNA_") and key != "RUNA_COMPONENT"
        )
        text = f"{record.RUNA_COMPONENT}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{text} [{fields}]" if fields else text


def socket_answers(path: Path) -> bool:
    """Whether a datagram socket at ``path`` has a listener (a stale file does not count)."""
    if not path.is_socket():
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def journal_available() -> bool:
    return socket_answers(JOURNAL_SOCKET)


def setup(
    component: str,
    level: str = "info",
    target: str = "auto",
    stream: TextIO | None = None,
) -> logging.Logger:
    """Configure the ``runa`` logger tree for one process and return the component's logger.

    ``target`` is ``journal``, ``stderr`` or ``auto`` (journald when its socket exists).
    """
    root = logging.getLogger("runa")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    use_journal = target == "journal" or (target == "auto" and journal_available())
    handler: logging.Handler
    if use_journal:
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER=f"runa-{component}")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_StderrFormatter())
    handler.addFilter(_ComponentFilter(component))
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    root.propagate = False
    return root.getChild(component)


def event(logger: logging.Logger, name: str, message: str, *, level: int = logging.INFO,
          **fields: Any) -> None:
    """Log a structured event: ``RUNA_EVENT=name`` plus ``RUNA_<FIELD>`` for each field."""
    extra = {field_name(key): _plain(value) for key, value in fields.items()}
    extra["RUNA_EVENT"] = name
    extra.setdefault("RUNA_PID", os.getpid())
    logger.log(level, message, extra=extra)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float)) else str(value)
