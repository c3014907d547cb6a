"""coven under a real ``systemd --user``: its sandboxed unit starts and says where the vault
stands, a process outside gilgul's unit is refused, and a process inside a unit named
``runa-gilgul.service`` is answered (the systemd mode of runa.coven.identity).

The stack is the keeper and coven only, started unit by unit from units rendered by
``runa.gilgul.units`` and run with this checkout's ``runa`` (the harness drop-in), as in
tests/tieto/test_tieto_systemd.py. The answered client runs as a transient unit of that name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import remove_segments, runa, wait_for

from runa import registry
from runa.gilgul import units

pytestmark = pytest.mark.real_systemd

RUNA = str(Path(sys.executable).with_name("runa"))
CHECKOUT = Path(__file__).resolve().parents[2]
ONLY_COVEN = ("[components.splinfer]\nenabled = false\n[components.tieto]\nenabled = false\n"
              "[components.whisper]\nenabled = false\n")
# Asks coven for its status as "gilgul" and writes what came back to argv[1].
CLIENT = """
import json, os, sys, time
from runa import stackbus
from runa.components import load_config
from runa.crypto.sealed import BusKey, key_path
from runa.paths import Paths
from runa.splinter import envelope as env_mod
paths = Paths.for_stack(os.environ["RUNA_STACK"], os.environ)
bus = stackbus.connect(load_config(paths, os.environ), os.environ["RUNA_STACK"], "coven")
key = BusKey.load_or_create(key_path(paths.runtime))
replies = bus.queue(f"gilgul.test.{os.getpid()}")
payload = key.seal("coven/request", {"op": "status", "for": "person", "pid": 1})
query = env_mod.query("gilgul", "coven", payload, reply_to=replies.name, ttl_ms=15000)
answer = {"fault": {"name": "NO_ANSWER", "message": "coven did not answer in 15 s"}}
with bus.claim_request(query.id):  # the kernel names this process as the sender
    bus.sender("coven").send(query)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = replies.recv(0.2)
        if got is None or got.id != query.id:
            continue
        if got.type == "error":
            answer = {"fault": got.payload}
        else:
            answer = {"fields": key.open("coven/reply", got.payload).fields}
        break
with open(sys.argv[1], "w") as out:
    json.dump(answer, out)
"""


def test_coven_s_unit_answers_gilgul_s_unit_only(user_manager) -> None:
    root = user_manager.runtime_dir / f"runa-coven-test-{os.getpid()}"  # outside PrivateTmp=
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc/components.d").mkdir(parents=True)
    (root / "etc/components.d/50-only-coven.toml").write_text(ONLY_COVEN)
    common = {"RUNA_STACK": f"v{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
              "XDG_CONFIG_HOME": str(root / "home/.config"),
              "XDG_DATA_HOME": str(root / "home/.local/share"),
              "XDG_STATE_HOME": str(root / "home/.local/state"),
              "PYTHONPATH": str(CHECKOUT)}
    unit_dir = user_manager.unit_dir
    # No gilgul: its unit's name is taken below by the client that must be answered.
    rendered = {name: text for name, text in units.render(registry.load(root / "etc")).items()
                if name != "runa-gilgul.service"}
    units.write(rendered, unit_dir)
    user_manager.use_runa(RUNA, {**common, "RUNA_LOG_TARGET": "journal"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env = {**env, **common, **user_manager.env, "HOME": str(root / "home")}

    def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=env, capture_output=True,
                              text=True, check=check, timeout=30)

    def show(prop: str) -> str:
        return systemctl("show", "runa-coven.service", "-p", prop, "--value").stdout.strip()

    def ask(where: Path, *prefix: str) -> dict[str, Any]:
        done = subprocess.run([*prefix, sys.executable, "-c", CLIENT, str(where)], env=env,
                              timeout=60, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(where.read_text())

    try:
        systemctl("daemon-reload")
        systemctl("start", "runa-splinter.service", "runa-coven.service")
        wait_for(lambda: show("ActiveState") == "active"
                 and runa("bus", "get", "coven:health", env=env).stdout.strip(), 60,
                 "runa-coven.service to be active and heartbeating")
        assert show("StatusText").startswith("no vault yet")
        assert show("LimitCORE") == "0" and show("MemoryMax") == str(256 << 20)

        refused = ask(root / "outside.json")  # the test process: in no unit of Runa's
        assert refused["fault"]["name"] == "NOT_AUTHORIZED"
        assert "not runa-gilgul.service" in refused["fault"]["message"]

        user_manager.forget_runa()  # the drop-in would make the next unit 'runa daemon gilgul'
        systemctl("daemon-reload")
        inside = root / "inside.json"
        answered = ask(inside, "systemd-run", "--user", "--quiet", "--wait",
                       "--unit=runa-gilgul.service", "--property=PrivateTmp=no",
                       *(f"--setenv={key}={value}" for key, value in env.items()
                         if key.startswith(("RUNA_", "XDG_", "PYTHONPATH", "HOME"))))
        status = answered["fields"]
        assert (status["state"], status["identity"], status["dumpable"]) == \
            ("absent", "systemd", 0)
    finally:
        systemctl("stop", "runa-coven.service", "runa-splinter.service", check=False)
        for name in [*rendered, "runa-gilgul.service"]:
            systemctl("reset-failed", name, check=False)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        user_manager.forget_runa()
        systemctl("daemon-reload", check=False)
        remove_segments(common)
        shutil.rmtree(root, ignore_errors=True)
