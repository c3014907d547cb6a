"""A disk that fills up during an ingest: a clear error, nothing lost, and a way to finish."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from runa.tieto.api import Tieto, TietoSettings
from runa.tieto.errors import IndexWriteError

from .fakes import FakeEmbedder


def _many_files(root: Path, count: int = 120) -> Path:
    """Files of words no other file has: FTS5 and the vectors grow with every one."""
    rng = random.Random(7)
    root.mkdir()
    for i in range(count):
        words = (f"w{rng.randrange(10**9)}" for _ in range(300))
        (root / f"d{i:03}.md").write_text(" ".join(words) + "\n")
    return root


def _grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


@pytest.fixture
def tieto_on(tiny_tmpfs: Path):
    fake = FakeEmbedder()
    opened: list[Tieto] = []

    def make() -> Tieto:
        opened.append(Tieto(TietoSettings(root=tiny_tmpfs / "topics"),
                            embedder_factory=lambda: fake))
        return opened[-1]

    yield make
    for tieto in opened:
        tieto.close()


def test_a_full_disk_stops_the_ingest_keeps_the_index_and_says_how_to_finish(
        tiny_tmpfs: Path, tieto_on, tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "car.md").write_text("The car insurance renews every March.\n")
    bulk = _many_files(tmp_path / "bulk")
    tieto = tieto_on()
    tieto.ingest([notes], "notes")

    with pytest.raises(IndexWriteError) as full:
        tieto.ingest([notes, bulk], "notes")
    message = str(full.value)
    assert full.value.exit_code == 74
    assert "the disk is full" in message and "index.sqlite" in message
    assert "run the same command again" in message

    # What was there before is intact, and the files that fitted are kept.
    tieto.close()
    again = tieto_on()
    assert again.recall("car insurance", "notes")[0].source.endswith("car.md")
    index = again.index_path("notes")
    with sqlite3.connect(index) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    kept = again.open("notes").stats()["sources"]
    assert 1 < kept < 121

    # Space freed: the same command finishes the job without redoing what was kept.
    _grow(tiny_tmpfs, "64m")
    report = again.ingest([notes, bulk], "notes")
    assert (report.failed, report.unchanged, report.ingested) == (0, kept, 121 - kept)


def test_a_new_topic_on_a_full_disk_keeps_the_files_that_fitted(tiny_tmpfs: Path, tieto_on,
                                                                tmp_path: Path) -> None:
    # As an interrupted ingest into an existing topic does (and as the manual says): the files
    # done are kept, and the same command finishes the job once there is space.
    bulk = _many_files(tmp_path / "bulk")
    tieto = tieto_on()
    with pytest.raises(IndexWriteError) as full:
        tieto.ingest([bulk], "bulk")
    assert full.value.exit_code == 74
    assert tieto.topics() == ["bulk"]
    tieto.close()
    again = tieto_on()
    kept = again.open("bulk").stats()["sources"]
    assert 1 <= kept < 120
    assert f"{kept} of 120 file(s) were ingested before it and are kept" in str(full.value)
    assert "run the same command again" in str(full.value)
    with sqlite3.connect(again.index_path("bulk")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    _grow(tiny_tmpfs, "64m")
    report = again.ingest([bulk], "bulk")
    assert (report.failed, report.unchanged, report.ingested) == (0, kept, 120 - kept)


def test_a_new_topic_whose_first_file_does_not_fit_is_not_left_behind(
        tiny_tmpfs: Path, tieto_on, tmp_path: Path) -> None:
    huge = tmp_path / "huge"
    huge.mkdir()
    rng = random.Random(11)
    (huge / "big.md").write_text(" ".join(f"w{rng.randrange(10**9)}" for _ in range(150_000)))
    tieto = tieto_on()
    with pytest.raises(IndexWriteError, match="the new topic was not created"):
        tieto.ingest([huge], "bulk")
    assert tieto.topics() == []
    assert not (tiny_tmpfs / "topics" / "bulk").exists()
