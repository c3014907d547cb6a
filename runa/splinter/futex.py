"""Futex wait/wake on a 32-bit word of a shared mapping, through ctypes.

Non-private futexes (no FUTEX_PRIVATE_FLAG) so waiters and wakers may be different processes.
A blocked waiter costs no CPU; every wait is bounded so a service can still ping its watchdog.
Addresses are passed as ``c_void_p``: a bare Python int would be truncated to 32 bits by ctypes
(notes/baselines-bus.md).
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


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class Futex:
    """Wait and wake on futex words; one instance per open bus (it holds only the libc handle)."""

    def __init__(self) -> None:
        machine = platform.machine().lower()
        if machine not in _SYS_FUTEX:  # pragma: no cover - unsupported architecture
            raise OSError(f"no futex syscall number known for {machine}")
        self._nr = _SYS_FUTEX[machine]
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall

    def wait(self, address: int, expected: int, timeout: float | None) -> bool:
        """Sleep while the u32 at ``address`` equals ``expected``, at most ``timeout`` seconds.

        Returns False on timeout, True otherwise (woken, value already different, or a signal:
        the caller re-checks its condition in every case, so spurious returns are harmless).
        """
        if timeout is None:
            ts_ptr = None
        else:
            t = max(timeout, 0.0)
            frac, whole = math.modf(t)
            ts_ptr = ctypes.byref(_Timespec(int(whole), int(frac * 1e9)))
        rc = self._syscall(
            self._nr, ctypes.c_void_p(address), FUTEX_WAIT, _as_int32(expected), ts_ptr, None, 0
        )
        if rc == -1:
            err = ctypes.get_errno()
            if err == errno.ETIMEDOUT:
                return False
            if err not in (errno.EAGAIN, errno.EINTR):
                raise OSError(err, f"futex wait failed: {errno.errorcode.get(err, err)}")
        return True

    def wake(self, address: int, count: int = WAKE_ALL) -> int:
        """Wake up to ``count`` waiters on ``address``; returns how many were woken."""
        rc = self._syscall(self._nr, ctypes.c_void_p(address), FUTEX_WAKE, count, None, None, 0)
        if rc == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"futex wake failed: {errno.errorcode.get(err, err)}")
        return int(rc)


def _as_int32(value: int) -> int:
    """The low 32 bits of ``value`` as a signed C int (what ctypes passes for an untyped int)."""
    v = value & 0xFFFF_FFFF
    return v - (1 << 32) if v >= 1 << 31 else v
