"""Futex wait/wake on a 32-bit word of a shared mapping, through ctypes.

Non-private futexes (no FUTEX_PRIVATE_FLAG) so waiters and wakers may be different processes.
A blocked waiter costs no CPU; every wait is bounded so a service can still ping its watchdog.
Addresses are passed as ``c_void_p``: a bare Python int would be truncated to 32 bits by ctypes
(notes/baselines-bus.md).

The wake-up path is the bus's latency floor, so the hot callers (channel handles) keep a
``c_void_p`` and a ``Timespec`` of their own and call ``wake_ptr`` / ``wait_ptr``: that saves
the per-call allocations, ~0.5 µs of a ~5 µs one-way wake measured on this machine kind.
FUTEX_WAKE never blocks, so it goes through ``PyDLL`` (the GIL is kept: no release/reacquire);
FUTEX_WAIT sleeps, so it goes through ``CDLL``, which releases the GIL for the sleep.
"""

from __future__ import annotations

import ctypes
import errno
import math
import platform

FUTEX_WAIT = 0
FUTEX_WAKE = 1
WAKE_ALL = 0x7FFF_FFFF
_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}


class Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))

    def set(self, timeout: float) -> None:
        frac, whole = math.modf(max(timeout, 0.0))
        self.tv_sec = int(whole)
        self.tv_nsec = int(frac * 1e9)


class Futex:
    """Wait and wake on futex words; one instance per open bus (it holds only libc handles)."""

    def __init__(self) -> None:
        machine = platform.machine().lower()
        if machine not in _SYS_FUTEX:  # pragma: no cover - unsupported architecture
            raise OSError(f"no futex syscall number known for {machine}")
        self._nr = _SYS_FUTEX[machine]
        self._sleeping = ctypes.CDLL(None, use_errno=True).syscall
        self._quick = ctypes.PyDLL(None, use_errno=True).syscall

    @staticmethod
    def pointer(address: int) -> ctypes.c_void_p:
        return ctypes.c_void_p(address)

    def wait(self, address: int, expected: int, timeout: float | None) -> bool:
        """Sleep while the u32 at ``address`` equals ``expected``, at most ``timeout`` seconds.

        Returns False on timeout, True otherwise (woken, value already different, or a signal:
        the caller re-checks its condition in every case, so spurious returns are harmless).
        """
        ts_ref = None
        if timeout is not None:
            ts = Timespec()
            ts.set(timeout)
            ts_ref = ctypes.byref(ts)
        return self.wait_ptr(ctypes.c_void_p(address), expected, ts_ref)

    def wait_ptr(self, ptr: ctypes.c_void_p, expected: int, ts_ref: object) -> bool:
        """``wait`` with a prepared pointer and ``ctypes.byref(Timespec)`` (None: no timeout)."""
        v = expected & 0xFFFF_FFFF
        rc = self._sleeping(self._nr, ptr, FUTEX_WAIT, v - (1 << 32) if v >= 1 << 31 else v,
                            ts_ref, None, 0)
        if rc == -1:
            err = ctypes.get_errno()
            if err == errno.ETIMEDOUT:
                return False
            if err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, f"futex wait failed: {errno.errorcode.get(err, err)}")
        return True

    def wake(self, address: int, count: int = WAKE_ALL) -> int:
        """Wake up to ``count`` waiters on ``address``; returns how many were woken."""
        return self.wake_ptr(ctypes.c_void_p(address), count)

    def wake_ptr(self, ptr: ctypes.c_void_p, count: int = WAKE_ALL) -> int:
        rc = self._quick(self._nr, ptr, FUTEX_WAKE, count, None, None, 0)
        if rc == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"futex wake failed: {errno.errorcode.get(err, err)}")
        return int(rc)
