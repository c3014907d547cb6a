"""Every process a secret passes through is out of core dumps: ``undumpable`` itself, `runa
secret` (any subcommand, before anything is read) and the supervisor under `runa up`."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

from support import runa, wait_for

# Runs its arguments as `runa …` in this process, then says what the process became: a flag
# read by the process itself, since root (who runs these tests) can read any /proc entry.
SAY_AFTER = """
import ctypes, resource, sys
from runa.cli.main import main
from runa.crypto.process import PR_GET_DUMPABLE, libc_prctl
if sys.argv[1:]:
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(libc_prctl(PR_GET_DUMPABLE, 0), resource.getrlimit(resource.RLIMIT_CORE)[0],
      file=sys.stderr)
"""

UNDUMPABLE = """
import ctypes, resource, sys
from runa.crypto.process import PR_GET_DUMPABLE, libc_prctl, undumpable
before = libc_prctl(PR_GET_DUMPABLE, 0)
undumpable()
print(before, libc_prctl(PR_GET_DUMPABLE, 0), resource.getrlimit(resource.RLIMIT_CORE))
"""


def _cores_allowed() -> None:
    """In the child: core dumps up to the hard limit, so that a limit of 0 is the code's."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _after(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", SAY_AFTER, *args], env=env,
                          capture_output=True, text=True, timeout=60,
                          preexec_fn=_cores_allowed)
    return done.stderr.strip().splitlines()[-1]


def test_undumpable_clears_the_flag_and_the_core_limit(runa_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", UNDUMPABLE], env=runa_env,
                          capture_output=True, text=True, timeout=30, check=True,
                          preexec_fn=_cores_allowed)
    assert done.stdout.split() == ["1", "0", "(0,", "0)"]


def test_runa_secret_makes_itself_undumpable_before_anything_else(
        runa_env: dict[str, str]) -> None:
    assert _after(env=runa_env) != "0 0"  # at first: dumpable, cores allowed
    # No stack runs: the command fails to reach the broker, undumpable all the same.
    assert _after("secret", "status", env=runa_env) == "0 0"
    assert _after("secret", "get", "api.token", env=runa_env) == "0 0"
    assert _after("status", env=runa_env).startswith("1 ")  # only the secret command


def test_under_runa_up_the_supervisor_dumps_no_core(runa_env: dict[str, str]) -> None:
    off = Path(runa_env["RUNA_SYSCONFDIR"]) / "components.d/20-splinfer-off.toml"
    off.write_text("[components.splinfer]\nenabled = false\n"
                   "[components.coven]\nenabled = false\n")
    up = subprocess.run([sys.executable, "-m", "runa", "up", "--detach"], env=runa_env,
                        capture_output=True, text=True, timeout=60, preexec_fn=_cores_allowed)
    assert up.returncode == 0, up.stderr
    try:
        state = Path(runa_env["XDG_RUNTIME_DIR"]) / "runa/supervisor.json"
        pid = wait_for(lambda: json.loads(state.read_text()).get("supervisor_pid"), 10,
                       "the supervisor's pid")
        limits = Path(f"/proc/{pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core"))
        assert core.split()[4:6] == ["0", "0"], core
    finally:
        runa("down", env=runa_env)
