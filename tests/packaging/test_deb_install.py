"""`apt install runa` for real (issue 9, items 2 and 3).

The .debs of build/deb (``make deb``) are installed with apt from the files; a plain user
(not root) gets a real ``systemd --user`` from the harness, starts ``runa.target`` and asks a
question that the packaged default model answers; the journal shows the components. The
installed code passes the unit tests under Debian's /usr/bin/python3. Then apt purges it
all, and nothing may be left outside the users' homes but the locked ``runa`` user. The
tests run in file order and share one installation; a finally path purges whatever happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pkgsupport import DEB_DIR, ROOT, PlainUser

from runa.testing.usermanager import UserManager

pytestmark = [pytest.mark.packaging, pytest.mark.real_systemd, pytest.mark.slow]

DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # no venv, no pyenv: what a person has
# The components the packages carry: the registry's, as packaging/components.py renders them.
COMPONENTS = tuple(tomllib.loads((ROOT / "runa/data/components.toml").read_text())["components"])
# Where the packages put files, checked again after the purge.
PACKAGE_PLACES = (Path("/usr/bin/runa"), Path("/usr/lib/runa"), Path("/usr/share/runa"),
                  Path("/etc/runa"), Path("/var/lib/runa"),
                  Path("/usr/lib/python3/dist-packages/runa"),
                  Path("/usr/lib/python3/dist-packages/runa-vendor.pth"),
                  Path("/usr/share/polkit-1/rules.d/60-runa.rules"),
                  Path("/usr/lib/systemd/user/runa.target"))


NOTES = {
    "boat.md": "---\nyear: 2021\n---\nThe sailing boat is moored at the south harbour pier.\n",
    "soup.md": "The soup recipe needs three carrots, one onion and a litre of stock.\n",
    "car.md": "The car insurance renews every March.\n",
}


def apt(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "PATH": DEBIAN_PATH}
    return subprocess.run(["apt-get", "-y", "-q", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def package_names() -> list[str]:
    return sorted({p.name.split("_")[0] for p in DEB_DIR.glob("*.deb")})


@dataclass
class Installed:
    user: PlainUser
    manager: UserManager
    packages: list[str]
    files: list[Path] = field(default_factory=list)
    """Every path dpkg lists for the packages, taken right after the install."""
    purged: bool = False

    def as_user(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {"PATH": DEBIAN_PATH, "HOME": str(self.user.home), "USER": self.user.name,
               "LANG": "C.UTF-8", **self.manager.env}
        return subprocess.run(list(cmd), env=env, cwd=self.user.home, user=self.user.uid,
                              group=self.user.uid, extra_groups=[], capture_output=True,
                              text=True, timeout=timeout, check=False)

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.as_user("systemctl", "--user", *args)

    def purge(self) -> subprocess.CompletedProcess[str]:
        self.purged = True
        return apt("purge", *self.packages)


def installed_packages(names: list[str]) -> list[str]:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *names],
                         capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.endswith(" installed")]


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    packages = package_names()
    if not packages:
        pytest.fail(f"no .deb in {DEB_DIR}: run `make deb` first")
    if installed_packages(packages):
        pytest.fail(f"Runa is already installed here ({installed_packages(packages)}); "
                    "this test installs and purges it and will not touch an existing one")
    user = PlainUser("runapkgtest")
    manager = UserManager(uid=user.uid)
    manager.start()  # takes the harness's machine-wide lock until stop()
    state = Installed(user, manager, packages)
    try:
        result = apt("install", *sorted(str(p) for p in DEB_DIR.glob("*.deb")))
        assert result.returncode == 0, f"apt install failed:\n{result.stdout}\n{result.stderr}"
        listed = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True,
                                check=True).stdout
        state.files = [Path(line) for line in listed.splitlines() if line.startswith("/")]
        yield state
    finally:
        state.systemctl("stop", "runa.target")
        manager.stop()
        if installed_packages(packages):
            state.purge()
        user.remove()


def test_packages_put_user_units_config_and_rules_in_place(installed: Installed) -> None:
    runa = subprocess.run(["getent", "passwd", "runa"], capture_output=True, text=True)
    assert runa.returncode == 0, "postinst did not create the runa system user"
    _name, _, uid, _gid, _, home, shell = runa.stdout.strip().split(":")
    assert int(uid) < 1000 and home == "/var/lib/runa" and shell == "/usr/sbin/nologin"
    assert subprocess.run(["getent", "group", "runa"], capture_output=True).returncode == 0
    for c in COMPONENTS:
        unit = Path(f"/usr/lib/systemd/user/runa-{c}.service")
        assert unit.read_text() == (ROOT / f"systemd/runa-{c}.service").read_text()
    assert Path("/usr/lib/systemd/user/runa.target").is_file()
    conffiles = subprocess.run(["dpkg-query", "-W", "-f", "${Conffiles}", "runa-common"],
                               capture_output=True, text=True, check=True).stdout
    assert "/etc/runa/runa.toml" in conffiles
    assert Path("/usr/share/polkit-1/rules.d/60-runa.rules").read_text() == (
        ROOT / "polkit/60-runa.rules").read_text()
    assert Path("/usr/share/man/man1/runa.1.gz").is_file()
    assert Path("/usr/share/runa/models/SmolLM2-135M-Instruct.Q4_1.gguf").stat().st_size > 9e7
    # Not enabled for everyone: a person starts it (or enables it) for themself.
    enabled = installed.systemctl("is-enabled", "runa.target")
    assert enabled.stdout.strip() == "disabled", enabled.stdout + enabled.stderr


def _journal_components(uid: int, since: float) -> set[str]:
    out = subprocess.run(["journalctl", "--no-pager", "-o", "json", f"_UID={uid}",
                          "--since", f"@{int(since)}"],
                         capture_output=True, text=True, check=False).stdout
    found = set()
    for line in out.splitlines():
        entry = json.loads(line)
        if entry.get("RUNA_COMPONENT"):
            found.add(entry["RUNA_COMPONENT"])
    return found


def test_plain_user_starts_runa_target_and_asks(installed: Installed) -> None:
    started = time.time()
    reload = installed.systemctl("daemon-reload")
    assert reload.returncode == 0, reload.stderr
    start = installed.systemctl("start", "runa.target")
    assert start.returncode == 0, start.stderr
    loaded = {c: installed.systemctl("show", "-P", "LoadState", f"runa-{c}.service")
              .stdout.strip() for c in COMPONENTS}
    assert set(loaded.values()) == {"loaded"}, f"units the packages lack: {loaded}"
    deadline = time.monotonic() + 180
    while True:
        state = {c: installed.systemctl("is-active", f"runa-{c}.service").stdout.strip()
                 for c in COMPONENTS}
        if all(s == "active" for s in state.values()):
            break
        if time.monotonic() > deadline or "failed" in state.values():
            status = installed.systemctl("status", "--no-pager", "runa.target",
                                         *[f"runa-{c}.service" for c in COMPONENTS])
            pytest.fail(f"components not active: {state}\n{status.stdout}{status.stderr}")
        time.sleep(0.5)

    ask = installed.as_user("runa", "ask", "--temp", "0", "-n", "24", "Name three colours.",
                            timeout=180)
    assert ask.returncode == 0, ask.stderr
    assert len(ask.stdout.strip()) > 3, f"no answer: {ask.stdout!r} {ask.stderr!r}"
    # It ran the packaged model, not a copy in the person's home.
    assert not (installed.user.home / ".local/share/runa/models").exists()

    # tieto, packaged (issue 11): a small folder ingested through the running daemon with the
    # packaged embedding model, then recalled.
    notes = installed.user.home / "notes"
    notes.mkdir()
    for name, text in NOTES.items():
        (notes / name).write_text(text)
    for path in (notes, *notes.iterdir()):
        os.chown(path, installed.user.uid, installed.user.uid)
    health = installed.as_user("runa", "bus", "get", "tieto:health")
    assert health.returncode == 0, f"tieto does not heartbeat: {health.stderr}"
    ingest = installed.as_user("runa", "ingest", str(notes), "--topic", "notes", "--json",
                               timeout=300)
    assert ingest.returncode == 0, ingest.stderr
    recall = installed.as_user("runa", "recall", "--json", "--topic", "notes",
                               "where is the sailing boat kept?", timeout=120)
    assert recall.returncode == 0, recall.stderr
    hits = json.loads(recall.stdout)["hits"]
    assert hits and hits[0]["source"].endswith("boat.md"), hits

    deadline = time.monotonic() + 30
    while (seen := _journal_components(installed.user.uid, started)) < set(COMPONENTS):
        if time.monotonic() > deadline:
            pytest.fail(f"journal shows only {sorted(seen)} of {COMPONENTS}")
        time.sleep(0.5)

    stop = installed.systemctl("stop", "runa.target")
    assert stop.returncode == 0, stop.stderr
    deadline = time.monotonic() + 30
    while running := [c for c in COMPONENTS if installed.systemctl(
            "is-active", f"runa-{c}.service").stdout.strip() not in ("inactive", "failed")]:
        if time.monotonic() > deadline:
            status = installed.systemctl("status", "--no-pager", "-n", "30",
                                         *[f"runa-{c}.service" for c in running])
            pytest.fail(f"still running 30 s after the target stopped: {running}\n"
                        f"{status.stdout}{status.stderr}")
        time.sleep(0.5)


def test_unit_tests_pass_under_debian_python(installed: Installed, tmp_path: Path) -> None:
    # The tests of the very tree the packages were built from (packaging/build-deb's copy,
    # so a checkout that moved on since cannot skew it), run by /usr/bin/python3 from
    # elsewhere: neither tree nor venv is on sys.path, so `import runa` is the installed
    # package and its imports are Debian's python3-* and the bundled ones. real_systemd tests
    # need the harness that this session holds; `make test` runs them.
    source = next(p for p in DEB_DIR.glob("runa-*") if p.is_dir())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RUNA_", "VIRTUAL_ENV", "PYENV", "PYTHON"))}
    # Byte-code caches may be written (root can): the purge test then shows they go too.
    env["PATH"] = DEBIAN_PATH
    where = subprocess.run(["/usr/bin/python3", "-c", "import runa; print(runa.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert where.stdout.startswith("/usr/lib/python3/dist-packages/runa/"), where
    result = subprocess.run(
        ["/usr/bin/python3", "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
         "--rootdir", str(source), "-c", str(source / "pyproject.toml"),
         "-m", "not real_systemd and not packaging", "--ignore", str(source / "tests/packaging"),
         str(source / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800, check=False)
    tail = "\n".join(result.stdout.splitlines()[-40:])
    assert result.returncode == 0, f"{tail}\n{result.stderr[-2000:]}"
    print(tail)


def test_purge_leaves_nothing_but_the_locked_runa_user(installed: Installed) -> None:
    result = installed.purge()
    assert result.returncode == 0, result.stdout + result.stderr
    assert installed_packages(installed.packages) == []
    # Directories other packages share (/usr/lib/systemd/user, …) may stay; files may not.
    left = sorted(str(p) for p in [*installed.files, *PACKAGE_PLACES]
                  if (p.is_file() or p.is_symlink()) or (p.is_dir() and "runa" in str(p)))
    assert left == [], f"left after purge: {left}"
    shadow = subprocess.run(["getent", "shadow", "runa"], capture_output=True, text=True,
                            check=True).stdout.split(":")
    assert shadow[1].startswith("!"), f"runa's password is not locked: {shadow[1]!r}"
    assert shadow[7] == "1", "runa's account is not expired"
