"""Logging to journald with structured fields, or to stderr where there is no journal.

A journal that goes away (or stops reading) while a process runs costs no line and shows
no traceback: the record goes to stderr instead, which says once that the journal is
unavailable, and the journal is tried again every ``JOURNAL_RETRY_S``.

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from runa.journald import JOURNAL_SOCKET, JournalSocket

JOURNAL_RETRY_S = 30.0
_FIELD = re.compile(r"^[A-Z0-9][A-Z0-9_]*$")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
               (logging.INFO, 6))


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
        component = record.__dict__["RUNA_COMPONENT"]  # set by _ComponentFilter
        text = f"{component}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{text} [{fields}]" if fields else text


class JournalHandler(logging.Handler):
    """Records to the journal; while it fails, to ``fallback``, saying so once per outage.

    The first failed send writes a notice and the record itself to ``fallback``; later
    records go there too until ``retry_s`` has passed, when the journal is tried again.
    """

    def __init__(self, identifier: str, journal: JournalSocket, fallback: logging.Handler,
                 retry_s: float = JOURNAL_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.identifier = identifier
        self.journal = journal
        self.fallback = fallback
        self.retry_s = retry_s
        self.clock = clock
        self.failed_at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed_at is None or self.clock() - self.failed_at >= self.retry_s:
            try:
                self.journal.send(self.fields(record))
            except OSError as e:
                if self.failed_at is None:
                    reason = e.strerror or str(e)
                    self._notice(record, f"journal unavailable ({reason}); logging to stderr")
                self.failed_at = self.clock()
            else:
                if self.failed_at is not None:
                    self.failed_at = None
                    self._notice(record, "journal available again; logging to the journal")
                return
        self.fallback.emit(record)

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        fields: dict[str, object] = {
            "MESSAGE": record.getMessage(),
            "PRIORITY": next((p for level, p in _PRIORITIES if record.levelno >= level), 7),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
            "THREAD_NAME": record.threadName,
        }
        if record.exc_info:
            fields["EXCEPTION_TEXT"] = logging.Formatter().formatException(record.exc_info)
        fields.update((key, value) for key, value in record.__dict__.items()
                      if key.startswith("RUNA_"))
        return fields

    def _notice(self, about: logging.LogRecord, message: str) -> None:
        notice = logging.LogRecord(about.name, logging.WARNING, __file__, 0, message, None,
                                   None)
        notice.RUNA_COMPONENT = about.__dict__["RUNA_COMPONENT"]
        self.fallback.emit(notice)

    def close(self) -> None:
        self.journal.close()
        super().close()


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


def journal_available(path: Path = JOURNAL_SOCKET) -> bool:
    return socket_answers(path)


def setup(
    component: str,
    level: str = "info",
    target: str = "auto",
    stream: TextIO | None = None,
    journal_socket: Path = JOURNAL_SOCKET,
) -> logging.Logger:
    """Configure the ``runa`` logger tree for one process and return the component's logger.

    ``target`` is ``journal``, ``stderr`` or ``auto`` (journald when its socket answers);
    ``stream`` is where stderr records go, also while the journal is unavailable.
    """
    root = logging.getLogger("runa")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    use_journal = target == "journal" or (target == "auto" and journal_available(journal_socket))
    to_stderr = logging.StreamHandler(stream or sys.stderr)
    to_stderr.setFormatter(_StderrFormatter())
    handler: logging.Handler = to_stderr
    if use_journal:
        handler = JournalHandler(f"runa-{component}", JournalSocket(journal_socket), to_stderr)
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
