"""``/rag on TOPIC`` in ``runa chat``: questions go with their sources, the answer lists them.

The REPL and splinfer are test_chat.py's fakes; tieto is the library over the fake
embedder (runa.tieto.access.Local), so retrieval, the sieve and the citation filter are
the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_chat import FakeSplinfer, Run
from tieto.fakes import FakeEmbedder

from runa.tieto.access import Local
from runa.tieto.api import Tieto, TietoSettings


class Retriever:
    def __init__(self, tieto: Tieto) -> None:
        self.local = Local(tieto, splinfer=lambda: None)  # type: ignore[arg-type,return-value]

    def topics(self) -> list[str]:
        return self.local.topics()

    def ground(self, question: str, topic: str):
        return self.local.ground(question, topic)


def home_topic(tmp_path: Path, uncited: str = "mark") -> Tieto:
    fake = FakeEmbedder()
    tieto = Tieto(TietoSettings(root=tmp_path / "topics", sieve=0.3, uncited=uncited),
                  embedder_factory=lambda: fake)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "car.md").write_text("The car insurance renews every March.")
    (docs / "soup.md").write_text("The soup needs three carrots and an onion.")
    tieto.ingest([docs], "home")
    return tieto


@pytest.fixture
def retriever(tmp_path: Path) -> Iterator[Retriever]:
    tieto = home_topic(tmp_path)
    yield Retriever(tieto)
    tieto.close()


def rag_run(retriever: Retriever, pieces: tuple[str, ...]) -> Run:
    run = Run(FakeSplinfer(pieces=pieces))
    run.session.retriever = retriever
    run.start()
    return run


def test_rag_on_sends_the_sources_and_lists_the_cited_ones(retriever: Retriever) -> None:
    run = rag_run(retriever, ("It renews in March [1] [4].",))
    status, script = run.run("/rag on home", "when does the car insurance renew", "/rag off",
                             "hello")
    assert status == 0
    chats = run.fake.chats()
    assert "[1] (car.md)" in chats[0]["text"] and chats[0]["text"].endswith(
        "Question: when does the car insurance renew")
    assert chats[1]["text"] == "hello"  # /rag off: the question alone
    with_rag = run.out.getvalue().split("retrieval off")[0]
    assert "It renews in March [1] .\nSources:\n  [1] " in with_rag and "car.md:1" in with_rag
    assert "[4]" not in with_rag  # a source that was not retrieved is never cited
    assert script.prompts[1].endswith("[rag:home]> ") and "[rag" not in script.prompts[-1]


def test_rag_with_nothing_relevant_says_so_without_asking_the_model(
        retriever: Retriever) -> None:
    run = rag_run(retriever, ("made up",))
    status, _ = run.run("/rag on home", "quantum chromodynamics on a lattice")
    assert status == 0
    assert run.fake.chats() == []
    assert "I don't know: topic home has nothing relevant" in run.out.getvalue()


def test_rag_on_an_unknown_topic_names_the_known_ones(retriever: Retriever) -> None:
    run = rag_run(retriever, ("x",))
    status, _ = run.run("/rag on nope", "/rag sideways")
    assert status == 0
    out = run.out.getvalue()
    assert "no topic 'nope' (known topics: home)" in out and "/rag on TOPIC" in out


def test_an_answer_citing_none_of_its_sources_is_marked(retriever: Retriever) -> None:
    run = rag_run(retriever, ("Run 'sudo renew' as root.",))
    status, _ = run.run("/rag on home", "when does the car insurance renew")
    assert status == 0
    out = run.out.getvalue()
    assert "Run 'sudo renew' as root.\n[not grounded: the answer cites none of its sources" \
        in out
    assert "car.md:1" in out  # the sources it was given, to check it against
    assert run.session.last["grounded"] is False


def test_an_answer_citing_a_source_is_not_marked(retriever: Retriever) -> None:
    run = rag_run(retriever, ("It renews in March [1].",))
    run.run("/rag on home", "when does the car insurance renew")
    assert "not grounded" not in run.out.getvalue() and run.session.last["grounded"] is True


def test_uncited_refuse_shows_i_dont_know_and_the_best_passage(tmp_path: Path) -> None:
    tieto = home_topic(tmp_path, uncited="refuse")
    try:
        run = rag_run(Retriever(tieto), ("Run ", "'sudo renew'", " as root.",))
        status, _ = run.run("/rag on home", "when does the car insurance renew")
    finally:
        tieto.close()
    assert status == 0
    out = run.out.getvalue()
    assert "sudo" not in out
    assert "I don't know: the answer the model wrote cites none of the sources of topic home" \
        in out and "The car insurance renews every March." in out
    assert run.session.last["withheld"] is True
