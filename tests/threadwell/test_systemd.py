"""threadwell under a real ``systemd --user``: ``runa-threadwell.socket`` listens on loopback
and hands its sockets to the sandboxed service (PrivateNetwork=yes, AF_UNIX only), which
serves the API from them in a network namespace of its own, its key from coven through
gilgul's broker.

The units are rendered by ``runa.gilgul.units`` and run with this checkout's ``runa`` (the
harness drop-in), as in tests/alethia/test_daemon_systemd.py; splinfer runs the tiny model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import remove_segments, runa, wait_for

from runa import registry
from runa.components import packaged_schema
from runa.gilgul import units
from runa.testing.tiny_gguf import write_tiny_gguf

from .test_stack import listening

# Debian's python3, which runs the .deb's own suite, has no openai package.
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.real_systemd

RUNA = str(Path(sys.executable).with_name("runa"))
CHECKOUT = Path(__file__).resolve().parents[2]
API_STACK = ("[components.tieto]\nenabled = false\n[components.whisper]\nenabled = false\n"
             "[components.alethia]\nenabled = false\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_socket_unit_hands_loopback_sockets_to_the_sandboxed_service(
        user_manager: Any) -> None:
    root = user_manager.runtime_dir / f"runa-api-test-{os.getpid()}"  # outside PrivateTmp=
    shutil.rmtree(root, ignore_errors=True)
    (root / "etc/components.d").mkdir(parents=True)
    (root / "etc/components.d/50-api.toml").write_text(API_STACK)
    model = write_tiny_gguf(root / "tiny.gguf", context_length=512)
    port = free_port()
    common = {"RUNA_STACK": f"w{os.getpid()}", "RUNA_SYSCONFDIR": str(root / "etc"),
              "XDG_CONFIG_HOME": str(root / "home/.config"),
              "XDG_DATA_HOME": str(root / "home/.local/share"),
              "XDG_STATE_HOME": str(root / "home/.local/state"),
              "PYTHONPATH": str(CHECKOUT), "RUNA_SPLINFER_MODEL": str(model),
              "RUNA_SPLINFER_CTX_SIZE": "512", "RUNA_THREADWELL_PORT": str(port)}
    unit_dir = user_manager.unit_dir
    rendered = units.render(registry.load(root / "etc"))
    packaged = str(packaged_schema().setting("threadwell.port").default)
    # Another port than the packaged one: what a person's drop-in would say.
    rendered["runa-threadwell.socket"] = rendered["runa-threadwell.socket"].replace(
        f":{packaged}\n", f":{port}\n")
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

    def show(unit: str, prop: str) -> str:
        return systemctl("show", unit, "-p", prop, "--value").stdout.strip()

    try:
        systemctl("daemon-reload")
        systemctl("start", "runa.target")
        wait_for(lambda: show("runa-threadwell.service", "StatusText").startswith(
            "serving the API"), 120, "runa-threadwell.service to serve the API")
        assert show("runa-threadwell.socket", "ActiveState") == "active"
        assert show("runa-threadwell.service", "PrivateNetwork") == "yes"
        assert show("runa-threadwell.service", "RestrictAddressFamilies") == "AF_UNIX"

        pid = int(show("runa-threadwell.service", "MainPID"))
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        assert {address for address, at in listening("tcp") if at == port} == {"0100007F"}
        assert {address for address, at in listening("tcp6") if at == port} <= {
            "00000000000000000000000001000000"}

        shown = runa("api-key", "show", env=env)
        assert shown.returncode == 0, shown.stderr
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                               api_key=shown.stdout.strip())
        assert [m.id for m in client.models.list()] == ["tiny"]
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            temperature=0)
        assert answer.usage is not None and answer.usage.completion_tokens <= 4
    finally:
        systemctl("stop", "runa.target", "runa-threadwell.socket", check=False)
        for name in rendered:
            systemctl("reset-failed", name, check=False)
            (unit_dir / name).unlink(missing_ok=True)
            shutil.rmtree(unit_dir / f"{name}.d", ignore_errors=True)
        user_manager.forget_runa()
        systemctl("daemon-reload", check=False)
        remove_segments(common)
        shutil.rmtree(root, ignore_errors=True)
