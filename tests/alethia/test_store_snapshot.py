"""snapshot and restore: a consistent copy, checked before it replaces the store."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from runa.alethia.store import Store, StoreError, restore, snapshot, verify

from .helpers import Clock, turn

Open = Callable[..., Store]


def test_a_snapshot_restores_the_store_as_it_was(opener: Open, root: Path, clock: Clock,
                                                 tmp_path: Path) -> None:
    store = opener()
    ids = [store.append("turn", turn(n)) for n in range(3)]
    clock.next_day()
    ids.append(store.append("turn", turn(3)))
    store.flush()
    target = tmp_path / "copy.tar"
    snapshot(root, target)  # while the store is open: the daemon's case
    store.forget(ids[0])
    store.append("turn", turn(4))
    store.close()
    with pytest.raises(StoreError, match="exists"):
        snapshot(root, target)
    report = restore(target, root)
    assert report.ok and report.records == 4
    again = opener()
    assert [e.id for e in again.entries()] == ids
    assert again.read(ids[0]).body["user"] == turn(0)["user"]


def test_a_snapshot_leaves_out_a_batch_being_written(opener: Open, root: Path,
                                                     tmp_path: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.close()
    with (root / "days" / "2026-12-07.log").open("ab") as handle:
        handle.write(b'{"t":"rec","i":2,')
    snapshot(root, tmp_path / "copy.tar")
    restored = tmp_path / "restored"
    assert restore(tmp_path / "copy.tar", restored).ok


def test_a_snapshot_that_does_not_verify_replaces_nothing(opener: Open, root: Path,
                                                          tmp_path: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.close()
    snapshot(root, tmp_path / "copy.tar")
    with tarfile.open(tmp_path / "copy.tar") as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for member, data in members:
            if member.name.endswith(".log"):
                data = data.replace(b'"i":1', b'"i":2')
            tar.addfile(member, io.BytesIO(data))
    before = (root / "days" / "2026-12-07.log").read_bytes()
    with pytest.raises(StoreError, match="does not verify"):
        restore(bad, root)
    assert (root / "days" / "2026-12-07.log").read_bytes() == before
    assert verify(root).ok


def test_restore_refuses_an_open_store_and_foreign_files(opener: Open, root: Path,
                                                         tmp_path: Path) -> None:
    store = opener()
    store.append("turn", turn(0))
    store.flush()
    snapshot(root, tmp_path / "copy.tar")
    with pytest.raises(StoreError, match="another process"):
        restore(tmp_path / "copy.tar", root)
    store.close()
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../outside")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(StoreError, match="not part of a snapshot"):
        restore(evil, root)
    assert not (tmp_path / "outside").exists()
