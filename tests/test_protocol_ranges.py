"""Every declared range, walked: ``runa config check``, the client and the service agree
on both sides of each bound (just inside accepted, just outside refused, by all of them).

The ranges are declared once (``runa.protocol.ranges`` for splinfer's parameters,
``runa.protocol.tieto.RANGES`` for tieto's numbers); this proves each judge uses them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from runa.chat.params import SessionParams
from runa.cli.ask_cmd import SAMPLING_FLAGS
from runa.cli.recall_cmd import check_numbers
from runa.components import packaged_schema
from runa.errors import RunaError
from runa.protocol import ranges, tieto
from runa.protocol.params import SamplingParams, parse_params
from runa.splinfer.requests import parse_chat
from runa.splinter import envelope as env_mod
from runa.splinter.errors import BadSchema
from runa.tieto.daemon import _number
from runa.tieto.recall import RecallParams

Judge = Callable[[Any], None]
"""Raises when it refuses the value."""

SETTINGS = {s.key: s for s in packaged_schema().settings}
SAMPLING = {f.name for f in SamplingParams.__dataclass_fields__.values()}


def _step(kind: type, bound: float) -> float:
    return 1 if kind is int else max(abs(bound), 1.0) * 1e-9


def _sides(kind: type, low: float | None, high: float | None, special: tuple[int, ...] = (),
           exclusive_low: bool = False) -> Iterator[tuple[Any, bool]]:
    """(value, accepted?) just inside and just outside each bound."""
    if low is not None:
        inside = low + _step(kind, low) if exclusive_low else low
        outside = low if exclusive_low else low - _step(kind, low)
        while outside in special:
            outside -= _step(kind, outside)
        yield kind(inside), True
        yield kind(outside), False
    if high is not None:
        yield kind(high), True
        yield kind(high + _step(kind, high)), False


def _config(key: str) -> Judge:
    setting = SETTINGS[key]
    return lambda value: setting.validate(value, "runa.toml", key)


def _chat_request(name: str) -> Judge:
    def judge(value: Any) -> None:
        parse_chat(env_mod.query("test", "splinfer", {"op": "chat", "text": "hi",
                                                      "params": {name: value}},
                                 reply_to="r"))
    return judge


def _splinfer_judges(name: str) -> dict[str, Judge]:
    judges: dict[str, Judge] = {"splinfer (a chat's params)": _chat_request(name),
                                "splinfer (loading)": lambda v: parse_params({name: v})}
    if name in SAMPLING:
        judges["the chat client (/params)"] = lambda v: SessionParams({name: v})
    if f"splinfer.{name}" in SETTINGS:
        judges["config check"] = _config(f"splinfer.{name}")
    return judges


def _tieto_service(field: str) -> Judge:
    return lambda value: _number(env_mod.query("test", "tieto", {"op": "recall", field: value}),
                                 field)


def _recall_flags(field: str) -> Judge:
    def judge(value: Any) -> None:
        args = {"k": None, "min_similarity": None, "sieve": None, "timeout": 60.0,
                **{dest: None for _, _, dest, _ in SAMPLING_FLAGS}, field: value}
        check_numbers(argparse.Namespace(**args))
    return judge


def _tieto_judges(field: str) -> dict[str, Judge]:
    judges: dict[str, Judge] = {"tieto (a request)": _tieto_service(field)}
    if field in RecallParams.__dataclass_fields__:
        judges["tieto (its settings)"] = lambda v: RecallParams(**{field: v})
    if field in ("k", "min_similarity", "sieve"):
        judges["runa recall's flags"] = _recall_flags(field)
    if f"tieto.{field}" in SETTINGS:
        judges["config check"] = _config(f"tieto.{field}")
    if field == "k":  # a completion's k defaults to tieto.complete_k: held to the same range
        judges["config check (tieto.complete_k)"] = _config("tieto.complete_k")
    return judges


def _cases() -> Iterator[Any]:
    for name, spec in ranges.SPECS.items():
        if spec.kind in (int, float):
            yield pytest.param(_splinfer_judges(name), list(_sides(
                spec.kind, spec.low, spec.high, spec.special,
                exclusive_low=name in ranges._EXCLUSIVE_LOW)), id=f"splinfer.{name}")
    for field, (low, high) in tieto.RANGES.items():
        kind = int if field in tieto.WHOLE else float
        yield pytest.param(_tieto_judges(field), list(_sides(kind, low, high)),
                           id=f"tieto.{field}")


def _verdict(judge: Judge, value: Any) -> bool:
    try:
        judge(value)
    except (RunaError, BadSchema, ValueError):
        return False
    return True


@pytest.mark.parametrize(("judges", "sides"), list(_cases()))
def test_every_judge_agrees_on_both_sides_of_each_bound(judges: dict[str, Judge],
                                                        sides: list[tuple[Any, bool]]) -> None:
    assert len(judges) >= 2 and sides
    for value, accepted in sides:
        verdicts = {who: _verdict(judge, value) for who, judge in judges.items()}
        assert verdicts == dict.fromkeys(judges, accepted), value


def test_config_check_and_a_daemon_refuse_a_wire_number_with_one_message() -> None:
    """tieto.k out of range: config check says what the daemon's refusal says."""
    with pytest.raises(RunaError) as by_config:
        _config("tieto.k")(0)
    with pytest.raises(RunaError) as by_daemon:
        _tieto_service("k")(0)
    assert str(by_config.value) == "runa.toml: tieto.k = 0: must be a whole number from 1 to 1000"
    assert str(by_daemon.value) == "k must be a whole number from 1 to 1000, not 0"
    assert by_daemon.value.exit_code == 64

