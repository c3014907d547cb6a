"""The layered configuration: order of layers, and errors that name file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import runa

from runa import config
from runa.errors import ConfigError
from runa.paths import Paths


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def paths(runa_env: dict[str, str]) -> Paths:
    return Paths.for_stack("u1000", runa_env)


def test_later_layers_override_earlier_ones(paths: Paths, runa_env: dict[str, str]) -> None:
    etc, user = paths.sysconfdir, paths.user_config
    assert user is not None
    write(etc / "runa.toml", "[bus]\nslots = 100\nchannels = 8\nmax_value_bytes = 128\n"
          "[log]\nlevel = 'debug'\n")
    write(etc / "conf.d/10-a.toml", "[bus]\nslots = 200\nchannels = 9\n")
    write(etc / "conf.d/20-b.toml", "[bus]\nslots = 300\n")
    write(user / "runa.toml", "[bus]\nslots = 400\n")
    write(user / "conf.d/x.toml", "[service]\nwatchdog_sec = 7\n")
    env = {**runa_env, "RUNA_LOG_LEVEL": "warning", "RUNA_SERVICE_WATCHDOG_SEC": "8"}

    cfg = config.load(paths, env, {"service.watchdog_sec": 9})

    assert cfg["bus.max_value_bytes"] == 128 and cfg.origin("bus.max_value_bytes").endswith(
        "etc/runa.toml")
    assert cfg["bus.channels"] == 9 and cfg.origin("bus.channels").endswith("10-a.toml")
    assert cfg["bus.slots"] == 400 and cfg.origin("bus.slots").endswith(".config/runa/runa.toml")
    assert cfg["log.level"] == "warning" and cfg.origin("log.level") == "environment"
    assert cfg["service.watchdog_sec"] == 9 and cfg.origin("service.watchdog_sec") == \
        "command line"
    assert cfg["bus.dir"] == "/dev/shm" and cfg.origin("bus.dir") == "packaged defaults"


def test_shared_stack_ignores_the_personal_layer(runa_env: dict[str, str]) -> None:
    paths = Paths.for_stack("shared", runa_env)
    write(Path(runa_env["XDG_CONFIG_HOME"]) / "runa/runa.toml", "[bus]\nslots = 400\n")
    assert config.load(paths, {})["bus.slots"] == config.setting("bus.slots").default


@pytest.mark.parametrize(
    ("text", "key", "value", "problem"),
    [
        ("[bus]\nslots = 'many'\n", "bus.slots", "'many'", "must be an integer"),
        ("[bus]\nslots = 3\n", "bus.slots", "3", "must be at least 16"),
        ("[log]\nlevel = 'loud'\n", "log.level", "'loud'", "must be one of"),
        ("[components.splinfer]\nmemory_max = 'lots'\n", "components.splinfer.memory_max",
         "'lots'", "must be a size"),
        ("[bus]\nslotz = 10\n", "bus.slotz", "10", "did you mean bus.slots"),
    ],
)
def test_a_bad_value_names_file_key_and_value(
    paths: Paths, text: str, key: str, value: str, problem: str
) -> None:
    bad = write(paths.sysconfdir / "conf.d/x.toml", text)
    with pytest.raises(ConfigError) as caught:
        config.load(paths, {})
    message = str(caught.value)
    assert str(bad) in message and key in message and value in message and problem in message


def test_broken_toml_names_the_file_and_line(paths: Paths) -> None:
    bad = write(paths.sysconfdir / "conf.d/x.toml", "[bus]\nslots = = 3\n")
    with pytest.raises(ConfigError, match=rf"{bad}.*not valid TOML.*line 2"):
        config.load(paths, {})


def test_a_bad_environment_value_names_the_variable(paths: Paths) -> None:
    with pytest.raises(ConfigError, match=r"RUNA_BUS_SLOTS: bus.slots = 'x': must be an integer"):
        config.load(paths, {"RUNA_BUS_SLOTS": "x"})


def test_cli_check_reports_the_bad_layer_and_exits_78(runa_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    write(tmp_path / "etc/runa.toml", "[bus]\nslots = 1024\n")
    bad = write(tmp_path / "etc/conf.d/x.toml", "[service]\nwatchdog_sec = 0\n")

    result = runa("config", "check", env=runa_env)

    assert result.returncode == 78
    assert result.stderr.strip() == (
        f"runa: {bad}: service.watchdog_sec = 0: must be at least 1"
    )


def test_cli_show_json_reports_each_origin(runa_env: dict[str, str], tmp_path: Path) -> None:
    import json

    write(tmp_path / "etc/conf.d/x.toml", "[bus]\nslots = 1024\n")
    result = runa("config", "show", "--json", env={**runa_env, "RUNA_DEMO_TICK_S": "0.5"})
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["bus.slots"] == {"key": "bus.slots", "value": 1024,
                                 "origin": str(tmp_path / "etc/conf.d/x.toml")}
    assert rows["demo.tick_s"]["value"] == 0.5 and rows["demo.tick_s"]["origin"] == "environment"


def test_the_shipped_admin_file_is_the_generated_template(tmp_path: Path) -> None:
    """etc/runa/runa.toml equals `runa config template`, and uncommented it loads as defaults."""
    import re

    shipped = Path(__file__).resolve().parents[1] / "etc/runa/runa.toml"
    assert shipped.read_text() == config.admin_template(), "run: runa config template"
    lines = [
        line[2:] for line in shipped.read_text().splitlines()
        if re.match(r"# (\[[a-z_.]+\]|[a-z_]+ = )", line)
    ]
    layer = config.read_toml(write(tmp_path / "runa.toml", "\n".join(lines)))
    assert len(layer.values) > 10
    for key, value in layer.values.items():
        assert value == config.setting(key).default, key
