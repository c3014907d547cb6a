"""The layered configuration: order of layers, and errors that name file, key and value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import runa

from runa.components import load_config, packaged_schema
from runa.errors import ConfigError
from runa.paths import Paths

SCHEMA = packaged_schema()


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

    cfg = load_config(paths, env, {"service.watchdog_sec": 9})

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
    assert load_config(paths, {})["bus.slots"] == SCHEMA.setting("bus.slots").default


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
        load_config(paths, {})
    message = str(caught.value)
    assert str(bad) in message and key in message and value in message and problem in message


def test_broken_toml_names_the_file_and_line(paths: Paths) -> None:
    bad = write(paths.sysconfdir / "conf.d/x.toml", "[bus]\nslots = = 3\n")
    with pytest.raises(ConfigError, match=rf"{bad}.*not valid TOML.*line 2"):
        load_config(paths, {})


def test_a_bad_environment_value_names_the_variable(paths: Paths) -> None:
    with pytest.raises(ConfigError, match=r"RUNA_BUS_SLOTS: bus.slots = 'x': must be an integer"):
        load_config(paths, {"RUNA_BUS_SLOTS": "x"})


def test_cli_check_reports_the_bad_layer_and_exits_78(runa_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    write(tmp_path / "etc/runa.toml", "[bus]\nslots = 1024\n")
    bad = write(tmp_path / "etc/conf.d/x.toml", "[service]\nwatchdog_sec = 0\n")

    result = runa("config", "check", env=runa_env)

    assert result.returncode == 78
    assert result.stderr.strip() == (
        f"runa config check: {bad}: service.watchdog_sec = 0: must be at least 1"
    )


def test_cli_show_json_reports_each_origin(demo_env: dict[str, str], tmp_path: Path) -> None:
    import json

    write(tmp_path / "etc/conf.d/x.toml", "[bus]\nslots = 1024\n")
    result = runa("config", "show", "--json", env={**demo_env, "RUNA_DEMO_TICK_S": "0.5"})
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["bus.slots"] == {"key": "bus.slots", "value": 1024,
                                 "origin": str(tmp_path / "etc/conf.d/x.toml")}
    assert rows["demo.tick_s"]["value"] == 0.5 and rows["demo.tick_s"]["origin"] == "environment"


def test_the_shipped_admin_file_is_the_generated_template(tmp_path: Path) -> None:
    """etc/runa/runa.toml equals `runa config template`, and uncommented it loads as defaults."""
    import re

    shipped = Path(__file__).resolve().parents[1] / "etc/runa/runa.toml"
    assert shipped.read_text() == SCHEMA.admin_template(), "run: runa config template"
    lines = [
        line[2:] for line in shipped.read_text().splitlines()
        if re.match(r"# (\[[a-z_.]+\]|[a-z_]+ = )", line)
    ]
    layer = SCHEMA.read_toml(write(tmp_path / "runa.toml", "\n".join(lines)))
    assert len(layer.values) > 10
    for key, value in layer.values.items():
        assert value == SCHEMA.setting(key).default, key


# -- values the daemons refuse, and what only this machine can tell -------------------------

@pytest.mark.parametrize(
    ("daemon", "text", "line"),
    [
        ("splinfer", "[splinfer]\nctx_size = 8\n",
         "splinfer.ctx_size = 8: must be 0 (the model's own) or 16 to 1048576"),
        ("splinfer", "[splinfer]\nthreads = 0\n",
         "splinfer.threads = 0: must be -1 (automatic) or 1 to 1024"),
        ("tieto", "[tieto]\nshort_term_topic = '../x'\n",
         "tieto.short_term_topic = '../x': topic name '../x': use 1-64 letters, digits, '.', "
         "'_' or '-', starting with a letter or digit"),
        ("splinfer", "[splinfer]\nidle_unload_s = nan\n",
         "splinfer.idle_unload_s = nan: must be a finite number"),
    ],
)
def test_check_refuses_what_the_daemon_refuses_with_the_same_message(
    runa_env: dict[str, str], tmp_path: Path, daemon: str, text: str, line: str
) -> None:
    """Once these passed the check and the component crash-looped until it was held."""
    bad = write(tmp_path / "etc/conf.d/x.toml", text)

    check = runa("config", "check", env=runa_env)
    started = runa("daemon", daemon, env=runa_env)

    assert (check.returncode, started.returncode) == (78, 78), started.stderr
    assert check.stderr.strip() == f"runa config check: {bad}: {line}"
    assert started.stderr.strip() == f"runa daemon: {bad}: {line}"


def test_splinfer_ranges_are_the_ones_llama_params_allow() -> None:
    """One table: config and splinfer take their [splinfer] ranges from runa.protocol.ranges."""
    from runa.protocol.params import ParamError, parse_params

    for key, value in [("ctx_size", 15), ("ctx_size", 16), ("ctx_size", 0), ("threads", 0),
                       ("threads", -1), ("batch_size", 0), ("parallel", 65), ("parallel", 64)]:
        try:
            parse_params({key: value})
            daemon_takes = True
        except ParamError:
            daemon_takes = False
        try:
            SCHEMA.read_overrides({f"splinfer.{key}": value})
            config_takes = True
        except ConfigError:
            config_takes = False
        assert config_takes == daemon_takes, (key, value)


def test_a_config_file_that_is_not_utf8_names_the_file_and_byte(
    runa_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "etc/conf.d/x.toml"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"[bus]\nslots = 100\n# caf\xe9\n")

    result = runa("config", "check", env=runa_env)

    assert result.returncode == 78
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"runa config check: {bad}: (file) = '': not UTF-8 text: byte 23 is 0xe9 (save the "
        "file as UTF-8)")


@pytest.fixture
def chat_model(runa_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """runa_env with a tiny real chat GGUF as splinfer.model, so only the bus is judged."""
    from runa.testing.tiny_gguf import write_tiny_gguf

    model = write_tiny_gguf(tmp_path / "chat.gguf")
    return {**runa_env, "RUNA_SPLINFER_MODEL": str(model)}


def test_a_bus_group_that_does_not_exist_is_an_error_in_check_and_keeper(
    chat_model: dict[str, str], tmp_path: Path
) -> None:
    bad = write(tmp_path / "etc/runa.toml", "[bus]\ngroup = 'runa-no-such-group'\n")
    line = f"runa config check: {bad}: bus.group = 'runa-no-such-group': no such group"

    check = runa("config", "check", env=chat_model)
    assert (check.returncode, check.stderr.strip()) == (78, line)

    keeper = runa("daemon", "splinter", env={**chat_model, "RUNA_LOG_TARGET": "stderr"})
    assert keeper.returncode == 78 and line[len("runa config check: "):] in keeper.stderr


def test_a_bus_dir_that_does_not_exist_is_an_error_in_check_and_keeper(
    chat_model: dict[str, str], tmp_path: Path
) -> None:
    bad = write(tmp_path / "etc/runa.toml", f"[bus]\ndir = '{tmp_path}/nowhere'\n")
    line = f"{bad}: bus.dir = '{tmp_path}/nowhere': does not exist"

    check = runa("config", "check", env=chat_model)
    assert check.returncode == 78
    assert check.stderr.strip() == f"runa config check: {line}"

    keeper = runa("daemon", "splinter", env={**chat_model, "RUNA_LOG_TARGET": "stderr"})
    assert keeper.returncode == 78, keeper.stderr
    assert line in keeper.stderr and "Traceback" not in keeper.stderr


def test_a_bus_in_etc_or_open_to_everyone_is_warned_about(chat_model: dict[str, str],
                                                         tmp_path: Path) -> None:
    bad = write(tmp_path / "etc/runa.toml", "[bus]\ndir = '/etc'\nmode = '0666'\n")

    check = runa("config", "check", env=chat_model)

    lines = check.stderr.strip().splitlines()
    if os.access("/etc", os.W_OK):  # root: it would work, on disk
        assert check.returncode == 0, check.stderr
        assert f"runa config check: warning: {bad}: bus.dir = '/etc': is on a" in lines[0]
        assert "not in memory: the bus would be written to disk; use /dev/shm" in lines[0]
        assert "1 file(s) read, 2 warning(s)" in check.stdout
    else:
        assert check.returncode == 78
        assert lines[0].startswith(f"runa config check: {bad}: bus.dir = '/etc': this user "
                                   "(uid ")
    assert lines[1] == (f"runa config check: warning: {bad}: bus.mode = '0666': every user "
                        "of this machine may read or write the bus; use 0600 (or 0660 with "
                        "bus.group)")


def test_a_missing_model_is_an_error_that_says_how_to_set_it(runa_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    missing = tmp_path / "nowhere/model.gguf"

    check = runa("config", "check", env={**runa_env, "RUNA_SPLINFER_MODEL": str(missing)})

    assert check.returncode == 78
    assert check.stderr.startswith(
        f"runa config check: environment: splinfer.model = '{missing}': model '{missing}' "
        "not found")
    assert "RUNA_SPLINFER_MODEL" in check.stderr and "-m PATH" not in check.stderr


def test_a_chat_model_passes_the_check(chat_model: dict[str, str]) -> None:
    check = runa("config", "check", env=chat_model)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("configuration is valid")


def test_an_embedding_model_as_the_chat_model_is_refused_by_check_and_splinfer(
    runa_env: dict[str, str], tmp_path: Path
) -> None:
    """Loaded as the chat model, an embedding GGUF answered '[unused27] …' with exit 0."""
    from tieto.tiny_bert import write_tiny_bert

    from runa.models.bert_gguf import convert_bert

    embedding = tmp_path / "bert.gguf"
    convert_bert(write_tiny_bert(tmp_path / "bert-source"), embedding)
    env = {**runa_env, "RUNA_SPLINFER_MODEL": str(embedding), "RUNA_LOG_TARGET": "stderr"}
    line = (f"environment: splinfer.model = '{embedding}': {embedding}: an embedding model "
            "(bert); set splinfer.model to a chat model")

    check = runa("config", "check", env=env)
    started = runa("daemon", "splinfer", env=env)

    assert (check.returncode, check.stderr.strip()) == (78, f"runa config check: {line}")
    assert started.returncode == 78 and line in started.stderr


def test_an_unknown_persona_is_refused_by_check_and_splinfer_alike(
    chat_model: dict[str, str], tmp_path: Path
) -> None:
    bad = write(tmp_path / "etc/runa.toml", "[splinfer]\npersona = 'nobody'\n")

    check = runa("config", "check", env=chat_model)
    started = runa("daemon", "splinfer", env={**chat_model, "RUNA_LOG_TARGET": "stderr"})

    assert (check.returncode, started.returncode) == (78, 78)
    line = check.stderr.strip().removeprefix("runa config check: ")
    assert line.startswith(f"{bad}: splinfer.persona = 'nobody': unknown persona 'nobody'")
    assert line in started.stderr
