"""What a benchmark started is gone when it ends, however it ends (issue 15).

Python runs ``finally`` blocks and ``with`` exits on a normal end, an exception and Ctrl-C
(KeyboardInterrupt), but SIGTERM and SIGHUP kill it on the spot, leaving a stack, a user
manager, busy processes or bus segments behind. ``guarded()`` turns those two signals into
``Terminated`` (a SystemExit with status 128 + the signal; Ctrl-C ends with it too,
without a traceback) and gives the bench an ExitStack
to register its cleanups on, run in reverse order on every one of those exits::

    with guarded("inference") as cleanups:
        env = stack_env(...)
        cleanups.callback(stop_stack, env)
        ...

A second SIGTERM or SIGHUP while cleaning up is not obeyed, so the cleanup finishes.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

SHM = Path("/dev/shm")
HANDLED = (signal.SIGTERM, signal.SIGHUP)
RETRY_S = 0.05


class Terminated(SystemExit):
    """A termination signal, raised where the bench was, so every cleanup on the way runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _Stopper:
    """The signal handler: raises ``Terminated`` once, and again only if that one was lost.

    An exception raised while Python code runs inside a C callback (llama.cpp's abort check,
    through ctypes) is dropped there; the unraisable hook sees it and has a timer (SIGALRM)
    raise it again a moment later, until it lands in the bench's own code.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = True
        self.previous_hook = sys.unraisablehook

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if self.armed:
            if _in_abort_check(frame):  # raised there, llama.cpp would see a garbage "abort"
                signal.setitimer(signal.ITIMER_REAL, RETRY_S)
                return
            self.armed = False
            raise Terminated(self.signum)

    def unraisable(self, unraisable: Any) -> None:
        lost = unraisable.exc_value
        if isinstance(lost, KeyboardInterrupt):  # Ctrl-C, lost the same way
            self.signum = self.signum or signal.SIGINT
        elif not isinstance(lost, Terminated):
            self.previous_hook(unraisable)
            return
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, RETRY_S)

    def handle_retry(self, signum: int, frame: FrameType | None) -> None:
        if self.signum == signal.SIGINT:
            self.signum = None
            raise KeyboardInterrupt
        self.handle(signum, frame)


def _in_abort_check(frame: FrameType | None) -> bool:
    """Is ``frame`` llama.cpp's abort callback (a ctypes callback that must return a bool)?

    An exception raised in it is dropped by ctypes, which then returns whatever its result
    buffer held: llama.cpp reads that as "abort", the answer ends with no token, and the
    bench would compute on it (a division by zero, seen in CI) before the retry lands.
    """
    engine = sys.modules.get("runa.splinfer.engine")
    return (engine is not None and frame is not None
            and frame.f_code is engine.Engine._on_abort_check.__code__)


@contextlib.contextmanager
def guarded(bench: str) -> Iterator[contextlib.ExitStack]:
    """Run a bench's body with SIGTERM/SIGHUP raising ``Terminated`` and cleanups registered
    on the stack it yields; says on stderr what stopped it."""
    stopper = _Stopper()
    previous = {signum: signal.signal(signum, stopper.handle) for signum in HANDLED}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, stopper.handle_retry)
    sys.unraisablehook = stopper.unraisable
    try:
        with contextlib.ExitStack() as cleanups:
            yield cleanups
    except Terminated as stop:
        _say_stopped(bench, stop.signum)
        raise
    except KeyboardInterrupt:  # Ctrl-C: the same status and message, no traceback
        _say_stopped(bench, signal.SIGINT)
        raise Terminated(signal.SIGINT) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.unraisablehook = stopper.previous_hook
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _say_stopped(bench: str, signum: int) -> None:
    print(f"{bench}: stopped by {signal.Signals(signum).name}; what it started is cleaned up",
          file=sys.stderr)


def remove_segments(stack: str) -> None:
    """Unlink the bus segments of ``stack`` (``/dev/shm/runa-<stack>-<bus>``), no other's."""
    from runa.splinter import segment_paths  # the bench has put the repository on the path

    for segment in segment_paths(stack, str(SHM)):
        Path(segment).unlink(missing_ok=True)


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace_s: float = 10) -> None:
    """SIGTERM every process still running, then SIGKILL what is left after ``grace_s``."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_stack(env: dict[str, str], cwd: Path | None = None) -> None:
    """``runa down`` for the stack ``env`` names, then unlink its segments."""
    try:
        subprocess.run([sys.executable, "-m", "runa", "down"], env=env, cwd=cwd,
                       capture_output=True, timeout=120, check=False)
    finally:
        remove_segments(env["RUNA_STACK"])
