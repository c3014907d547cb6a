"""What the packaging tests share: the checkout's places and a throw-away plain user."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEB_DIR = ROOT / "build/deb"


class PlainUser:
    """A throw-away login user (not root) with a home, removed with it afterwards."""

    def __init__(self, name: str, groups: tuple[str, ...] = ()) -> None:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)
        cmd = ["useradd", "--create-home", "--shell", "/bin/bash", name]
        if groups:
            cmd += ["--groups", ",".join(groups)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        out = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True)
        self.name = name
        self.uid = int(out.stdout)
        self.home = Path("/home") / name

    def remove(self) -> None:
        subprocess.run(["pkill", "-KILL", "-U", str(self.uid)], capture_output=True, check=False)
        subprocess.run(["userdel", "-r", self.name], capture_output=True, check=False)
        for leftover in Path("/dev/shm").iterdir():  # the buses of the person's stack
            try:
                if leftover.stat().st_uid == self.uid:
                    leftover.unlink()
            except FileNotFoundError:
                pass
