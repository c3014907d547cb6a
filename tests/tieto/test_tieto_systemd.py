"""tieto under a real ``systemd --user``: killed, reincarnated by gilgul, answering again.

A stack of keeper, tieto (the real all-MiniLM-L6-v2) and gilgul, from units rendered by
``runa.gilgul.units`` (splinfer is disabled in the registry: nothing here needs the chat
model), run with this checkout's ``runa`` (the harness drop-in), as in
tests/test_gilgul_systemd.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import remove_segments, runa, wait_for

from runa import registry
from runa.gilgul import units

pytestmark = pytest.mark.real_systemd

RUNA = str(Path(sys.executable).with_name("runa"))
CONFIG = """\
[gilgul]
backoff_initial_s = 0.5
backoff_max_s = 2.0
heartbeat_timeout_s = 5.0
"""
NO_SPLINFER = ("[components.splinfer]\nenabled = false\n"
               # threadwell's own is tests/threadwell/test_systemd.py
               "[components.threadwell]\nenabled = false\n")


def test_tieto_killed_is_restarted_by_gilgul_and_answers_again(user_manager, minilm_gguf
                                                                ) -> None:
    root = user_manager.runtime_dir / f"runa-tieto-test-{os.getpid()}"  # outside PrivateTmp=
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc/components.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/runa.toml").write_text(CONFIG)
    (root / "etc/components.d/50-no-splinfer.toml").write_text(NO_SPLINFER)
    docs = root / "docs"
    docs.mkdir()
    (docs / "car.md").write_text("The car insurance renews every March.\n")
    (docs / "boat.md").write_text("The sailing boat is moored at the south harbour.\n")
    common = {"RUNA_STACK": f"k{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
              "XDG_CONFIG_HOME": str(root / "home/.config"),
              "XDG_DATA_HOME": str(root / "home/.local/share"),
              "XDG_STATE_HOME": str(root / "home/.local/state"),
              "RUNA_TIETO_EMBEDDING_MODEL": str(minilm_gguf)}
    unit_dir = user_manager.unit_dir
    rendered = units.render(registry.load(root / "etc"))
    wants = next(ln for ln in rendered["runa.target"].splitlines() if ln.startswith("Wants="))
    assert "runa-tieto.service" in wants and "runa-splinfer.service" not in wants
    units.write(rendered, unit_dir)
    user_manager.use_runa(RUNA, {**common, "RUNA_LOG_TARGET": "journal"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env = {**env, **common, "HOME": str(root / "home")}
    systemd_env = {**os.environ, **user_manager.env}

    def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=systemd_env,
                              capture_output=True, text=True, check=check, timeout=30)

    def show(prop: str) -> str:
        return systemctl("show", "runa-tieto.service", "-p", prop, "--value").stdout.strip()

    def health() -> dict[str, object] | None:
        got = runa("bus", "get", "tieto:health", env=env)
        return json.loads(got.stdout) if got.returncode == 0 and got.stdout.strip() else None

    def recall() -> subprocess.CompletedProcess[str]:
        return runa("recall", "--json", "--topic", "notes", "when does the insurance renew",
                    env=env, timeout=120)

    try:
        systemctl("daemon-reload")
        systemctl("start", "runa.target")
        wait_for(lambda: show("ActiveState") == "active" and health(), 60,
                 "runa-tieto.service to be active and heartbeating")
        ingest = runa("ingest", "--topic", "notes", str(docs), env=env, timeout=180)
        assert ingest.returncode == 0, ingest.stderr
        before = recall()
        assert before.returncode == 0, before.stderr
        assert json.loads(before.stdout)["hits"][0]["source"].endswith("car.md")
        first = health()
        assert first is not None
        pid = int(show("MainPID"))
        os.kill(pid, signal.SIGKILL)

        def replaced() -> bool:
            now = int(show("MainPID") or 0)
            beat = health()
            return bool(now and now != pid and show("ActiveState") == "active" and beat
                        and beat["pid"] == now)

        wait_for(replaced, 60, "tieto to be active again under a new pid")
        again = health()
        assert again is not None and int(again["incarnation"]) > int(first["incarnation"])  # type: ignore[call-overload]
        after = recall()
        assert after.returncode == 0, after.stderr
        assert json.loads(after.stdout)["hits"] == json.loads(before.stdout)["hits"]
    finally:
        systemctl("stop", "runa.target", check=False)
        for name in rendered:
            systemctl("reset-failed", name, check=False)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        user_manager.forget_runa()
        systemctl("daemon-reload", check=False)
        remove_segments(common)
        shutil.rmtree(root, ignore_errors=True)
