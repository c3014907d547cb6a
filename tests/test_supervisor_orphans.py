"""The supervisor as a subreaper: it reaps what it adopts, never a process of its own."""

from __future__ import annotations

import subprocess
import sys

# Becomes a subreaper, starts a child of its own that exits 3, and a "component" whose
# double-forked process exits at once (adopted, then a zombie). Prints what it reaped.
SCRIPT = """
import os, subprocess, sys, time
from pathlib import Path
from runa.supervisor.orphans import become_subreaper, reap_adopted

become_subreaper()
mine = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
os.waitid(os.P_PID, mine.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped
component = os.fork()
if component == 0:
    if os.fork() == 0:
        os._exit(0)
    os._exit(0)
os.waitpid(component, 0)
children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
while len(children.read_text().split()) < 2:  # the orphan, re-parented here
    time.sleep(0.01)
time.sleep(0.2)  # and ended
first = reap_adopted(lambda: {mine.pid})
code = mine.wait()
second = reap_adopted(lambda: set())
print(first, code, second, len(children.read_text().split()))
"""


def test_the_supervisor_reaps_the_orphans_it_adopts_and_leaves_its_own_children() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    first, code, second, left = done.stdout.split()
    # Its own child came first: left to its Popen, which reads the real status (not 0).
    assert (first, code) == ("0", "3")
    assert (second, left) == ("1", "0")  # the orphan reaped: no zombie left
