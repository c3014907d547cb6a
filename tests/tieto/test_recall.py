"""Recall: vector, full text and their fusion; positions; clear errors for bad topics/models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runa.errors import UsageError
from runa.tieto.api import Tieto, TietoSettings
from runa.tieto.errors import (
    DimensionMismatchError,
    EmbeddingMismatchError,
    TietoError,
    UnknownTopicError,
)
from runa.tieto.fts import fts_query
from runa.tieto.recall import RecallParams

from .fakes import FakeEmbedder


@pytest.fixture
def notes(tieto: Tieto, tmp_path: Path) -> Tieto:
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "garden.md").write_text(
        "---\ntopic: garden\n---\n# Garden\n\nTomatoes need sun and water every day.\n\n"
        "Basil grows well beside tomatoes.\n")
    (docs / "taxes.md").write_text("Taxes are filed in April. The deadline is strict.\n")
    (docs / "log.jsonl").write_text(
        json.dumps({"text": "Meeting notes: the zeppelin budget was approved.",
                    "meta": {"kind": "meeting"}}) + "\n"
        + json.dumps({"text": "Water the tomatoes twice when it is hot.",
                      "meta": {"kind": "todo"}}) + "\n")
    tieto.ingest([docs], "notes")
    return tieto


def test_hits_carry_text_score_source_and_position(notes: Tieto, tmp_path: Path) -> None:
    hits = notes.recall("tomatoes sun water", "notes", k=2, mode="vector")
    assert len(hits) == 2
    best = hits[0]
    assert best.source == str(tmp_path / "notes" / "garden.md")
    assert best.line == 4 and best.chunk == 0 and best.start == 0
    assert best.text.startswith("# Garden") and best.meta == {"topic": "garden"}
    assert 0 < best.similarity <= 1 and best.score == best.similarity
    assert hits[0].similarity >= hits[1].similarity
    line = next(h for h in notes.recall("water tomatoes hot", "notes", k=4, mode="vector")
            if h.source.endswith("log.jsonl"))
    assert (line.line, line.record) == (2, "line 2")
    json.dumps([h.as_dict() for h in hits])  # JSON-able as the daemon will send it


def test_fts_finds_a_rare_word_the_vectors_miss(notes: Tieto) -> None:
    hits = notes.recall("zeppelin", "notes", k=1, mode="fts")
    assert hits[0].text.startswith("Meeting notes") and hits[0].ranks == {"fts": 1}
    assert hits[0].similarity is None  # fts mode does not load the model


def test_hybrid_fuses_both_lists_and_measures_every_hit(notes: Tieto) -> None:
    hits = notes.recall("zeppelin tomatoes", "notes", k=5)
    assert {tuple(sorted(h.ranks)) for h in hits} >= {("fts", "vector")}
    assert all(h.similarity is not None for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hybrid_can_fuse_by_rank_and_refuses_an_unknown_fusion(notes: Tieto) -> None:
    by_rank = notes.recall("zeppelin tomatoes", "notes", k=5, fusion="rrf")
    assert by_rank[0].score == pytest.approx(sum(
        (1.0 if name == "vector" else 0.2) / (1.0 + rank)
        for name, rank in by_rank[0].ranks.items()))
    with pytest.raises(TietoError, match="fusion 'borda' is not one of zscore, rrf"):
        notes.recall("zeppelin", "notes", fusion="borda")


def test_exact_and_prefiltered_vectors_agree_on_a_small_topic(notes: Tieto) -> None:
    fast = notes.recall("water tomatoes", "notes", k=4, mode="vector")
    exact = notes.recall("water tomatoes", "notes", k=4, mode="vector", exact=True)
    assert [h.id for h in fast] == [h.id for h in exact]


def test_min_similarity_sieve(notes: Tieto) -> None:
    everything = notes.recall("tomatoes sun water", "notes", k=10, mode="vector")
    sieve = (everything[0].similarity + everything[-1].similarity) / 2
    kept = notes.recall("tomatoes sun water", "notes", k=10, mode="vector", min_similarity=sieve)
    assert 0 < len(kept) < len(everything) and all(h.similarity >= sieve for h in kept)


def test_long_question_is_cut_to_what_the_model_takes(notes: Tieto) -> None:
    assert notes.recall("tomatoes " * 400, "notes", k=1, mode="vector")


def test_unknown_topic_lists_the_known_ones(notes: Tieto) -> None:
    with pytest.raises(UnknownTopicError, match=r"no topic 'nope' \(known topics: notes\)") \
            as err:
        notes.recall("x", "nope")
    assert err.value.exit_code == 66


def test_embedding_dimension_mismatch_is_refused(notes: Tieto) -> None:
    other = Tieto(notes.settings, embedder_factory=lambda: FakeEmbedder(dim=48))
    with pytest.raises(DimensionMismatchError, match="holds 32-dimensional vectors but the "
                       "embedding model gives 48"):
        other.recall("tomatoes", "notes")
    other.close()


def test_another_model_of_the_same_size_is_refused(notes: Tieto) -> None:
    other = Tieto(notes.settings, embedder_factory=lambda: FakeEmbedder(model_id="fake:2"))
    with pytest.raises(EmbeddingMismatchError, match="indexed with embedding model fake:1"):
        other.recall("tomatoes", "notes")
    other.close()


def test_changed_file_with_another_model_is_refused(tmp_path: Path) -> None:
    docs = tmp_path / "d"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha.\n")
    settings = TietoSettings(root=tmp_path / "topics")
    Tieto(settings, embedder_factory=FakeEmbedder).ingest([docs], "t")
    (docs / "a.md").write_text("Beta.\n")
    other = Tieto(settings, embedder_factory=lambda: FakeEmbedder(dim=16))
    with pytest.raises(DimensionMismatchError, match="--rebuild"):
        other.ingest([docs], "t")


def test_fts_query_quotes_words_and_drops_function_words() -> None:
    assert fts_query('How do I use "quotes" AND -minus*?') == \
        '"use" OR "quotes" OR "minus"'
    assert fts_query("the of") == '"the" OR "of"'
    assert fts_query("?!") == ""


def test_config_defaults_are_the_library_defaults() -> None:
    """The tuned fusion settings live in two places; they must not drift apart."""
    from runa.components import packaged_schema

    config = packaged_schema()
    defaults = RecallParams()
    for key in ("k", "mode", "candidates", "fusion", "rrf_k", "fts_weight", "min_similarity"):
        assert config.setting(f"tieto.{key}").default == getattr(defaults, key), key
    assert config.setting("tieto.chunk_tokens").default == TietoSettings(Path()).chunk_tokens
    assert config.setting("tieto.chunk_overlap").default == TietoSettings(Path()).overlap


def test_an_injected_embedder_is_not_closed_by_tieto(tmp_path: Path) -> None:
    class Closable(FakeEmbedder):
        closed = False

        def close(self) -> None:
            self.closed = True

    shared = Closable()
    Tieto(TietoSettings(root=tmp_path), embedder_factory=lambda: shared).close()
    t = Tieto(TietoSettings(root=tmp_path), embedder_factory=lambda: shared)
    t.embedder()
    t.close()
    assert not shared.closed


def test_a_listing_shows_the_score_it_is_sorted_by_beside_the_cosine(notes: Tieto) -> None:
    """Hybrid hits are ordered by the fused score, so a cosine listed lower may be higher:
    the number a person reads down the list must be the one the list is sorted by."""
    from runa.cli.recall_cmd import format_hit

    hits = notes.recall("zeppelin budget tomatoes water", "notes", k=5)
    similarities = [h.similarity for h in hits]
    assert similarities != sorted(similarities, reverse=True)  # the case that misled
    lines = [format_hit(n, h).splitlines()[0] for n, h in enumerate(hits, start=1)]
    shown = [float(re.search(r"  score (-?\d+\.\d+)", line)[1]) for line in lines]  # type: ignore[index]
    assert shown == sorted(shown, reverse=True), lines
    for hit, line in zip(hits, lines, strict=True):
        assert line.endswith(f"score {hit.score:.3f}  similarity {hit.similarity:.3f}"), line


@pytest.mark.parametrize(("override", "message"), [
    ({"min_similarity": float("nan")}, "min_similarity must be a number from -1 to 1, not nan"),
    ({"min_similarity": 1.5}, "min_similarity must be a number from -1 to 1, not 1.5"),
    ({"min_similarity": float("-inf")}, "min_similarity must be a number from -1 to 1"),
    ({"fts_weight": -0.1}, "fts_weight must be a number from 0 to 1, not -0.1"),
    ({"rrf_k": float("inf")}, "rrf_k must be a number from 0 to 10000, not inf"),
    ({"k": 0}, "k must be a whole number from 1 to 1000, not 0"),
])
def test_numbers_out_of_range_are_refused_naming_the_range(notes: Tieto, override: dict,
                                                           message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as refused:
        notes.recall("tomatoes", "notes", **override)
    assert refused.value.exit_code == 64


@pytest.mark.parametrize("sieve", [2.0, float("nan"), -1.5])
def test_a_sieve_out_of_range_is_refused(notes: Tieto, sieve: float) -> None:
    with pytest.raises(UsageError, match=f"sieve must be a number from -1 to 1, not {sieve:g}"):
        notes.ground("tomatoes", "notes", sieve=sieve)
