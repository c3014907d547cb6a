"""Filters: syntax, typed comparison, missing keys, lists — the same on every path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runa.tieto.api import Tieto
from runa.tieto.errors import FilterError
from runa.tieto.filters import Literal, parse

from .fakes import FakeEmbedder

DOCS = [  # (name, meta); the text of each is "doc <name> about gardens"
    ("a", {"year": 2019, "lang": "en", "tags": ["x", "y"], "published": "2019-05-01",
           "score": 1.5, "draft": False}),
    ("b", {"year": 2020, "lang": "fi", "tags": ["y"], "published": "2020-12-31T23:00:00Z",
           "score": 2.5, "draft": True}),
    ("c", {"year": "2021", "lang": "en", "tags": "z", "published": "2021-01-02",
           "score": 3.0}),
    ("d", {"lang": "sv", "tags": [], "published": "not a date"}),
    ("e", {"year": 2022, "lang": "EN", "author": {"name": "Ann"}, "score": 10}),
]
DECLARED = [("year", "integer"), ("lang", "text"), ("published", "date"), ("score", "float"),
            ("draft", "boolean")]


def _topic(tieto: Tieto, root: Path, name: str, declared: list[tuple[str, str]] | None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "docs.jsonl", "w") as f:
        for doc, meta in DOCS:
            f.write(json.dumps({"text": f"doc {doc} about gardens", "meta": meta}) + "\n")
    report = tieto.ingest([root], name, filterable=declared)
    assert report.ok, report.problems


@pytest.fixture
def both(tieto: Tieto, tmp_path: Path) -> Tieto:
    """Topic 'plain' without declared keys, topic 'cols' with them, same documents."""
    _topic(tieto, tmp_path / "plain", "plain", None)
    # 'd' has published: "not a date" — fine undeclared, refused when declared a date; and
    # 'c' has year "2021" (a numeric string), which fits a declared integer.
    docs = tmp_path / "cols"
    _topic(tieto, docs, "cols", [d for d in DECLARED if d[0] != "published"])
    return tieto


def _names(tieto: Tieto, topic: str, *filters: str, mode: str = "vector") -> set[str]:
    hits = tieto.recall("gardens", topic, list(filters), k=10, mode=mode)
    return {h.text.split()[1] for h in hits}


CASES = [
    (["year>=2020"], {"b", "c", "e"}),
    (["year > 2019.5"], {"b", "c", "e"}),
    (["year<2021"], {"a", "b"}),
    (["year=2021"], {"c"}),
    (["year!=2020"], {"a", "c", "e"}),  # d has no year: never matches, != included
    (["year in 2019, 2022"], {"a", "e"}),
    (["lang=en"], {"a", "c"}),
    (["lang != en"], {"b", "d", "e"}),
    (["lang in (fi, sv)"], {"b", "d"}),
    (["lang>f"], {"b", "d"}),
    (["score>=2.5"], {"b", "c", "e"}),
    (["score<=2"], {"a"}),
    (["draft=true"], {"b"}),
    (["draft!=true"], {"a"}),
    (["year>=2020", "lang=en"], {"c"}),
]


@pytest.mark.parametrize(("filters", "expected"), CASES, ids=[" & ".join(f) for f, _ in CASES])
@pytest.mark.parametrize("topic", ["plain", "cols"])
def test_filter_semantics_agree_on_both_paths(both: Tieto, topic: str, filters: list[str],
                                              expected: set[str]) -> None:
    assert _names(both, topic, *filters) == expected
    assert _names(both, topic, *filters, mode="fts") == expected
    assert _names(both, topic, *filters, mode="hybrid") == expected


@pytest.mark.parametrize(("flt", "expected"), [
    ("tags=y", {"a", "b"}),            # a list matches if any item does
    ("tags!=y", {"a", "c"}),           # a: has x; b's only item is y; d's list is empty
    ("tags in z,x", {"a", "c"}),
    ("published>=2020-06-01", {"b", "c"}),  # dates compare as dates ('d' is not one)
    ("published<2021-01-01", {"a", "b"}),
    ("published=2021-01-02", {"c"}),
    ("author.name=Ann", {"e"}),        # nested mappings as dotted keys
    ("year='2021'", {"c"}),            # quotes force text; the numeric string matches
    ("lang=EN", {"e"}),                # text compares exactly
])
def test_undeclared_lists_dates_and_nesting(both: Tieto, flt: str, expected: set[str]) -> None:
    assert _names(both, "plain", flt) == expected


def test_parse_operators_and_literals() -> None:
    assert (parse("year>=2020").op, parse("a = b c").values[0].text) == (">=", "b c")
    assert [v.text for v in parse("lang in 'a,b', c").values] == ["a,b", "c"]
    assert Literal.read("2021-03-04").kind == "date"
    assert Literal.read("-1.5e3").number == -1500.0
    assert Literal.read('"42"').kind == "text" and Literal.read("TRUE").kind == "bool"


@pytest.mark.parametrize(("expr", "message"), [
    ("year=>2020", "unknown operator '=>'"),
    ("year==2020", "unknown operator '=='"),
    ("year ~ 2", "unknown operator '~'"),
    ("title contains x", "unknown operator 'contains'"),
    ("year>=", "no value"),
    ("just words", "cannot read filter"),
    ("lang in a,,b", "'in' needs a list"),
])
def test_bad_filter_syntax_is_a_clear_error(expr: str, message: str) -> None:
    with pytest.raises(FilterError, match=message) as err:
        parse(expr)
    assert err.value.exit_code == 64


def test_unknown_key_suggests_the_close_one(both: Tieto) -> None:
    with pytest.raises(FilterError, match=r"has the key 'yeer' \(did you mean 'year'\?\)"):
        both.recall("gardens", "plain", ["yeer>=2020"])
    with pytest.raises(FilterError, match="'year' is declared integer; 'soon' is not a number"):
        both.recall("gardens", "cols", ["year>soon"])
    with pytest.raises(FilterError, match="only compare with = or !="):
        both.recall("gardens", "cols", ["draft>true"])


HUGE = "9" * 30  # beyond a 64-bit integer, yet a finite number
HUGER = "9" * 400  # beyond even a float


@pytest.mark.parametrize("value", [HUGE, f"-{HUGE}", HUGER])
@pytest.mark.parametrize("mode", ["vector", "fts", "hybrid"])
def test_an_integer_too_large_for_a_declared_key_is_a_clear_error(both: Tieto, value: str,
                                                                  mode: str) -> None:
    with pytest.raises(FilterError, match=f"'year' is declared integer; {value} is out of "
                       "its range") as err:
        _names(both, "cols", f"year = {value}", mode=mode)
    assert err.value.exit_code == 64


def test_a_huge_number_on_an_undeclared_key_just_compares(both: Tieto) -> None:
    assert _names(both, "plain", f"year = {HUGE}") == set()
    assert _names(both, "plain", f"year < {HUGE}") == {"a", "b", "c", "e"}


def test_declared_key_with_a_wrong_value_is_an_ingest_error(tieto: Tieto, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.md").write_text("---\nyear: soon\n---\nText a.\n")
    (tmp_path / "d/b.md").write_text("---\nyear: [2020, 2021]\n---\nText b.\n")
    (tmp_path / "d/c.md").write_text("---\nyear: 2020\n---\nText c.\n")
    report = tieto.ingest([tmp_path / "d"], "t", filterable=[("year", "integer")])
    messages = sorted(str(p) for p in report.problems)
    assert len(messages) == 2 and report.ingested == 1
    assert "a.md:2: key 'year' is declared integer; 'soon' is not one" in messages[0]
    assert "b.md:2: key 'year' is declared filterable (integer) and takes one value" \
        in messages[1]


def test_filtered_query_returns_k_when_k_match(tieto: Tieto, fake: FakeEmbedder,
                                               tmp_path: Path) -> None:
    """The few matching chunks are far from the question: narrowing happens before the k-NN."""
    rows = [{"text": f"gardens tomatoes sun water {i}", "meta": {"kind": "near", "n": i}}
            for i in range(300)]
    rows += [{"text": f"quarterly tax filing deadline {i}", "meta": {"kind": "far", "n": i}}
             for i in range(6)]
    (tmp_path / "many.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tieto.ingest([tmp_path / "many.jsonl"], "undeclared")
    tieto.ingest([tmp_path / "many.jsonl"], "declared", filterable=[("kind", "text")])
    for topic in ("undeclared", "declared"):
        for mode in ("vector", "hybrid"):
            hits = tieto.recall("gardens tomatoes", topic, ["kind=far"], k=5, mode=mode)
            assert len(hits) == 5 and all(h.meta["kind"] == "far" for h in hits), (topic, mode)
        hits = tieto.recall("gardens tomatoes", topic, ["kind=far", "n>=3"], k=5, mode="vector")
        assert sorted(h.meta["n"] for h in hits) == [3, 4, 5]


def test_redeclaring_keys_rebuilds_without_re_embedding(tieto: Tieto, fake: FakeEmbedder,
                                                        tmp_path: Path) -> None:
    _topic(tieto, tmp_path / "docs", "t", None)
    embedded = fake.embedded
    report = tieto.ingest([tmp_path / "docs"], "t", filterable=[("year", "integer")])
    assert report.chunks_embedded == 0 and fake.embedded == embedded
    assert tieto.open("t").config.declared[0].key == "year"
    assert _names(tieto, "t", "year>=2020") == {"b", "c", "e"}
