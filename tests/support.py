"""Helpers the tests share (importable because conftest.py puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable


def runa(*args: str, env: dict[str, str], timeout: float = 60,
         check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the ``runa`` command of this checkout as a person would."""
    return subprocess.run([sys.executable, "-m", "runa", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=check)


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> object:
    """Poll ``predicate`` until it is truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
