"""coven in a running stack (``runa up``: the supervisor plays gilgul and runs the broker), as a
person uses it with ``runa secret``: a secret survives a restart; a passphrase vault starts
locked, says so in ``runa status``, and a wrong passphrase changes nothing; after a full run
the value is nowhere — not in the journal, not in any process's command line or environment,
not in any file Runa wrote (issue 21, Done means 1 and 4)."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import remove_segments, runa, wait_for

from runa.splinter import segment_paths
from runa.testing.tiny_gguf import write_tiny_gguf

PASSPHRASE = "a passphrase for the test vault"


@pytest.fixture(scope="module")
def value() -> bytes:
    """A value no file, log or process could hold by chance."""
    return f"leak-check-{secrets.token_hex(16)}".encode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from support import isolated_env

    root = tmp_path_factory.mktemp("coven-stack")
    model = write_tiny_gguf(root / "tiny.gguf", context_length=512)
    env = {**isolated_env(root), "RUNA_SPLINFER_MODEL": str(model)}
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        runa("down", env=env)
        remove_segments(env)


def secret(env: dict[str, str], *args: str, stdin: bytes | None = None
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "runa", "secret", *args], env=env, input=stdin,
                          capture_output=True, timeout=60)


def restart(env: dict[str, str]) -> None:
    assert runa("down", env=env).returncode == 0
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr


def vault_file(env: dict[str, str]) -> Path:
    return Path(env["XDG_DATA_HOME"]) / "runa/coven/vault"


def vault_line(env: dict[str, str]) -> str:
    status = runa("status", env=env)
    return next(line for line in status.stdout.splitlines() if line.startswith("vault:"))


def test_a_secret_set_is_the_same_after_the_stack_restarts(stack: dict[str, str],
                                                          value: bytes) -> None:
    stored = secret(stack, "set", "api.key", "-", stdin=value)
    assert stored.returncode == 0, stored.stderr
    restart(stack)
    got = secret(stack, "get", "api.key")
    assert (got.returncode, got.stdout) == (0, value)
    assert vault_line(stack).startswith("vault: unlocked (key file")


def test_a_passphrase_vault_starts_locked_and_a_wrong_passphrase_changes_nothing(
        stack: dict[str, str], value: bytes) -> None:
    secret(stack, "set", "api.key", "-", stdin=value)
    rotated = secret(stack, "rotate", "--passphrase", stdin=PASSPHRASE.encode())
    assert rotated.returncode == 0, rotated.stderr
    restart(stack)
    assert vault_line(stack).startswith("vault: locked (passphrase)")
    assert "runa secret unlock" in vault_line(stack)
    locked = secret(stack, "get", "api.key")
    assert locked.returncode == 69 and b"is locked" in locked.stderr and not locked.stdout

    before = vault_file(stack).read_bytes()
    wrong = secret(stack, "unlock", stdin=b"not the passphrase")
    assert wrong.returncode == 77 and b"wrong passphrase" in wrong.stderr
    assert vault_file(stack).read_bytes() == before
    assert vault_line(stack).startswith("vault: locked")

    right = secret(stack, "unlock", stdin=PASSPHRASE.encode())
    assert right.returncode == 0, right.stderr
    got = secret(stack, "get", "api.key")
    assert (got.returncode, got.stdout) == (0, value)
    back = secret(stack, "rotate", "--key-file")
    assert back.returncode == 0, back.stderr


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                yield path


def _journal_since(since: float) -> bytes | None:
    if shutil.which("journalctl") is None:
        return None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    done = subprocess.run(["journalctl", "--no-pager", "-o", "export", "--since", stamp],
                          capture_output=True, timeout=60)
    return done.stdout if done.returncode == 0 and done.stdout else None


def test_after_a_full_run_the_value_is_in_no_log_process_or_file(
        stack: dict[str, str], value: bytes) -> None:
    started = time.time() - 1
    assert secret(stack, "set", "leak.check", "-", stdin=value).returncode == 0
    assert secret(stack, "get", "leak.check").stdout == value
    assert secret(stack, "list").returncode == 0
    asked = runa("ask", "-n", "4", "Say hello.", env=stack, timeout=120)
    assert asked.returncode == 0, asked.stderr
    restart(stack)
    assert secret(stack, "get", "leak.check").stdout == value
    wait_for(lambda: vault_line(stack).startswith("vault: unlocked"), 10, "coven to be back")

    forms = (value, base64.b64encode(value), value.hex().encode())
    root = Path(stack["HOME"]).parent
    written = [*_files_under(root), *map(Path, segment_paths(stack["RUNA_STACK"]))]
    assert any(p.name == "vault" for p in written)  # the search did reach coven's files
    assert [str(p) for p in written if any(f in p.read_bytes() for f in forms)] == []

    exposed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                if value in (proc / part).read_bytes():
                    exposed.append(f"{proc.name}/{part}")
            except OSError:
                pass  # gone, or another user's
    assert exposed == []

    # The audit goes to the journal where there is one, else to the supervisor's log
    # (searched above with every file): wherever it went, it is there — the search is not
    # of an empty log — and the value is not.
    journal = _journal_since(started) or b""
    log = (Path(stack["XDG_RUNTIME_DIR"]) / "runa/supervisor.log").read_bytes()
    assert any(b"secret_access" in text and b"leak.check" in text for text in (journal, log))
    assert not any(f in journal for f in forms)


def test_coven_runs_undumpable_and_answers_only_through_the_supervisor(
        stack: dict[str, str]) -> None:
    status = secret(stack, "status", "--json")
    assert status.returncode == 0, status.stderr
    said = json.loads(status.stdout)
    assert said["dumpable"] == 0 and said["identity"] == "supervisor"
