"""Ingest against odd files and interruptions: a FIFO is skipped, not waited on for ever, and an
interrupted first ingest of a new topic keeps the files it finished."""

from __future__ import annotations

import os
import threading
from contextlib import suppress
from pathlib import Path

import pytest

from runa.tieto.api import Tieto
from runa.tieto.ingest import IngestEvent, IngestReport
from runa.tieto.sources import read_bytes


def _release(fifo: Path) -> None:
    """Give a reader blocked on ``fifo`` its end of file (the unfixed code waits there)."""
    with suppress(OSError):  # nobody is reading it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def _ingest_in_thread(tieto: Tieto, paths: list[Path], topic: str, wait: float
                      ) -> IngestReport | BaseException | None:
    """The ingest's outcome, or None when it has not ended within ``wait`` seconds."""
    outcome: list[IngestReport | BaseException] = []

    def run() -> None:
        try:
            outcome.append(tieto.ingest(paths, topic))
        except BaseException as error:  # what the command would print
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(wait)
    return outcome[0] if outcome else None


def test_a_fifo_named_md_in_a_folder_is_skipped_with_its_reason(tieto: Tieto,
                                                                 tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "car.md").write_text("The car insurance renews every March.\n")
    os.mkfifo(notes / "pipe.md")
    try:
        report = _ingest_in_thread(tieto, [notes], "notes", wait=20)
    finally:
        _release(notes / "pipe.md")
    assert report is not None, "the ingest hangs on the FIFO"
    assert isinstance(report, IngestReport), report
    assert (report.files, report.ingested, report.failed) == (2, 1, 0)
    assert report.ok  # a skipped FIFO is not a broken document
    [skipped] = report.skipped
    assert skipped.path == str(notes / "pipe.md")
    assert "not a regular file (a FIFO)" in skipped.problem and "skipped" in skipped.problem
    assert report.as_dict()["skipped"] == [{"path": str(notes / "pipe.md"), "line": None,
                                            "problem": skipped.problem}]


def test_a_fifo_named_on_the_command_line_is_skipped_too(tieto: Tieto, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    car = tmp_path / "car.md"
    car.write_text("The car insurance renews every March.\n")
    try:
        report = _ingest_in_thread(tieto, [fifo, car], "notes", wait=20)
    finally:
        _release(fifo)
    assert isinstance(report, IngestReport), report
    assert report.ingested == 1
    assert [s.path for s in report.skipped] == [str(fifo)]


def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_on_the_open_file(
        tmp_path: Path) -> None:
    # The race: a regular file when stat looks, a FIFO by the time it is opened.
    regular = tmp_path / "note.md"
    regular.write_text("text\n")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def swapped(_: object, flags: int) -> int:
        return os.open(fifo, flags)

    with pytest.raises(Exception, match=r"not a regular file \(a FIFO\)"):
        read_bytes(regular, opener=swapped)


def _interrupt_after(ingested: int):
    """A progress callback that presses Ctrl-C once ``ingested`` files are done."""
    def progress(event: IngestEvent) -> None:
        if event.stage == "ingested" and event.done >= ingested:
            raise KeyboardInterrupt

    return progress


def _bulk(root: Path, count: int = 20) -> Path:
    root.mkdir()
    for i in range(count):
        (root / f"b{i:02}.md").write_text(f"Bulk note {i} about harbours and ropes.\n")
    return root


def test_ctrl_c_in_the_first_ingest_of_a_new_topic_keeps_the_files_done(
        tieto: Tieto, tmp_path: Path) -> None:
    bulk = _bulk(tmp_path / "bulk")
    with pytest.raises(KeyboardInterrupt):
        tieto.ingest([bulk], "bulk", progress=_interrupt_after(3))
    assert tieto.topics() == ["bulk"]
    assert tieto.open("bulk").stats()["sources"] == 3
    # Run again: the rest is added, what was kept is not embedded again.
    report = tieto.ingest([bulk], "bulk")
    assert (report.unchanged, report.ingested) == (3, 17)


def test_ctrl_c_before_any_file_of_a_new_topic_is_done_leaves_no_topic(
        tieto: Tieto, tmp_path: Path) -> None:
    bulk = _bulk(tmp_path / "bulk")

    def at_first_batch(event: IngestEvent) -> None:
        if event.stage == "embed":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tieto.ingest([bulk], "bulk", progress=at_first_batch)
    assert tieto.topics() == []
