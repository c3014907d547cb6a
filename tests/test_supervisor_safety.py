"""``runa up | down | status`` against a hostile or racing world (issue 15).

Another user's directory where the runtime directory goes, two ``runa up`` at once, a state
file naming a process that is not the supervisor, settings that cannot apply, a component
that refuses to start. Real supervisors, real components on the tiny synthetic model.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import runa

from runa.testing.tiny_gguf import write_tiny_gguf

NOBODY = 65534


@pytest.fixture
def stack_env(runa_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The isolated environment, serving the tiny synthetic model."""
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    return {**runa_env, "RUNA_SPLINFER_MODEL": str(model), "RUNA_SPLINFER_CTX_SIZE": "512",
            "RUNA_LOG_TARGET": "stderr"}


def fallback_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` without XDG_RUNTIME_DIR, with a world-writable sticky TMPDIR like /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    os.chmod(tmp, 0o1777)
    return {k: v for k, v in env.items() if k != "XDG_RUNTIME_DIR"} | {"TMPDIR": str(tmp)}


def runtime_of(env: dict[str, str]) -> Path:
    base = env.get("XDG_RUNTIME_DIR") or f"{env['TMPDIR']}/runa-{os.getuid()}"
    return Path(base) / "runa"


def supervisors(env: dict[str, str]) -> list[int]:
    """Pids of every supervisor process of the stack (``python -m runa --stack S up``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"runa" in argv and env["RUNA_STACK"].encode() in argv and argv[-2:] == [b"up", b""]:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("where", ["xdg", "fallback"])
def test_the_runtime_directory_and_every_file_in_it_are_private(
        stack_env: dict[str, str], tmp_path: Path, where: str) -> None:
    env = stack_env if where == "xdg" else fallback_env(stack_env, tmp_path)
    runtime = runtime_of(env)
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        owned = [runtime] + ([runtime.parent] if where == "fallback" else [])
        for directory in owned:
            info = directory.lstat()
            assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700, directory
        names = {p.name for p in runtime.iterdir()}
        assert {"supervisor.log", "supervisor.json", "notify.sock"} <= names
        for path in runtime.rglob("*"):
            mode = stat.S_IMODE(path.lstat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path} is {mode:04o}"
    finally:
        down = runa("down", env=env)
    assert down.returncode == 0, down.stderr


def test_an_older_runtime_directory_readable_by_others_is_closed(
        stack_env: dict[str, str]) -> None:
    """What an earlier Runa made (0755, a 0644 log): this person's own, so tightened."""
    runtime = runtime_of(stack_env)
    runtime.mkdir(mode=0o755)
    os.chmod(runtime, 0o755)
    (runtime / "supervisor.log").write_text("an old line\n")
    os.chmod(runtime / "supervisor.log", 0o644)
    up = runa("up", "--detach", env=stack_env)
    assert up.returncode == 0, up.stderr
    try:
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
        assert stat.S_IMODE((runtime / "supervisor.log").stat().st_mode) == 0o600
        assert (runtime / "supervisor.log").read_text().startswith("an old line\n")
    finally:
        runa("down", env=stack_env)


def plant(case: str, env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """Prepare a runtime directory someone else could read or control; (env, the culprit)."""
    if case.startswith("fallback"):
        env = fallback_env(env, tmp_path)
        culprit = runtime_of(env).parent  # $TMPDIR/runa-<uid>, created first by another
    else:
        culprit = runtime_of(env)  # $XDG_RUNTIME_DIR/runa
    if case.endswith("other-owner"):
        culprit.mkdir(mode=0o700)
        os.chown(culprit, NOBODY, NOBODY)
    elif case.endswith("world-writable"):
        culprit.mkdir()
        os.chmod(culprit, 0o777)
    elif case.endswith("symlink"):
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        culprit.symlink_to(target)
    return env, culprit


@pytest.mark.parametrize("case", ["xdg-other-owner", "xdg-world-writable", "xdg-symlink",
                                  "fallback-other-owner", "fallback-world-writable",
                                  "fallback-symlink"])
def test_a_runtime_directory_others_control_is_refused(
        stack_env: dict[str, str], tmp_path: Path, case: str) -> None:
    env, culprit = plant(case, stack_env, tmp_path)
    before = sorted(p.name for p in culprit.iterdir())
    for command in (["up", "--detach"], ["up"], ["status"], ["down"]):
        result = runa(*command, env=env)
        assert result.returncode == 77, (command, result.stdout, result.stderr)
        assert f"{culprit} is " in result.stderr and "refusing to use it" in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in culprit.iterdir()) == before  # nothing written there
    assert not supervisors(env)


def test_two_ups_at_once_run_one_supervisor_and_the_stack_works(
        stack_env: dict[str, str]) -> None:
    env = stack_env
    runtime = runtime_of(env)
    both = [subprocess.Popen([sys.executable, "-m", "runa", "up", "--detach"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    try:
        results = [(p.wait(timeout=120), *p.communicate()) for p in both]
        assert [rc for rc, _, _ in results] == [0, 0], results
        said = sorted(out for _, out, _ in results)
        holder = json.loads((runtime / "supervisor.json").read_text())["supervisor_pid"]
        assert said[0].startswith("runa: another 'runa up' started the stack"), said
        assert f"(supervisor pid {holder}); it is up" in said[0]
        first_line = said[1].splitlines()[0]
        assert first_line == f"runa: stack {env['RUNA_STACK']} is up (supervisor pid {holder})"
        assert "runa chat" in said[1]  # and the next step
        assert supervisors(env) == [holder]
        assert "Traceback" not in (runtime / "supervisor.log").read_text()
        current = json.loads(runa("status", "--json", env=env).stdout)
        assert current["healthy"] and current["supervisor_pid"] == holder
        assert all(c["incarnation"] == 0 for c in current["components"])  # none was killed
        asked = runa("ask", "--temp", "0", "-n", "2", "hi", env=env)
        assert asked.returncode == 0, asked.stderr
        again = runa("up", "--detach", env=env)  # a running stack: reconcile, as before
        assert again.returncode == 0 and "is already running" in again.stdout
    finally:
        down = runa("down", env=env)
    assert down.returncode == 0, down.stderr
    assert not supervisors(env)


def test_a_stale_state_file_never_signals_the_process_that_has_its_pid(
        stack_env: dict[str, str]) -> None:
    env = stack_env
    state_path = runtime_of(env) / "supervisor.json"
    state_path.parent.mkdir(mode=0o700)
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        state_path.write_text(json.dumps({"supervisor_pid": unrelated.pid,
                                          "stack": env["RUNA_STACK"], "components": []}))
        result = runa("status", env=env)
        assert result.returncode == 3 and "not running" in result.stdout
        down = runa("down", env=env)
        assert down.returncode == 0 and "is not running" in down.stdout, down.stderr
        assert unrelated.poll() is None, "runa down signalled an unrelated process"
        up = runa("up", "--detach", env=env)
        assert up.returncode == 0, up.stderr
        assert unrelated.poll() is None, "runa up signalled an unrelated process"
        current = json.loads(state_path.read_text())
        assert current["supervisor_pid"] != unrelated.pid
        assert runa("down", env=env).returncode == 0
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_pid_1_in_the_state_file_is_no_traceback_and_not_signalled(
        stack_env: dict[str, str]) -> None:
    """In a pid namespace of its own, so pid 1 there is a process of this test's."""
    env = stack_env
    state_path = runtime_of(env) / "supervisor.json"
    state_path.parent.mkdir(mode=0o700)
    state_path.write_text(json.dumps({"supervisor_pid": 1, "stack": env["RUNA_STACK"],
                                      "components": []}))
    script = ("import subprocess, sys, signal\n"
              "signal.signal(signal.SIGTERM, lambda *a: sys.exit('pid 1 got SIGTERM'))\n"
              "signal.signal(signal.SIGHUP, lambda *a: sys.exit('pid 1 got SIGHUP'))\n"
              "for cmd in (['status'], ['down'], ['up', '--detach'], ['down']):\n"
              "    r = subprocess.run([sys.executable, '-m', 'runa', *cmd], capture_output=True,"
              " text=True)\n"
              "    print(cmd, r.returncode, r.stdout.strip(), r.stderr.strip(), flush=True)\n")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                            script], env=env, capture_output=True, text=True, timeout=180)
    if probe.returncode and "unshare" in probe.stderr and "Operation not permitted" in \
            probe.stderr:
        pytest.skip(f"no pid namespace here: {probe.stderr.strip()}")
    assert probe.returncode == 0, probe.stdout + probe.stderr  # pid 1 was not signalled
    assert "Traceback" not in probe.stdout
    lines = [line for line in probe.stdout.splitlines() if line.startswith("['")]  # first lines
    assert lines[0].startswith("['status'] 3 ") and "not running" in lines[0]
    assert lines[1].startswith("['down'] 0 ") and "is not running" in lines[1]
    assert lines[2].startswith("['up', '--detach'] 0 ") and "is up" in lines[2]
    assert lines[3].startswith("['down'] 0 ") and "stopped" in lines[3]


def test_model_flags_on_a_running_stack_are_reported_as_ignored(
        stack_env: dict[str, str], tmp_path: Path) -> None:
    env = stack_env
    assert runa("up", "--detach", env=env).returncode == 0
    try:
        other = write_tiny_gguf(tmp_path / "other.gguf")
        again = runa("up", "--detach", "-m", str(other), "-c", "256", env=env)
        assert again.returncode == 0 and "is already running" in again.stdout
        assert "ignored -m/--model, -c/--ctx-size" in again.stderr
        assert f"'runa down' then 'runa up -m {other} -c 256'" in again.stderr
        assert "-m" not in runa("up", "--detach", env=env).stderr  # no flags, nothing said
    finally:
        runa("down", env=env)


@pytest.mark.parametrize("detach", [True, False])
def test_a_failed_start_names_the_components_own_reason(
        stack_env: dict[str, str], tmp_path: Path, detach: bool) -> None:
    missing = tmp_path / "no-such-model.gguf"
    env = {**stack_env, "RUNA_SPLINFER_MODEL": str(missing)}
    result = runa("up", *(["--detach"] if detach else []), env=env, timeout=120)
    assert result.returncode == 69, result.stderr
    assert "did not become ready: splinfer exited with status" in result.stderr
    assert str(missing) in result.stderr, result.stderr  # the component's own words
    assert "Traceback" not in result.stderr
    assert not supervisors(env)
    assert runa("status", env=env).returncode == 3
