"""Incremental ingest: unchanged files embed nothing, changes and removals are followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runa.tieto.api import Tieto, TietoSettings
from runa.tieto.errors import IndexCorruptError, MetadataError, TopicError
from runa.tieto.ingest import IngestEvent

from .fakes import FakeEmbedder


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("---\ntitle: A\n---\nApples are red. " * 3 + "\n")
    (root / "b.txt").write_text("Bananas are yellow and long.\n")
    (root / "sub/c.jsonl").write_text('{"text": "Cherries are small.", "meta": {"n": 1}}\n'
                                      '{"text": "Dates are sweet.", "meta": {"n": 2}}\n')
    return root


def test_reingesting_an_unchanged_tree_embeds_nothing(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    loads: list[FakeEmbedder] = []

    def factory() -> FakeEmbedder:
        loads.append(FakeEmbedder())
        return loads[-1]

    first = Tieto(TietoSettings(root=tmp_path / "topics"), embedder_factory=factory)
    report = first.ingest([tree], "t")
    assert (report.files, report.ingested, report.chunks_embedded) == (3, 3, 4)
    first.close()
    again = Tieto(TietoSettings(root=tmp_path / "topics"), embedder_factory=factory)
    report = again.ingest([tree], "t")
    assert (report.unchanged, report.ingested, report.chunks_embedded) == (3, 0, 0)
    assert len(loads) == 1, "the model was loaded although nothing changed"
    again.close()


def test_changed_file_is_re_embedded_and_removed_file_removed(tieto: Tieto, fake: FakeEmbedder,
                                                               tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    tieto.ingest([tree], "t")
    (tree / "b.txt").write_text("Blueberries are blue.\n")
    (tree / "sub/c.jsonl").unlink()
    before = fake.embedded
    report = tieto.ingest([tree], "t")
    assert (report.ingested, report.unchanged, report.removed) == (1, 1, 1)
    assert fake.embedded - before == 1
    texts = {h.text for h in tieto.recall("fruit", "t", k=10, mode="vector")}
    assert "Blueberries are blue." in texts and "Bananas are yellow and long." not in texts
    assert not any("Cherries" in t for t in texts)
    assert tieto.open("t").stats() == {"sources": 2, "documents": 2, "chunks": 2}


def test_ingesting_another_folder_keeps_the_first(tieto: Tieto, tmp_path: Path) -> None:
    one = _tree(tmp_path / "one")
    two = tmp_path / "two"
    two.mkdir()
    (two / "z.md").write_text("Zucchini are green.\n")
    tieto.ingest([one], "t")
    report = tieto.ingest([two], "t")
    assert report.removed == 0 and tieto.open("t").stats()["sources"] == 4


def test_a_deleted_folder_given_again_is_forgotten(tieto: Tieto, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    tieto.ingest([tree], "t")
    for path in sorted(tree.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    tree.rmdir()
    report = tieto.ingest([tree], "t")
    assert report.removed == 3 and report.ok and tieto.open("t").stats()["chunks"] == 0


def test_errors_name_file_and_line_and_the_rest_goes_on(tieto: Tieto, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    (tree / "broken.md").write_text("---\ntitle: [unclosed\n---\nBody\n")
    (tree / "empty.txt").write_text("")
    (tree / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tree / "bin.txt").write_bytes(b"\x00\x01\x02")
    (tree / "sub/c.jsonl").write_text('{"text": "Cherries."}\n{broken\n')
    events: list[IngestEvent] = []
    report = tieto.ingest([tree, tmp_path / "missing"], "t", progress=events.append)
    problems = {(Path(p.path).name, p.line) for p in report.problems}
    assert problems == {("broken.md", 2), ("empty.txt", None), ("latin1.txt", 1),
                        ("bin.txt", None), ("c.jsonl", 2), ("missing", None)}
    assert report.ingested == 3 and not report.ok
    failed = [e.message for e in events if e.stage == "failed"]
    assert len(failed) == 6 and any("c.jsonl:2: not valid JSON" in m for m in failed)
    assert [e.stage for e in events].count("ingested") == 3
    # the good line of c.jsonl is in; while unchanged, the broken line is named again and
    # nothing is embedded
    report = tieto.ingest([tree], "t")
    assert report.chunks_embedded == 0
    assert ("c.jsonl", 2) in {(Path(p.path).name, p.line) for p in report.problems}


def test_progress_reports_every_file(tieto: Tieto, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    events: list[IngestEvent] = []
    tieto.ingest([tree], "t", progress=events.append)
    done = [(e.stage, e.done, e.total) for e in events if e.stage == "ingested"]
    assert done == [("ingested", 1, 3), ("ingested", 2, 3), ("ingested", 3, 3)]
    assert any(e.stage == "embed" for e in events)


def test_rebuild_starts_over(tieto: Tieto, fake: FakeEmbedder, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    tieto.ingest([tree], "t")
    report = tieto.ingest([tree], "t", rebuild=True)
    assert report.chunks_embedded == 4


def test_redeclare_that_does_not_fit_changes_nothing(tieto: Tieto, tmp_path: Path) -> None:
    tree = _tree(tmp_path / "docs")
    tieto.ingest([tree], "t")
    with pytest.raises(MetadataError, match="'A' is not one"):
        tieto.ingest([tree], "t", filterable=[("title", "integer")])
    assert tieto.open("t").config.declared == ()
    assert len(tieto.recall("apples", "t", mode="vector")) == 4


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "x" * 65, "notes\n"])
def test_bad_topic_names(tieto: Tieto, tmp_path: Path, name: str) -> None:
    with pytest.raises(TopicError, match="topic name"):
        tieto.ingest([tmp_path], name)


def test_index_is_one_file_per_topic_under_the_root(tieto: Tieto, tmp_path: Path) -> None:
    tieto.ingest([_tree(tmp_path / "docs")], "notes")
    assert tieto.topics() == ["notes"]
    assert (tmp_path / "topics/notes/index.sqlite").is_file()
    assert os.stat(tmp_path / "topics/notes/index.sqlite").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "topics/notes").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "topics/notes/index.sqlite-wal").st_mode & 0o777 == 0o600


def test_a_file_that_is_not_an_index_is_a_clear_error(tieto: Tieto, tmp_path: Path) -> None:
    (tmp_path / "topics/broken").mkdir(parents=True)
    (tmp_path / "topics/broken/index.sqlite").write_text("not a database")
    with pytest.raises(IndexCorruptError, match="not a tieto index"):
        tieto.recall("x", "broken")


def test_a_new_topic_with_nothing_usable_is_not_left_behind(tieto: Tieto,
                                                            tmp_path: Path) -> None:
    (tmp_path / "empty.md").write_text("")
    report = tieto.ingest([tmp_path / "empty.md"], "t")
    assert not report.ok and tieto.topics() == []
