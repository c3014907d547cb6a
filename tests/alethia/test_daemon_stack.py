"""alethia in a running stack (``runa up``: the supervisor plays gilgul and runs the broker): it
gets its keys from coven through gilgul, remembers a turn, is killed (SIGKILL) after the stated
durability bound, is restarted by gilgul and still lists the turn; ``runa status`` shows it."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import isolated_env, remove_segments, runa, wait_for

from runa import stackbus as bus_mod
from runa.alethia.store import Durability
from runa.client import ServiceClient
from runa.components import load_config
from runa.crypto.sealed import BusKey, key_path
from runa.paths import Paths
from runa.protocol import memory

TEXT = "a-turn-the-stack-keeps-5e21"
LIGHT = ("[components.splinfer]\nenabled = false\n[components.tieto]\nenabled = false\n")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    (tmp_path / "stack").mkdir()
    env = isolated_env(tmp_path / "stack", alethia=True)
    (tmp_path / "stack/etc/components.d/20-light.toml").write_text(LIGHT)
    up = runa("up", "--detach", env=env)
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        runa("down", env=env)
        remove_segments(env)


def component(env: dict[str, str], name: str) -> dict[str, Any]:
    status = json.loads(runa("status", "--json", env=env).stdout)
    return next(c for c in status["components"] if c["name"] == name)


class Memory:
    """A sealed client of the stack's alethia queue."""

    def __init__(self, env: dict[str, str]) -> None:
        paths = Paths.for_stack(env["RUNA_STACK"], env)
        config = load_config(paths, env)
        self.bus = bus_mod.connect(config, env["RUNA_STACK"], memory.BUS)
        self.key = BusKey.load_or_create(key_path(paths.runtime))
        self.client = ServiceClient(self.bus, memory.SERVICE, "test")

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        payload = self.client.call(self.key.seal(memory.SEALED_CONTEXTS["request"],
                                                 memory.OPS[op].request(**fields)),
                                   idle_timeout=30)
        opened = self.key.open(memory.SEALED_CONTEXTS["reply"], payload)
        try:
            return opened.fields
        finally:
            opened.wipe()

    def close(self) -> None:
        self.client.close()
        self.key.close()
        self.bus.close()


def test_a_turn_survives_sigkill_and_gilgul_s_restart(stack: dict[str, str]) -> None:
    wait_for(lambda: component(stack, "alethia")["status"] == "open", 30,
             "alethia to open its store with keys from coven")
    status = runa("status", env=stack).stdout
    assert any(line.split()[:2] == ["alethia", "running"] and line.endswith("open")
               for line in status.splitlines()), status
    client = Memory(stack)
    try:
        record_id = client.call("append", conversation="c1", user=TEXT, answer="ok")["id"]
        time.sleep(Durability().ms / 1000 * 2)  # past the stated bound: on disk and signed
        before = component(stack, "alethia")
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(lambda: (lambda c: c["pid"] not in (None, before["pid"])
                          and c["status"] == "open")(component(stack, "alethia")), 60,
                 "gilgul to restart alethia")
        entries = client.call("list")["entries"]
        assert [e["id"] for e in entries] == [record_id]
        assert client.call("show", id=record_id)["record"]["body"]["user"] == TEXT
        assert client.call("status")["key_version"] == 1
    finally:
        client.close()
    data = Path(stack["XDG_DATA_HOME"]) / "runa/alethia"
    written = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert written and TEXT.encode() not in written
