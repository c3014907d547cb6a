"""whisper's daemon on a real bus (in a thread of the test process) with a deterministic
embedder and a tiny classifier: ``judge`` and ``status``, what it refuses and how, a missing
model, its priority, and that no text reaches its log."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import isolated_env, remove_segments, wait_for

from runa import stackbus as bus_mod
from runa.client import ServiceClient, ServiceFault
from runa.components import load_config
from runa.models.embedder import EmbedderError
from runa.paths import Paths
from runa.protocol import whisper as protocol
from runa.service import ServiceRunner
from runa.splinter import Fault
from runa.splinter import envelope as env_mod
from runa.stackbus import HealthWriter
from runa.whisper.daemon import RETRY_S, Tier2Unavailable, WhisperDaemon

from .tiny_tier2 import CARE, HARM, BagOfWords, fit


class Quiet:
    def notify(self, state: str) -> None:
        pass


class Whisper:
    """A whisper daemon running in a thread on the test's own bus."""

    def __init__(self, root: Path, *, weights: Path | None = None, broken: bool = False,
                 max_tokens: int = 254) -> None:
        self.env = isolated_env(root)
        self.paths = Paths.for_stack(self.env["RUNA_STACK"], self.env)
        self.embedder = BagOfWords(max_tokens=max_tokens)
        if weights is None:
            weights = root / "tier2.npz"
            fit(self.embedder, weights)
        self.config = load_config(self.paths, self.env, {"whisper.weights": str(weights)})
        self.stack = self.env["RUNA_STACK"]
        bus_mod.ensure_buses(self.config, self.stack)
        self.niced: list[int] = []

        def factory() -> BagOfWords:
            if broken:
                raise EmbedderError("all-MiniLM-L6-v2.f32.gguf: not installed (test)")
            return self.embedder

        def nice(n: int) -> int:
            self.niced.append(n)
            return n

        logger = logging.getLogger("runa.test.whisper")
        self.heartbeat = HealthWriter(self.config, self.stack, logger, 0.2)
        self.daemon = WhisperDaemon(self.config, self.stack, logger, paths=self.paths,
                                    embedder_factory=factory, lower_priority=nice)
        self.runner = ServiceRunner(self.daemon, logger, notifier=Quiet(), env={},
                                    heartbeat=self.heartbeat, heartbeat_interval=0.2)
        self.thread = threading.Thread(target=self.runner.run, daemon=True)
        self.thread.start()
        self.bus = bus_mod.connect(self.config, self.stack)
        wait_for(lambda: self.bus.get("whisper:health"), 10, "whisper's first heartbeat")
        self.client = ServiceClient(self.bus, "whisper", "test")

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.client.call(protocol.OPS[op].request(**fields), idle_timeout=10)

    def raw(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.client.call(payload, idle_timeout=10)

    def stop(self) -> None:
        self.runner.request_stop()
        self.thread.join(10)
        self.heartbeat.close()
        self.client.close()
        self.bus.close()
        remove_segments(self.env)


@pytest.fixture
def whisper(tmp_path: Path) -> Iterator[Whisper]:
    w = Whisper(tmp_path)
    yield w
    w.stop()


def test_a_harmful_prompt_is_a_harm_hit_and_a_benign_one_has_none(whisper: Whisper) -> None:
    harmful = whisper.call("judge", text=HARM[0], side="prompt")
    assert [hit["rule"] for hit in harmful["hits"]] == ["tier2.harm"]
    assert harmful["hits"][0]["weight"] == "heavy"
    assert harmful["windows"] == 1 and harmful["scores"]["harm"] >= 0.5
    benign = whisper.call("judge", text="What is the capital of France?", side="output")
    assert benign["hits"] == [] and benign["scores"]["harm"] < 0.5


def test_distress_is_a_care_hit_in_the_self_harm_category(whisper: Whisper) -> None:
    found = whisper.call("judge", text=CARE[1], side="prompt")
    assert [(h["rule"], h["category"]) for h in found["hits"]] == \
        [("tier2.care", "suicide_self_harm")]


def test_a_long_text_is_judged_whole_in_windows(tmp_path: Path) -> None:
    """Far past the model's window the harmful sentence still decides (max pooling), where
    one truncated window would never have read it."""
    w = Whisper(tmp_path, max_tokens=16)  # windows of 16 word-pieces: a bag of words
    try:
        filler = " ".join(["The weather was mild and the garden was quiet that spring."] * 20)
        found = w.call("judge", text=f"{filler} {HARM[1]} {filler}", side="prompt")
        assert found["windows"] > 10
        assert "tier2.harm" in [hit["rule"] for hit in found["hits"]]
        first = w.call("judge", text=filler[:200], side="prompt")
        assert first["hits"] == []
    finally:
        w.stop()


@pytest.mark.parametrize(("payload", "says"), [
    ({"op": "judge", "text": "x" * (protocol.MAX_JUDGE_TEXT + 1), "side": "prompt"},
     f"longer than {protocol.MAX_JUDGE_TEXT} characters"),
    ({"op": "judge", "side": "prompt"}, "judge needs 'text'"),
    ({"op": "judge", "text": "hello"}, "judge needs 'side'"),
    ({"op": "judge", "text": "hello", "side": "answer"}, "'side' must be prompt or output"),
    ({"op": "judge", "text": 42, "side": "prompt"}, "'text' must be a string"),
    ({"op": "classify", "text": "hello"}, "unknown op 'classify'; whisper answers judge, status"),
])
def test_a_request_it_cannot_read_is_a_bad_schema_naming_the_field(
        whisper: Whisper, payload: dict[str, Any], says: str) -> None:
    with pytest.raises(ServiceFault) as caught:
        whisper.raw(payload)
    assert caught.value.code == Fault.BAD_SCHEMA
    assert says in str(caught.value)
    assert whisper.call("status")["available"]  # and it goes on


def test_status_says_what_it_judges_with(whisper: Whisper) -> None:
    whisper.call("judge", text=HARM[0], side="prompt")
    status = whisper.call("status")
    assert status["available"] and status["problem"] is None
    assert status["model"] == "bag-of-words:1" and status["heads"] == ["harm", "care"]
    assert status["exemplars"] >= 1  # the packaged matrix's
    assert status["judged"] == 1
    assert whisper.niced == [10] and status["niceness"] == 10


def test_exemplars_follow_the_matrix_files(whisper: Whisper) -> None:
    before = whisper.call("status")["exemplars"]
    own = whisper.paths.sysconfdir / "policy/matrix.d/50-local.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("- id: local.exemplar.garden\n  category: violent_crimes\n"
                   "  weight: heavy\n  exemplar: poison the neighbour's garden pond\n")
    found = whisper.call("judge", text="poison the neighbour's garden pond", side="prompt")
    assert ("local.exemplar.garden", "violent_crimes") in \
        [(h["rule"], h["category"]) for h in found["hits"]]
    assert whisper.call("status")["exemplars"] == before + 1


def test_no_text_reaches_the_log(whisper: Whisper, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runa")
    secret = "I have been thinking about killing myself."
    whisper.call("judge", text=secret, side="prompt")
    with pytest.raises(ServiceFault):
        whisper.raw({"op": "judge", "text": secret, "side": "sideways"})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "judged a prompt text: 1 windows, 1 hits (tier2.care)" in logged
    assert "thinking about" not in logged and "sideways" not in logged


def test_without_its_model_it_runs_says_why_and_judge_fails_as_unavailable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="runa")
    w = Whisper(tmp_path, broken=True)
    try:
        status = w.call("status")
        assert not status["available"] and "not installed (test)" in status["problem"]
        with pytest.raises(ServiceFault) as caught:
            w.call("judge", text="hello", side="prompt")
        assert caught.value.payload["kind"] == "Tier2Unavailable"
        assert "not installed (test)" in str(caught.value)
        assert any(getattr(r, "RUNA_EVENT", "") == "tier2_unavailable" for r in caplog.records)
    finally:
        w.stop()


def test_a_missing_weights_file_is_said_the_same_way(tmp_path: Path) -> None:
    w = Whisper(tmp_path, weights=tmp_path / "nowhere.npz")
    try:
        status = w.call("status")
        assert not status["available"] and "nowhere.npz" in status["problem"]
    finally:
        w.stop()


def test_weights_for_another_embedding_size_are_refused_at_load(tmp_path: Path) -> None:
    weights = tmp_path / "wide.npz"
    fit(BagOfWords(dim=128), weights)
    w = Whisper(tmp_path, weights=weights)  # its embedder gives 64-d vectors
    try:
        status = w.call("status")
        assert not status["available"]
        assert "reads 128-d vectors" in status["problem"] and "gives 64" in status["problem"]
        with pytest.raises(ServiceFault):
            w.call("judge", text="hello", side="prompt")
    finally:
        w.stop()


def test_a_weights_file_with_a_malformed_header_is_unavailable_naming_it_not_a_crash(
        tmp_path: Path) -> None:
    import json
    import zipfile

    weights = tmp_path / "odd.npz"
    fit(BagOfWords(), weights)
    with zipfile.ZipFile(weights) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = np.lib.format.read_array(io.BytesIO(members["header.npy"]))
    fields = {**json.loads(str(header)), "meta": ["not", "a", "mapping"]}
    out = io.BytesIO()
    np.lib.format.write_array(out, np.array(json.dumps(fields)))
    members["header.npy"] = out.getvalue()
    with zipfile.ZipFile(weights, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    w = Whisper(tmp_path, weights=weights)
    try:
        status = w.call("status")
        assert not status["available"] and "its meta is not a JSON object" in status["problem"]
        with pytest.raises(ServiceFault) as caught:
            w.call("judge", text="hello", side="prompt")
        assert caught.value.payload["kind"] == "Tier2Unavailable"
    finally:
        w.stop()


class NoRequests:
    def recv(self, timeout: float) -> None:
        return None


def test_a_missing_tier_is_loaded_again_between_requests_never_inside_one(
        tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    paths = Paths.for_stack(env["RUNA_STACK"], env)
    fit(BagOfWords(), tmp_path / "tier2.npz")
    config = load_config(paths, env, {"whisper.weights": str(tmp_path / "tier2.npz")})
    now, loads = [0.0], []

    def factory() -> BagOfWords:
        loads.append(now[0])
        if len(loads) == 1:
            raise EmbedderError("all-MiniLM-L6-v2.f32.gguf: not installed (test)")
        return BagOfWords()

    daemon = WhisperDaemon(config, env["RUNA_STACK"], logging.getLogger("runa.test.whisper"),
                           paths=paths, embedder_factory=factory, lower_priority=lambda n: n,
                           clock=lambda: now[0])
    daemon.queue = NoRequests()  # type: ignore[assignment]
    daemon.step(0)
    assert loads == [0.0] and daemon.tier is None
    now[0] = RETRY_S + 1  # the model is installed meanwhile; a retry is due
    request = env_mod.query("test", "whisper", protocol.judge(HARM[0], "prompt"), reply_to="r")
    with pytest.raises(Tier2Unavailable):
        daemon.judge(request)  # answered at once: no load inside a request
    assert loads == [0.0]
    daemon.step(0)  # between requests
    assert loads == [0.0, RETRY_S + 1]
    assert [hit["rule"] for hit in daemon.judge(request)["hits"]] == ["tier2.harm"]
    daemon.stop()
