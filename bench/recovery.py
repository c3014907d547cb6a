"""Recovery: how long a person waits for an answer after splinfer dies or hangs (issue 8).

Cases, each sampled ``--samples`` times (5 with ``--quick``):

1. ``systemd_kill_to_answer``: the stack under a real ``systemd --user`` (the test harness,
   runa.testing.usermanager) with gilgul; SIGKILL splinfer's main process, then ask through
   the bus until an answer arrives. Time from the kill to the answer's last envelope.
2. ``watchdog_hang_to_answer``: the same stack; SIGSTOP splinfer, so only its watchdog
   (``WatchdogSec=``, in ``params``) notices; time from the stop to the answer.
3. ``fallback_kill_to_answer``: the same kill under ``runa up`` (gilgul's own supervisor,
   no systemd). The full run adds ``fallback_watchdog_hang_to_answer``.
4. Baseline ``bare_systemd_restart``: a bare ``Type=notify`` Python service with
   ``Restart=always``, ``RestartSec=0`` in the same manager; SIGKILL to active again under a
   new main pid (read over D-Bus every 2 ms). The floor: systemd's own restart plus a
   Python start.

``gilgul.window_s`` is 1 s and each sample waits until the window is empty, so every kill is
a first failure (an immediate restart, no backoff). The chat model is the default one when
installed (else the tiny synthetic one, said in ``params``); each answer is one token,
greedy. Asks retry every 50 ms with a short idle timeout while splinfer is away.

    python bench/recovery.py [--quick] [--samples N]

Writes bench/results/recovery.json and prints the table. Needs root (the harness).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from cleanup import guarded, remove_segments, stop_stack
from common import Result, Target, median, report

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runa import registry  # noqa: E402
from runa.client import ServiceClient  # noqa: E402
from runa.components import load_config as load  # noqa: E402
from runa.errors import RunaError  # noqa: E402
from runa.gilgul import units  # noqa: E402
from runa.gilgul.dbus import SystemdUserManager  # noqa: E402
from runa.models.catalog import SMOLLM2_135M  # noqa: E402
from runa.paths import Paths, personal_stack  # noqa: E402
from runa.protocol import splinfer as splinfer_ops  # noqa: E402
from runa.stackbus import connect  # noqa: E402
from runa.supervisor import state as state_file  # noqa: E402
from runa.testing.tiny_gguf import write_tiny_gguf  # noqa: E402
from runa.testing.usermanager import UserManager  # noqa: E402

RUNA = str(Path(sys.executable).with_name("runa"))
WATCHDOG_SEC = 2
WINDOW_S = 1.0
BARE_UNIT = "bench-bare-notify.service"  # not runa-*: the harness drop-in would apply
BARE_SERVICE = (
    "import os, socket, time\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(86400)\n"
)
CONFIG = f"""\
[splinfer]
ctx_size = 512
threads = 2


[gilgul]
window_s = {WINDOW_S}
escalate_after = 1000

[components.splinfer]
watchdog_sec = {WATCHDOG_SEC}
"""


def chat_model(root: Path) -> tuple[Path, str]:
    for directory in Paths.for_stack(personal_stack()).models:
        candidate = directory / SMOLLM2_135M.filename
        if candidate.is_file() and candidate.stat().st_size == SMOLLM2_135M.size:
            return candidate, SMOLLM2_135M.filename
    return write_tiny_gguf(root / "tiny.gguf"), "tiny synthetic GGUF (default model missing)"


def base_env(root: Path, model: Path, stack: str) -> dict[str, str]:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/runa.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    return env | {"RUNA_STACK": stack, "RUNA_SYSCONFDIR": str(root / "etc"),
                  "HOME": str(root / "home"), "XDG_CONFIG_HOME": str(root / "home/.config"),
                  "XDG_DATA_HOME": str(root / "home/.local/share"),
                  "XDG_STATE_HOME": str(root / "home/.local/state"),
                  "RUNA_SPLINFER_MODEL": str(model), "RUNA_LOG_TARGET": "journal"}


class Asker:
    """Asks splinfer one greedy token through the bus, retrying until it answers."""

    def __init__(self, env: dict[str, str]) -> None:
        paths = Paths.for_stack(env["RUNA_STACK"], env)
        self.config = load(paths, env)
        self.stack = env["RUNA_STACK"]

    def answer_once(self) -> bool:
        try:
            with connect(self.config, self.stack) as bus, \
                    ServiceClient(bus, "splinfer", "bench") as client:
                client.call(splinfer_ops.chat("hi", params={"n_predict": 1, "temp": 0}),
                            idle_timeout=0.5)
            return True
        except (RunaError, OSError):
            return False

    def until_answer(self, timeout: float = 60.0) -> float:
        """Seconds (monotonic) at which the first answer completed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answer_once():
                return time.monotonic()
            time.sleep(0.05)
        raise RuntimeError("splinfer did not answer within 60 s")


def fault_to_answer(asker: Asker, pid_of: Callable[[], int], signum: signal.Signals,
                    samples: int, last_failure: list[float]) -> list[float]:
    """Milliseconds from ``signum`` to an answer, per sample; each a first failure."""
    out = []
    for _ in range(samples):
        asker.until_answer()
        wait = last_failure[0] + WINDOW_S + 0.2 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        pid = pid_of()
        start = time.monotonic()
        os.kill(pid, signum)
        last_failure[0] = start
        # A stopped process is still there: wait until it is replaced, then ask.
        deadline = start + 60
        while pid_of() in (pid, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        out.append((asker.until_answer() - start) * 1000)
    return out


# -- under systemd ------------------------------------------------------------------------------

@contextmanager
def systemd_stack(manager: UserManager, model: Path) -> Iterator[tuple[dict[str, str], Any]]:
    root = manager.runtime_dir / f"runa-bench-recovery-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    env = base_env(root, model, f"b{os.getpid()}")
    rendered = units.render(registry.load(root / "etc"))
    unit_dir = manager.unit_dir
    shutil.rmtree(manager.runtime_dir / "runa/gilgul", ignore_errors=True)
    units.write(rendered, unit_dir)
    manager.use_runa(RUNA, {k: v for k, v in env.items()
                            if k.startswith(("RUNA_", "XDG_", "HOME")) and k != "XDG_RUNTIME_DIR"})
    systemd_env = {**os.environ, **manager.env}

    def systemctl(*args: str) -> None:
        subprocess.run(["systemctl", "--user", *args], env=systemd_env, check=False,
                       capture_output=True, timeout=30)

    dbus = SystemdUserManager.connect(manager.env)
    try:
        systemctl("daemon-reload")
        systemctl("start", "runa.target")
        yield env, dbus
    finally:
        systemctl("stop", "runa.target", BARE_UNIT)
        for name in [*rendered, BARE_UNIT]:
            systemctl("reset-failed", name)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        manager.forget_runa()
        systemctl("daemon-reload")
        dbus.close()
        remove_segments(env["RUNA_STACK"])
        shutil.rmtree(root, ignore_errors=True)


def main_pid(dbus: Any, unit: str) -> int:
    state = dbus.unit_state(unit)
    return int(state.get("MainPID", 0)) if state.get("ActiveState") == "active" else 0


def bare_restart(manager: UserManager, dbus: Any, samples: int) -> list[float]:
    (manager.unit_dir / BARE_UNIT).write_text(
        "[Unit]\nDescription=bench: a bare notify service\nStartLimitIntervalSec=0\n"
        f"[Service]\nType=notify\nRestart=always\nRestartSec=0\n"
        f"ExecStart=/usr/bin/python3 -S -c \"{BARE_SERVICE.replace(chr(10), '; ')}\"\n")
    env = {**os.environ, **manager.env}
    subprocess.run(["systemctl", "--user", "daemon-reload"], env=env, check=True, timeout=30)
    subprocess.run(["systemctl", "--user", "start", BARE_UNIT], env=env, check=True, timeout=30)
    out = []
    for _ in range(samples):
        pid = main_pid(dbus, BARE_UNIT)
        start = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while main_pid(dbus, BARE_UNIT) in (pid, 0):
            if time.monotonic() - start > 30:
                raise RuntimeError(f"{BARE_UNIT} did not come back")
            time.sleep(0.002)
        out.append((time.monotonic() - start) * 1000)
        time.sleep(0.2)
    return out


# -- under runa up --------------------------------------------------------------------------------

@contextmanager
def fallback_stack(model: Path) -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="runa-bench-recovery-"))
    env = base_env(root, model, f"f{os.getpid()}") | {"XDG_RUNTIME_DIR": str(root / "run")}
    (root / "run").mkdir(mode=0o700)
    try:
        up = subprocess.run([sys.executable, "-m", "runa", "up", "--detach"], env=env,
                            capture_output=True, text=True, timeout=120)
        if up.returncode != 0:
            raise RuntimeError(f"runa up failed: {up.stderr}")
        yield env
    finally:
        stop_stack(env)
        shutil.rmtree(root, ignore_errors=True)


def supervised_pid(env: dict[str, str]) -> int:
    current = state_file.read(Path(env["XDG_RUNTIME_DIR"]) / "runa/supervisor.json") or {}
    for component in current.get("components", []):
        if component["name"] == "splinfer" and component["state"] == "running":
            return int(component["pid"] or 0)
    return 0


def main(cleanups: ExitStack) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 samples a case, under 60 s")
    parser.add_argument("--samples", type=int, default=None)
    args = parser.parse_args()
    samples = args.samples or (5 if args.quick else 15)
    began = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="runa-bench-model-"))
    cleanups.callback(shutil.rmtree, scratch, ignore_errors=True)
    model, model_name = chat_model(scratch)
    result = Result("recovery", {
        "quick": args.quick, "samples": samples, "WatchdogSec": WATCHDOG_SEC,
        "gilgul_window_s": WINDOW_S, "model": model_name, "answer": "1 token, greedy",
        "policy": "default",  # the stacks run as shipped: policy.default
        "loadavg_start": round(os.getloadavg()[0], 2)})
    raw: dict[str, list[float]] = {}
    last = [0.0]
    with UserManager() as manager, systemd_stack(manager, model) as (env, dbus):
        asker = Asker(env)
        raw["systemd_kill_to_answer"] = fault_to_answer(
            asker, lambda: main_pid(dbus, "runa-splinfer.service"), signal.SIGKILL, samples,
            last)
        raw["watchdog_hang_to_answer"] = fault_to_answer(
            asker, lambda: main_pid(dbus, "runa-splinfer.service"), signal.SIGSTOP, samples,
            last)
        raw["bare_systemd_restart"] = bare_restart(manager, dbus, samples)
    with fallback_stack(model) as env:
        asker, last = Asker(env), [0.0]
        raw["fallback_kill_to_answer"] = fault_to_answer(
            asker, lambda: supervised_pid(env), signal.SIGKILL, samples, last)
        if not args.quick:
            raw["fallback_watchdog_hang_to_answer"] = fault_to_answer(
                asker, lambda: supervised_pid(env), signal.SIGSTOP, samples, last)
    for name, values in raw.items():
        target = result.baselines if name.startswith("bare_") else result.metrics
        target[f"{name}_p50_ms"] = round(median(values), 1)
        if name != "bare_systemd_restart":
            result.metrics[f"{name}_max_ms"] = round(max(values), 1)
    result.params["samples_ms"] = {k: [round(v, 1) for v in vs] for k, vs in raw.items()}
    result.params["loadavg_end"] = round(os.getloadavg()[0], 2)
    result.params["duration_s"] = round(time.monotonic() - began, 1)
    hang_limit = (WATCHDOG_SEC + 2) * 1000
    result.targets = [Target("systemd_kill_to_answer_p50_ms", "<=", 2000),
                      Target("fallback_kill_to_answer_p50_ms", "<=", 2000),
                      Target("watchdog_hang_to_answer_p50_ms", "<=", hang_limit)]
    if "fallback_watchdog_hang_to_answer" in raw:
        result.targets.append(Target("fallback_watchdog_hang_to_answer_p50_ms", "<=",
                                     hang_limit))
    return report(result)


if __name__ == "__main__":
    with guarded("bench/recovery.py") as cleanups:
        sys.exit(main(cleanups))
