"""Persona files: front matter, layers, and errors that name the file and the line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from runa.paths import Paths
from runa.protocol.params import SamplingParams
from runa.splinfer.personas import (
    PACKAGED,
    PersonaDir,
    PersonaError,
    PersonaLibrary,
    UnknownPersonaError,
    parse_persona,
    persona_dirs,
)


def library(*dirs: Path) -> PersonaLibrary:
    return PersonaLibrary([PersonaDir(f"layer{i}", d) for i, d in enumerate(dirs)])


def persona_file(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(text)
    return path


def test_front_matter_gives_options_and_the_body_the_system_prompt(tmp_path: Path) -> None:
    path = persona_file(tmp_path, "pirate", "---\ndescription: Talks like a pirate.\n"
                        "temp: 0.9\ntop_k: 20\ntags: [fun]\n---\nYou are a pirate.\n\nArr.\n")
    p = parse_persona(path, path.read_text(), warn=pytest.fail)
    assert (p.name, p.description, p.system, p.tags) == (
        "pirate", "Talks like a pirate.", "You are a pirate.\n\nArr.", ("fun",))
    sampling = p.sampling()
    assert (sampling.temp, sampling.top_k, sampling.top_p) == (0.9, 20, SamplingParams().top_p)


def test_upstream_persona_spellings_work_with_warnings(tmp_path: Path) -> None:
    text = ("---\npersona: rei\ntemperature: 0.9\nmirostat: 1\nmirostat_tau: 5.6\n"
            "mirostat_eta: 0.1\nrepeat_penalty: 1.15\nrepeat_last_n: 1024\n"
            "tags: [trusted, creative, assistant]\naccess: [admin, tim]\n---\nYou are Rei.\n")
    path = persona_file(tmp_path, "rei", text)
    warnings: list[str] = []
    p = parse_persona(path, text, warn=warnings.append)
    s = p.sampling()
    assert (s.temp, s.mirostat, s.mirostat_ent, s.mirostat_lr, s.repeat_last_n) == (
        0.9, 1, 5.6, 0.1, 1024)
    joined = "\n".join(warnings)
    assert f"{path}:3" in joined and "'temperature' is an alias; write 'temp'" in joined
    assert "'mirostat_tau' is an alias; write 'mirostat_ent'" in joined
    assert "access is not enforced" in joined


@pytest.mark.parametrize(("text", "line", "words"), [
    ("---\ntemp: 0.5\ntop_p: [1\n---\nbody", 3, "not valid YAML"),
    ("---\ntemp: 0.5\ntemp: 0.7\n---\n", 3, "already set on line 2"),
    ("---\ndescription: x\ntemperatur: 0.5\n---\n", 3, "did you mean 'temp'"),
    ("---\ntop_p: 1.5\n---\n", 2, "top_p = 1.5 is not allowed; allowed: 0 to 1"),
    ("---\ntemp: warm\n---\n", 2, "expected float"),
    ("---\nctx_size: 8192\n---\n", 2, "fixed when the model loads"),
    ("---\ntemp: 0.5\n", 1, "no closing '---'"),
    ("---\n- a list\n---\n", 2, "'key: value' lines"),
    ("---\ndescription: [1, 2]\n---\n", 2, "description must be text"),
])  # fmt: skip
def test_broken_front_matter_names_file_and_line(tmp_path: Path, text: str, line: int,
                                                 words: str) -> None:
    path = persona_file(tmp_path, "broken", text)
    with pytest.raises(PersonaError) as caught:
        parse_persona(path, text, warn=lambda _: None)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert words in str(caught.value)


def test_two_spellings_of_one_option_are_an_error(tmp_path: Path) -> None:
    path = persona_file(tmp_path, "twice", "---\ntemp: 0.5\ntemperature: 0.7\n---\n")
    with pytest.raises(PersonaError, match="already set"):
        parse_persona(path, path.read_text(), warn=lambda _: None)


def test_a_file_without_front_matter_is_all_system_prompt(tmp_path: Path) -> None:
    path = persona_file(tmp_path, "plain", "Just be nice.\n")
    p = parse_persona(path, path.read_text(), warn=pytest.fail)
    assert (p.system, dict(p.params), p.description) == ("Just be nice.", {}, "")


def test_later_layers_win_and_the_same_name_overrides(tmp_path: Path) -> None:
    low, mid, high = tmp_path / "usr", tmp_path / "etc", tmp_path / "home"
    persona_file(low, "a", "---\ndescription: low a\n---\nA low")
    persona_file(low, "b", "---\ndescription: low b\n---\nB low")
    persona_file(mid, "b", "---\ndescription: mid b\n---\nB mid")
    persona_file(high, "c", "---\ndescription: high c\n---\nC high")
    lib = library(low, mid, high, tmp_path / "missing")
    assert [(p.name, p.description) for p in lib.all()] == [
        ("a", "low a"), ("b", "mid b"), ("c", "high c")]
    assert lib.get("b").source == mid / "b.md"


def test_unknown_persona_lists_the_known_ones(tmp_path: Path) -> None:
    persona_file(tmp_path, "alpha", "x")
    persona_file(tmp_path, "beta", "y")
    with pytest.raises(UnknownPersonaError, match="unknown persona 'gamma'; known personas: "
                                                  "alpha, beta"):
        library(tmp_path).get("gamma")


def test_a_broken_override_is_reported_not_silently_replaced(tmp_path: Path,
                                                             caplog) -> None:
    persona_file(tmp_path / "low", "x", "---\ndescription: fine\n---\nok")
    persona_file(tmp_path / "high", "x", "---\ntemp: hot\n---\nbroken")
    lib = library(tmp_path / "low", tmp_path / "high")
    with caplog.at_level(logging.WARNING), pytest.raises(PersonaError, match=r"x\.md:2"):
        lib.get("x")
    assert "persona not usable" in caplog.text
    assert "x" not in [p.name for p in lib.all()]


def test_new_and_edited_files_are_seen_without_a_restart(tmp_path: Path) -> None:
    lib = library(tmp_path)
    path = persona_file(tmp_path, "late", "---\ntemp: 0.1\n---\nfirst")
    assert lib.get("late").system == "first"
    path.write_text("---\ntemp: 0.2\n---\nsecond, longer")
    os.utime(path, ns=(1, 1))
    assert lib.get("late").system == "second, longer"
    path.unlink()
    with pytest.raises(UnknownPersonaError):
        lib.get("late")


def test_the_packaged_personas_are_good(caplog) -> None:
    lib = library(PACKAGED)
    with caplog.at_level(logging.WARNING):
        names = [p.name for p in lib.all()]
    assert {"default", "concise", "tutor", "gentle"} <= set(names)
    assert not lib.problems() and not caplog.records  # no aliases, no mistakes
    for p in lib.all():
        assert p.description and len(p.system) > 80
        p.sampling()
    assert "emergency" in lib.get("gentle").system  # points to real help, claims no cure
    assert "not a doctor" in lib.get("gentle").system


def test_layers_of_a_personal_and_of_the_shared_stack(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "RUNA_SYSCONFDIR": str(tmp_path / "etc")}
    personal = [d.path for d in persona_dirs(Paths.for_stack("u1000", env))]
    assert personal == [PACKAGED, Path("/usr/share/runa/personas"), tmp_path / "etc/personas",
                        tmp_path / ".config/runa/personas"]
    shared = [d.layer for d in persona_dirs(Paths.for_stack("shared", env))]
    assert shared == ["packaged", "system", "admin"]


def test_a_persona_names_its_policy_set_and_an_unknown_set_names_file_and_line(
        tmp_path: Path) -> None:
    sets = ["child-safe", "default", "off"]
    gentle = persona_file(tmp_path, "gentle", "---\ndescription: kind\npolicy: child-safe\n"
                          "---\nYou are gentle.")
    p = PersonaLibrary([PersonaDir("user", tmp_path)], policies=lambda: sets).get("gentle")
    assert (p.policy, p.policy_line) == ("child-safe", 3)
    gentle.write_text("---\ndescription: kind\ntemp: 0.5\npolicy: lenient\n---\nHi.")
    with pytest.raises(PersonaError) as unknown:
        PersonaLibrary([PersonaDir("user", tmp_path)], policies=lambda: sets).get("gentle")
    assert str(unknown.value).startswith(f"{gentle}:4: policy 'lenient' is not a policy set")
    assert "child-safe, default, off" in str(unknown.value)
    gentle.write_text("---\npolicy: off\n---\nHi.")  # YAML reads a bare off as false
    with pytest.raises(PersonaError, match=r":2: policy must be .* quote it"):
        parse_persona(gentle, gentle.read_text(), warn=pytest.fail, policies=lambda: sets)
