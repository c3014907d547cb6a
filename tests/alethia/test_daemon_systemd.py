"""alethia under a real ``systemd --user``, in its sandboxed unit: ``runa.target`` with the
keeper, coven, alethia and gilgul (whose broker hands alethia its keys, identified by its unit);
a turn is remembered, alethia is killed (SIGKILL), gilgul restarts it and the turn is still
listed, and its data directory holds no turn in the clear.

The units are rendered by ``runa.gilgul.units`` and run with this checkout's ``runa`` (the
harness drop-in), as in tests/coven/test_daemon_systemd.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import remove_segments, wait_for

from runa import registry
from runa import stackbus as bus_mod
from runa.client import ServiceClient
from runa.components import load_config
from runa.crypto.sealed import BusKey, key_path
from runa.gilgul import units
from runa.paths import Paths
from runa.protocol import memory

pytestmark = pytest.mark.real_systemd

RUNA = str(Path(sys.executable).with_name("runa"))
CHECKOUT = Path(__file__).resolve().parents[2]
TEXT = "a-turn-systemd-keeps-93ad"
MEMORY_STACK = ("[components.splinfer]\nenabled = false\n[components.tieto]\nenabled = false\n"
                "[components.whisper]\nenabled = false\n")


def test_alethia_s_unit_gets_its_keys_through_gilgul_and_keeps_a_turn_across_sigkill(
        user_manager: Any) -> None:
    root = user_manager.runtime_dir / f"runa-alethia-test-{os.getpid()}"  # outside PrivateTmp=
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc/components.d").mkdir(parents=True)
    (root / "etc/components.d/50-memory.toml").write_text(MEMORY_STACK)
    common = {"RUNA_STACK": f"m{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
              "XDG_CONFIG_HOME": str(root / "home/.config"),
              "XDG_DATA_HOME": str(root / "home/.local/share"),
              "XDG_STATE_HOME": str(root / "home/.local/state"),
              "PYTHONPATH": str(CHECKOUT)}
    unit_dir = user_manager.unit_dir
    rendered = units.render(registry.load(root / "etc"))
    for name in rendered:
        shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
    shutil.rmtree(user_manager.runtime_dir / "runa/gilgul", ignore_errors=True)
    units.write(rendered, unit_dir)
    user_manager.use_runa(RUNA, {**common, "RUNA_LOG_TARGET": "journal"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNA_")}
    env = {**env, **common, **user_manager.env, "HOME": str(root / "home")}

    def systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=env, capture_output=True,
                              text=True, check=check, timeout=30)

    def show(prop: str) -> str:
        return systemctl("show", "runa-alethia.service", "-p", prop, "--value").stdout.strip()

    client: ServiceClient | None = None
    try:
        systemctl("daemon-reload")
        systemctl("start", "runa.target")
        wait_for(lambda: show("StatusText") == "open", 90,
                 "runa-alethia.service to open its store with keys from coven")
        assert show("LimitCORE") == "0" and show("MemoryMax") == str(768 << 20)

        paths = Paths.for_stack(common["RUNA_STACK"], env)
        bus = bus_mod.connect(load_config(paths, env), common["RUNA_STACK"], memory.BUS)
        key = BusKey.load_or_create(key_path(paths.runtime))
        client = ServiceClient(bus, memory.SERVICE, "test")

        def call(op: str, **fields: Any) -> dict[str, Any]:
            assert client is not None
            payload = client.call(key.seal(memory.SEALED_CONTEXTS["request"],
                                           memory.OPS[op].request(**fields)), idle_timeout=30)
            return key.open(memory.SEALED_CONTEXTS["reply"], payload).fields

        record_id = call("append", conversation="c1", user=TEXT, answer="ok")["id"]
        call("sign")  # written and signed: nothing pending when it is killed
        before = show("MainPID")
        os.kill(int(before), signal.SIGKILL)
        wait_for(lambda: show("MainPID") not in ("0", before) and show("StatusText") == "open",
                 60, "gilgul to restart runa-alethia.service")
        assert [e["id"] for e in call("list")["entries"]] == [record_id]
        assert call("show", id=record_id)["record"]["body"]["user"] == TEXT

        data = paths.data / "alethia"
        written = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
        assert written and TEXT.encode() not in written
    finally:
        if client is not None:
            client.close()
        systemctl("stop", "runa.target", check=False)
        for name in rendered:
            systemctl("reset-failed", name, check=False)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        user_manager.forget_runa()
        systemctl("daemon-reload", check=False)
        remove_segments(common)
        shutil.rmtree(root, ignore_errors=True)
