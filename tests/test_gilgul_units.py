"""The component registry and the rendered units: committed equals rendered, verify is silent,
the sandbox keeps the bus reachable, and a bad registry is named and refused whole."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import runa

from runa import registry
from runa.components import packaged_schema
from runa.gilgul import units
from runa.registry import RegistryError

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "systemd"
VENV_RUNA = str(Path(sys.executable).with_name("runa"))
# Exposure scores recorded in docs/gilgul.md (`systemd-analyze --user security`).
MAX_EXPOSURE = {"runa-splinter.service": 1.7, "runa-splinfer.service": 1.7,
                "runa-gilgul.service": 2.2}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the registry -------------------------------------------------------------------------


def test_the_packaged_registry() -> None:
    reg = registry.load()
    assert [c.name for c in reg] == ["splinter", "whisper", "splinfer", "tieto", "coven",
                                    "alethia", "threadwell", "gilgul"]
    assert reg.manager is not None and reg.manager.name == "gilgul"
    assert [c.name for c in reg.watched] == ["splinter", "whisper", "splinfer", "tieto", "coven",
                                            "alethia", "threadwell"]
    assert reg.get("splinfer").after == ("splinter",)
    hardening = dict(reg.get("splinfer").hardening)
    assert hardening["PrivateNetwork"] is True
    assert dict(reg.get("gilgul").hardening)["PrivateNetwork"] is False  # D-Bus may be abstract


def test_overrides_merge_table_by_table_and_can_add_a_component(tmp_path: Path) -> None:
    write(tmp_path / "components.d/10-a.toml", """
[components.splinfer]
description = "Inference, as the admin calls it"
[components.splinfer.hardening]
MemoryDenyWriteExecute = false
ProtectHome = "read-only"
""")
    write(tmp_path / "components.d/20-b.toml", """
[components.demo]
description = "The demo"
factory = "runa.demo.daemon:create"
after = ["splinter"]
[components.splinfer]
timeout_start_sec = 300
""")
    reg = registry.load(tmp_path)
    splinfer = reg.get("splinfer")
    assert splinfer.description == "Inference, as the admin calls it"
    assert splinfer.timeout_start_sec == 300 and splinfer.after == ("splinter",)
    hardening = dict(splinfer.hardening)
    assert hardening["MemoryDenyWriteExecute"] is False and hardening["ProtectHome"] == "read-only"
    assert hardening["NoNewPrivileges"] is True  # the defaults stay under the override
    assert [c.name for c in reg.watched] == ["splinter", "whisper", "splinfer", "tieto", "coven",
                                            "alethia", "threadwell", "demo"]
    assert reg.sources[1:] == (str(tmp_path / "components.d/10-a.toml"),
                               str(tmp_path / "components.d/20-b.toml"))


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[components.splinfer]\nafter = 'splinter'\n", "components.splinfer.after",
         "must be a list"),
        ("[components.splinfer]\ntimeout_start_sec = 0\n", "components.splinfer.timeout_start_sec",
         "1 to 3600"),
        ("[components.splinfer]\nrestart = 'always'\n", "components.splinfer.restart",
         "unknown key"),
        ("[components.splinfer]\nrole = 'boss'\n", "components.splinfer.role", "must be one of"),
        ("[components.splinfer.hardening]\nProtectSytem = 'strict'\n",
         "components.splinfer.hardening.ProtectSytem", "not a sandboxing directive"),
        ("[components.splinfer.hardening]\nRemoveIPC = true\n",
         "components.splinfer.hardening.RemoveIPC", "would delete the bus segments"),
        ("[defaults.hardening]\nInaccessiblePaths = '-/dev/shm'\n",
         "defaults.hardening.InaccessiblePaths", "/dev/shm"),
        ("[components.splinter.hardening]\nTemporaryFileSystem = '/dev:ro'\n",
         "components.splinter.hardening.TemporaryFileSystem", "/dev/shm"),
        ("[components.splinfer]\nafter = ['demo']\n", "components.splinfer.after",
         "names no component"),
        ("[components.splinter]\nafter = ['splinfer']\n", "components.splinter.after",
         "cycle"),
        ("[components.chatbot]\ndescription = 'x'\n", "components.chatbot.factory",
         "missing: every component names the 'module:function'"),
        ("[components.chatbot]\ndescription = 'x'\nfactory = 'chatbot.daemon'\n",
         "components.chatbot.factory", "must be 'module:function'"),
        ("[components.chatbot]\ndescription = 'x'\nfactory = 'c:f'\nsettings = 'c/s.py'\n",
         "components.chatbot.settings", "must be a module name"),
        ("[components.demo]\nafter = ['splinter']\n", "components.demo.description",
         "needs a description"),
        ("[components.demo]\ndescription = 'd'\nfactory = 'd:f'\nrole = 'manager'\n",
         "components.demo.role", "only one manager"),
        ("[components.splinfer]\ndocumentation = ['see the wiki']\n",
         "components.splinfer.documentation", "URI"),
        ("[service]\nx = 1\n", "service", "unknown key"),
    ],
)
def test_a_bad_override_names_its_file_and_key(tmp_path: Path, text: str, key: str,
                                               problem: str) -> None:
    bad = write(tmp_path / "components.d/50-bad.toml", text)
    with pytest.raises(RegistryError) as caught:
        registry.load(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{bad}: {key} = ") and problem in message, message


def test_broken_toml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "components.d/x.toml", "[components.splinfer]\nafter = = 3\n")
    with pytest.raises(RegistryError, match=rf"^{bad}: \(file\).*not valid TOML.*line"):
        registry.load(tmp_path)


# -- rendering ----------------------------------------------------------------------------


def test_the_committed_units_are_the_rendered_ones() -> None:
    rendered = units.render(registry.load())
    assert units.differences(rendered, COMMITTED) == []
    assert sorted(rendered) == sorted(p.name for p in COMMITTED.iterdir())


def test_the_units_follow_the_design() -> None:
    rendered = units.render(registry.load())
    target = rendered["runa.target"]
    assert ("Wants=runa-splinter.service runa-whisper.service runa-splinfer.service "
            "runa-tieto.service runa-coven.service runa-alethia.service "
            "runa-threadwell.service runa-gilgul.service") in target
    for name in ("splinter", "splinfer", "coven", "gilgul"):
        text = rendered[f"runa-{name}.service"]
        settings = dict(line.split("=", 1) for line in text.splitlines()
                        if "=" in line and not line.startswith("#"))
        assert settings["ExecStart"] == f"/usr/bin/runa daemon {name}"
        assert settings["Type"] == "notify" and settings["PartOf"] == "runa.target"
        assert settings["WantedBy"] == "runa.target"
        assert settings["Documentation"] == "man:runa(1)"
        for key in ("cpu_quota", "memory_max", "watchdog_sec"):  # the configuration's defaults
            directive = {"cpu_quota": "CPUQuota", "memory_max": "MemoryMax",
                         "watchdog_sec": "WatchdogSec"}[key]
            assert settings[directive] == str(
                packaged_schema().setting(f"components.{name}.{key}").default)
        for directive in ("PrivateTmp", "PrivateDevices", "ProtectSystem", "NoNewPrivileges"):
            assert directive in settings
        assert "RemoveIPC" not in settings and "InaccessiblePaths" not in settings
        # No core dump of a process a secret value passes through (coven, gilgul's broker).
        assert (settings.get("LimitCORE") == "0") is (name in ("coven", "gilgul"))
        if name == "gilgul":
            assert settings["Restart"] == "always" and settings["StartLimitBurst"] == "10"
            assert settings["RestartPreventExitStatus"] == "78"
            assert "After" not in settings
        else:
            assert settings["Restart"] == "no" and settings["StartLimitIntervalSec"] == "0"
            assert settings["After"].startswith("runa-gilgul.service")
            assert settings["EnvironmentFile"] == f"-%t/runa/gilgul/{name}.env"


def test_a_listening_component_gets_a_socket_unit_on_loopback_and_keeps_its_sandbox() -> None:
    rendered = units.render(registry.load())
    assert [name for name in rendered if name.endswith(".socket")] == ["runa-threadwell.socket"]
    socket_unit = rendered["runa-threadwell.socket"].splitlines()
    port = packaged_schema().setting("threadwell.port").default
    assert [line for line in socket_unit if line.startswith("ListenStream=")] == [
        f"ListenStream=127.0.0.1:{port}", f"ListenStream=[::1]:{port}"]
    assert "Service=runa-threadwell.service" in socket_unit
    service = dict(line.split("=", 1) for line in
                   rendered["runa-threadwell.service"].splitlines()
                   if "=" in line and not line.startswith("#"))
    assert service["Requires"] == "runa-threadwell.socket"
    assert service["After"].endswith("runa-threadwell.socket")
    assert service["PrivateNetwork"] == "yes" and service["RestrictAddressFamilies"] == "AF_UNIX"


def test_render_check_and_write_through_the_command(tmp_path: Path, runa_env) -> None:
    out = tmp_path / "units"
    assert runa("units", "render", "--packaged", "--check", "--output", str(COMMITTED),
                env=runa_env).returncode == 0
    result = runa("units", "render", "--packaged", "--output", str(out), env=runa_env)
    assert result.returncode == 0, result.stderr
    assert units.differences(units.render(registry.load()), out) == []
    (out / "runa-splinfer.service").write_text("changed by hand\n")
    (out / "runa-extra.service").write_text("[Unit]\n")
    check = runa("units", "render", "--packaged", "--check", "--output", str(out), env=runa_env)
    assert check.returncode == 1
    assert "runa-splinfer.service: differs" in check.stderr
    assert "runa-extra.service: not rendered" in check.stderr


def test_a_bad_registry_stops_render_before_anything_is_written(tmp_path: Path,
                                                                runa_env) -> None:
    bad = write(Path(runa_env["RUNA_SYSCONFDIR"]) / "components.d/50-bad.toml",
                "[components.splinfer.hardening]\nRemoveIPC = 'yes'\n")
    out = tmp_path / "units"
    result = runa("units", "render", "--output", str(out), env=runa_env)
    assert result.returncode == 78
    assert f"{bad}: components.splinfer.hardening.RemoveIPC = 'yes'" in result.stderr
    assert not out.exists()


# -- systemd-analyze ------------------------------------------------------------------------


@pytest.fixture
def venv_units(tmp_path: Path) -> Path:
    """The committed units with ExecStart= pointing at this venv's runa (the only change):
    ``verify`` checks that the executable exists, and /usr/bin/runa only does once the
    package is installed."""
    where = tmp_path / "units"
    where.mkdir()
    for path in COMMITTED.iterdir():
        text = path.read_text()
        copy = text.replace(f"ExecStart={units.EXECUTABLE} ", f"ExecStart={VENV_RUNA} ")
        changed = [a for a, b in zip(text.splitlines(), copy.splitlines(), strict=True)
                   if a != b]
        assert all(line.startswith("ExecStart=") for line in changed)
        (where / path.name).write_text(copy)
    return where


@pytest.fixture
def analyze_env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_analyze_verify_prints_nothing(venv_units: Path, analyze_env) -> None:
    # --man=no: Documentation=man:runa(1) is installed by the packages, not in a checkout.
    paths = sorted(str(p) for p in venv_units.iterdir())
    result = subprocess.run(["systemd-analyze", "--user", "verify", "--man=no", *paths],
                            env=analyze_env, capture_output=True, text=True, timeout=60,
                            cwd=venv_units)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_verify_would_catch_a_misspelt_directive(venv_units: Path, analyze_env) -> None:
    unit = venv_units / "runa-splinter.service"
    unit.write_text(unit.read_text().replace("PrivateTmp=", "PrivateTnp="))
    result = subprocess.run(["systemd-analyze", "--user", "verify", "--man=no", str(unit)],
                            env=analyze_env, capture_output=True, text=True, timeout=60,
                            cwd=venv_units)
    assert "Unknown key 'PrivateTnp'" in result.stderr  # only a warning: hence "no stderr"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("unit", sorted(MAX_EXPOSURE))
def test_the_security_exposure_is_the_recorded_one(venv_units: Path, analyze_env,
                                                   unit: str) -> None:
    result = subprocess.run(["systemd-analyze", "--user", "security", "--offline=yes",
                             "--no-pager", unit], env=analyze_env, capture_output=True,
                            text=True, timeout=60, cwd=venv_units)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) == MAX_EXPOSURE[unit]
