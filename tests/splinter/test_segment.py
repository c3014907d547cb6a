"""Segments: naming, creation with reserved pages, validation on open (issue 3, done-means 5)."""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import tempfile

import pytest

from runa.errors import UsageError
from runa.paths import check_stack_name, personal_stack
from runa.splinter import Bus, Geometry, create_segment, ensure_segment, segment_path
from runa.splinter.errors import (
    BadMagic,
    GeometryError,
    NoSpace,
    SegmentCorrupt,
    SegmentError,
    SegmentExists,
    SegmentNotFound,
    SegmentSizeError,
    VersionMismatch,
)
from runa.splinter.layout import HEADER_SIZE, LAYOUT_VERSION, Layout
from runa.splinter.segment import Segment

from .support import SMALL


def test_names_follow_stack_and_bus() -> None:
    assert segment_path("u1000", "main") == "/dev/shm/runa-u1000-main"
    assert segment_path("shared", "coven", "/tmp/x") == "/tmp/x/runa-shared-coven"
    assert personal_stack(1234) == "u1234"
    for bad in ("", "../etc", "a/b", "..", "x" * 65):
        with pytest.raises(SegmentError):
            segment_path(bad, "main")


@pytest.mark.parametrize("name", ["_x", "-x", ".x", ".", "x" * 65, "", "u1000", "my-stack.2",
                                  "x" * 64, "9_a"])
def test_a_stack_name_the_cli_refuses_names_no_segment(name: str) -> None:
    """One rule: the bus library takes exactly the stack names ``--stack`` takes."""
    try:
        check_stack_name(name)
        cli_takes = True
    except UsageError:
        cli_takes = False
    try:
        segment_path(name, "main")
        bus_takes = True
    except SegmentError as error:
        assert "starting with a letter or digit" in str(error)
        bus_takes = False
    assert bus_takes == cli_takes


def test_create_reserves_pages_with_mode_and_header(shm_dir: str) -> None:
    path = segment_path("u0", "main", shm_dir)
    create_segment(path, SMALL, mode=0o640, gid=os.getgid())
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == Layout(SMALL).total_size
    assert st.st_blocks * 512 >= st.st_size  # pages really allocated, not a sparse file
    assert os.listdir(shm_dir) == ["runa-u0-main"]  # the temporary name is gone
    with Segment.open(path) as seg:
        assert seg.geometry == SMALL
        assert seg.info.version == LAYOUT_VERSION


def test_default_mode_is_private(shm_dir: str) -> None:
    path = segment_path("u0", "main", shm_dir)
    old = os.umask(0)
    try:
        create_segment(path, SMALL)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_create_never_touches_a_live_segment(make_bus) -> None:
    bus, path = make_bus()
    bus.kv.set("keep", b"me")
    with pytest.raises(SegmentExists):
        create_segment(path, SMALL)
    assert ensure_segment(path, SMALL) is False  # valid and same geometry: left alone
    with pytest.raises(SegmentError, match="geometry"):
        ensure_segment(path, Geometry(slots=128, channels=1, channel_capacity=4096,
                                      max_envelope=1024))
    assert bus.kv.get("keep") == b"me"


def test_ensure_creates_when_absent(shm_dir: str) -> None:
    path = segment_path("shared", "main", shm_dir)
    assert ensure_segment(path, SMALL) is True
    assert ensure_segment(path, SMALL) is False


def test_missing_segment_is_a_clear_error(shm_dir: str) -> None:
    with pytest.raises(SegmentNotFound, match="no such segment"):
        Segment.open(os.path.join(shm_dir, "runa-u0-main"))


def _segment_with(shm_dir: str, patch) -> str:
    path = os.path.join(shm_dir, "runa-u0-main")
    create_segment(path, SMALL)
    with open(path, "r+b") as f:
        patch(f)
    return path


def test_wrong_magic(shm_dir: str) -> None:
    path = _segment_with(shm_dir, lambda f: f.write(b"NOTSPLNT"))
    with pytest.raises(BadMagic, match="not a splinter segment"):
        Segment.open(path)


def test_wrong_version(shm_dir: str) -> None:
    def patch(f):
        f.seek(8)
        f.write(struct.pack("<I", LAYOUT_VERSION + 1))

    path = _segment_with(shm_dir, patch)
    with pytest.raises(VersionMismatch) as e:
        Segment.open(path)
    assert (e.value.found, e.value.expected) == (LAYOUT_VERSION + 1, LAYOUT_VERSION)


@pytest.mark.parametrize("delta", [-4096, 4096])
def test_wrong_size(shm_dir: str, delta: int) -> None:
    size = Layout(SMALL).total_size
    path = _segment_with(shm_dir, lambda f: f.truncate(size + delta))
    with pytest.raises(SegmentSizeError) as e:
        Segment.open(path)
    assert (e.value.actual, e.value.expected) == (size + delta, size)


def test_truncated_below_header(shm_dir: str) -> None:
    path = _segment_with(shm_dir, lambda f: f.truncate(64))
    with pytest.raises(SegmentSizeError):
        Segment.open(path)
    path2 = _segment_with(tempfile.mkdtemp(dir=shm_dir), lambda f: f.truncate(0))
    with pytest.raises(BadMagic):
        Segment.open(path2)


def test_inconsistent_geometry(shm_dir: str) -> None:
    def patch(f):
        f.seek(24)
        f.write(struct.pack("<I", SMALL.slots * 2))

    path = _segment_with(shm_dir, patch)
    with pytest.raises(SegmentCorrupt):
        Segment.open(path)


def test_geometry_is_checked() -> None:
    with pytest.raises(GeometryError, match="slots"):
        Layout(Geometry(slots=0))
    with pytest.raises(GeometryError, match="max_envelope"):
        Layout(Geometry(channel_capacity=4096, max_envelope=4096))
    assert HEADER_SIZE == 4096


def test_no_room_at_create_time_is_clear_and_leaves_nothing(tmp_path) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        path = segment_path("u0", "main", str(mnt))
        big = Geometry(slots=1024, max_value=4096)  # ~9 MB
        with pytest.raises(NoSpace) as e:
            create_segment(path, big)
        assert e.value.needed == Layout(big).total_size
        assert 0 <= e.value.free <= 1 << 20
        assert path in str(e.value) and str(e.value.needed) in str(e.value)
        assert os.listdir(mnt) == []  # nothing left behind
        create_segment(path, SMALL)  # a segment that fits still works there
        with Bus.open(path) as bus:
            bus.kv.set("k", b"v")
            assert bus.kv.get("k") == b"v"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
