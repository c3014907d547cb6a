"""Adding a component is one registry entry plus its package (docs/architecture.md).

A component that Runa has never heard of is written into a temporary directory, put on
PYTHONPATH and registered with one file in ``components.d``: nothing in the source tree
changes, and it is rendered as a unit, run by ``runa daemon``, configured through
``runa config``, started by ``runa up`` and restarted by gilgul's policy after a kill.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from support import isolated_env, register_component, remove_segments, runa, wait_for

from runa import registry
from runa.components import daemon_factory, load_config, schema
from runa.paths import Paths
from runa.registry import RegistryError

REPO = Path(__file__).resolve().parents[1]

SETTINGS = '''\
"""The greeter's settings: its [greeter] section."""

from runa.config import Setting, in_range

SETTINGS = (
    Setting("greeter.greeting", str, "hello", "What the greeter says when it is ready."),
    Setting("greeter.tick_s", float, 0.2, "Seconds between the greeter's ticks.",
            in_range(0.01, 60)),
)
'''

DAEMON = '''\
"""The greeter: says its greeting in its status, then ticks until it is stopped."""


class Greeter:
    name = "greeter"

    def __init__(self, greeting, tick_s):
        self.greeting, self.tick_s, self.ctx = greeting, tick_s, None

    def start(self, ctx):
        self.ctx = ctx
        ctx.status(f"{self.greeting} from the greeter")

    def step(self, timeout):
        self.ctx.stopping.wait(min(timeout, self.tick_s))

    def stop(self):
        pass


def create(config, logger, stack):
    return Greeter(config["greeter.greeting"], config["greeter.tick_s"])
'''

ENTRY = """\
[components.greeter]
description = "A component Runa has never heard of"
factory = "greeter.daemon:create"
settings = "greeter.settings"
after = ["splinter"]
"""

# Keep `runa up` light: no model, no embedding model.
LIGHT = ("[components.splinfer]\nenabled = false\n[components.tieto]\nenabled = false\n"
         "[components.coven]\nenabled = false\n")


def write_package(root: Path, files: dict[str, str]) -> Path:
    """A package ``greeter`` under ``root/pkgs``; returns the directory for PYTHONPATH."""
    package = root / "pkgs/greeter"
    package.mkdir(parents=True)
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).write_text(text)
    return package.parent


@pytest.fixture
def greeter_env(tmp_path: Path):
    """A stack environment with the greeter registered as a person would register it."""
    pkgs = write_package(tmp_path, {"settings.py": SETTINGS, "daemon.py": DAEMON})
    env = isolated_env(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(pkgs), str(REPO)])
    register_component(tmp_path / "etc", "greeter", ENTRY)
    yield env
    runa("down", env=env)
    remove_segments(env)


def test_the_new_component_is_rendered_as_a_unit(greeter_env: dict[str, str],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "units"
    result = runa("units", "render", "--output", str(out), env=greeter_env)
    assert result.returncode == 0, result.stderr
    unit = (out / "runa-greeter.service").read_text()
    assert "Description=A component Runa has never heard of" in unit
    assert "ExecStart=/usr/bin/runa daemon greeter" in unit
    assert "After=runa-gilgul.service runa-splinter.service" in unit
    assert "runa-greeter.service" in (out / "runa.target").read_text()
    # The packaged units, what the source tree commits, do not have it.
    packaged = runa("units", "render", "--packaged", "--check", "--output",
                    str(REPO / "systemd"), env=greeter_env)
    assert packaged.returncode == 0, packaged.stderr


def test_the_new_component_is_configured_through_runa_config(greeter_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    shown = runa("config", "show", "--json", env=greeter_env)
    assert shown.returncode == 0, shown.stderr
    rows = {row["key"]: row for row in json.loads(shown.stdout)}
    assert rows["greeter.greeting"] == {"key": "greeter.greeting", "value": "hello",
                                        "origin": "packaged defaults"}
    assert rows["components.greeter.memory_max"]["value"] == "512M"  # its unit's limits

    settings = tmp_path / "etc/conf.d/greeter.toml"
    settings.parent.mkdir(parents=True)
    settings.write_text("[greeter]\ngreeting = 'hoi'\n[components.greeter]\nmemory_max = '64M'\n")
    assert runa("config", "get", "greeter.greeting", env=greeter_env).stdout == "hoi\n"
    assert runa("config", "get", "components.greeter.memory_max",
                env=greeter_env).stdout == "64M\n"
    assert runa("config", "get", "greeter.tick_s",
                env={**greeter_env, "RUNA_GREETER_TICK_S": "0.5"}).stdout == "0.5\n"
    typo = runa("config", "get", "greeter.greting", env=greeter_env)
    assert (typo.returncode, typo.stderr.strip()) == (64, "runa config get: no "
                                                      "configuration key 'greeter.greting' "
                                                      "(did you mean greeter.greeting?)")

    settings.write_text("[greeter]\ntick_s = 0\n")  # the component's own check
    check = runa("config", "check", env=greeter_env)
    assert check.returncode == 78
    assert check.stderr.strip() == (f"runa config check: {settings}: greeter.tick_s = 0.0: "
                                    "must be at least 0.01")
    started = runa("daemon", "greeter", env={**greeter_env, "RUNA_LOG_TARGET": "stderr"})
    assert started.returncode == 78 and "greeter.tick_s = 0.0" in started.stderr


def test_runa_daemon_offers_the_registry_s_components(greeter_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    unknown = runa("daemon", "nosuch", env=greeter_env)
    assert unknown.returncode == 64
    assert unknown.stderr.strip() == (
        "runa daemon: argument name: invalid choice: 'nosuch' (choose from 'alethia', 'coven', "
        "'gilgul', 'greeter', 'splinfer', 'splinter', 'threadwell', 'tieto', 'whisper') (see "
        "'runa daemon "
        "--help')")
    (tmp_path / "other").mkdir()  # a stack whose registry does not have it
    elsewhere = runa("daemon", "greeter", env=isolated_env(tmp_path / "other"))
    assert elsewhere.returncode == 64 and "invalid choice: 'greeter'" in elsewhere.stderr


def test_runa_up_starts_it_and_gilgul_s_policy_restarts_it(greeter_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    register_component(tmp_path / "etc", "light", LIGHT)
    up = runa("up", "--detach", env=greeter_env, timeout=120)
    assert up.returncode == 0, up.stderr

    def greeter() -> dict[str, object]:
        status = json.loads(runa("status", "--json", env=greeter_env).stdout)
        assert [c["name"] for c in status["components"]] == ["splinter", "greeter"]
        return next(c for c in status["components"] if c["name"] == "greeter")

    first = greeter()
    assert first["state"] == "running" and first["status"] == "hello from the greeter"
    os.kill(int(first["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    again = wait_for(lambda: (c := greeter())["state"] == "running" and c["pid"] != first["pid"]
                     and c, 30, "the greeter restarted")
    assert again["incarnation"] == first["incarnation"] + 1  # type: ignore[index, operator]
    assert runa("down", env=greeter_env).returncode == 0


# -- what the registry refuses, named by file and key ----------------------------------------


def registry_with(tmp_path: Path, files: dict[str, str], entry: str) -> registry.Registry:
    sys.path.insert(0, str(write_package(tmp_path, files)))
    register_component(tmp_path / "etc", "greeter", entry)
    return registry.load(tmp_path / "etc")


@pytest.fixture
def clean_import():
    """Forget the test packages imported in-process, and their sys.path entry."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.mark.usefixtures("clean_import")
@pytest.mark.parametrize(
    ("files", "entry", "key", "problem"),
    [
        ({}, ENTRY, "components.greeter.settings", "cannot be imported: No module named "
         "'greeter.settings'"),
        ({"settings.py": "SETTINGS = ['greeting']\n"}, ENTRY, "components.greeter.settings",
         "has no SETTINGS tuple of runa.config.Setting"),
        ({"settings.py": "from runa.config import Setting\n"
          "SETTINGS = (Setting('bus.slots', int, 1, 'mine'),)\n"}, ENTRY,
         "components.greeter.settings", "declares bus.slots: a component's settings are "
         "greeter.<key>"),
        ({}, ENTRY.replace("greeter", "bus").replace('settings = "bus.settings"\n', ""),
         "components.bus", "names a shared section"),
    ],
)
def test_a_bad_settings_module_is_named_by_file_and_key(tmp_path: Path, files: dict[str, str],
                                                        entry: str, key: str,
                                                        problem: str) -> None:
    reg = registry_with(tmp_path, files, entry)
    with pytest.raises(RegistryError) as caught:
        schema(reg)
    source = tmp_path / "etc/components.d/50-greeter.toml"
    assert str(caught.value).startswith(f"{source}: {key} = ") and problem in str(caught.value)


@pytest.mark.usefixtures("clean_import")
def test_a_factory_that_is_not_there_is_named_by_file_and_key(tmp_path: Path) -> None:
    reg = registry_with(tmp_path, {"settings.py": SETTINGS, "daemon.py": "x = 1\n"}, ENTRY)
    assert load_config(Paths.for_stack("u1", {"RUNA_SYSCONFDIR": str(tmp_path / "etc")}), {},
                       registry=reg)["greeter.greeting"] == "hello"
    with pytest.raises(RegistryError, match=r"50-greeter.toml: components.greeter.factory = "
                       r"'greeter.daemon:create': greeter.daemon has no function create"):
        daemon_factory(reg.get("greeter"), reg)


def test_the_shipped_files_have_only_the_packaged_components() -> None:
    """The demo joins through components.d, like any component; nothing shipped names it."""
    assert "demo" not in registry.load().names
    assert "[demo]" not in (REPO / "etc/runa/runa.toml").read_text()
    assert "demo" not in (REPO / "runa/data/components.toml").read_text()
    assert not any("demo" in path.name for path in (REPO / "systemd").iterdir())
