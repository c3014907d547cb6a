"""How a fault from a service ends a command: one table for every client (sysexits).

A fault's code says whose fault it was (DESIGN §2); a service that knows better says so
in the payload's ``exit_code`` (the status the command would have exited with had it
done the work itself: tieto's 66 for an unknown topic). Every client reads an error
envelope through :func:`exit_status`, so ``runa ask``, the chat, ``runa recall`` and a
completion end the same way for the same fault, whether the bus refused the request
here (a full queue) or the service answered with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runa.splinter import Fault

EX_DATAERR = 65
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77

#: The exit status of each fault code.
EXIT_STATUS: Mapping[Fault, int] = {
    Fault.BAD_SCHEMA: EX_DATAERR,  # the request itself was wrong
    Fault.UNKNOWN_TYPE: EX_DATAERR,
    Fault.NOT_AUTHORIZED: EX_NOPERM,
    Fault.BACKPRESSURE: EX_TEMPFAIL,  # busy: try again
    Fault.STREAM_TIMEOUT: EX_TEMPFAIL,
    Fault.TTL_EXPIRED: EX_TEMPFAIL,
    Fault.INTERNAL_ERROR: EX_SOFTWARE,
}
#: A code this table does not know (a newer service).
UNKNOWN_FAULT_STATUS = 1


def fault_code(payload: Mapping[str, Any]) -> int:
    """The fault code of an error payload (INTERNAL_ERROR when it names none)."""
    try:
        return int(payload.get("code", Fault.INTERNAL_ERROR))
    except (TypeError, ValueError):
        return int(Fault.INTERNAL_ERROR)


def exit_status(payload: Mapping[str, Any]) -> int:
    """The status a command ends with for the error envelope ``payload``."""
    named = payload.get("exit_code")
    if isinstance(named, int) and not isinstance(named, bool) and 0 < named < 256:
        return named
    code = fault_code(payload)
    try:
        return EXIT_STATUS[Fault(code)]
    except ValueError:
        return UNKNOWN_FAULT_STATUS
