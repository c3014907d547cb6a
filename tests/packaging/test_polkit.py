"""polkit/60-runa.rules against a real polkitd (issue 9, item 5).

A system D-Bus and polkitd run in a private mount namespace (notes §7: a tmpfs on
/run/dbus, the rules directories bind-mounted), so the machine's own D-Bus and polkit are
untouched. The rules are the checkout's, beside the distribution's defaults. ``pkcheck``
asks as root on behalf of a process of each test user, with the details systemd passes for
``org.freedesktop.systemd1.manage-units`` (unit, verb).
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkgsupport import ROOT, PlainUser

pytestmark = [pytest.mark.packaging]

RULES = ROOT / "polkit/60-runa.rules"
MANAGE_UNITS = "org.freedesktop.systemd1.manage-units"


@pytest.fixture(scope="module")
def runa_uid() -> Iterator[int]:
    """The runa system user's uid; made (and removed after) if no package made it."""
    made = subprocess.run(["getent", "passwd", "runa"], capture_output=True).returncode != 0
    if made:
        subprocess.run(["adduser", "--system", "--group", "--no-create-home", "--quiet",
                        "runa"], check=True)
    uid = int(subprocess.run(["id", "-u", "runa"], capture_output=True, text=True,
                             check=True).stdout)
    yield uid
    if made:
        subprocess.run(["deluser", "--system", "--quiet", "runa"], check=False)
        subprocess.run(["delgroup", "--system", "--quiet", "runa"], check=False)


def check(cases: list[tuple[str, PlainUser, str, dict[str, str]]], tmp_path: Path) -> \
        tuple[dict[str, int], str]:
    """Run pkcheck for each (name, user, action, details); return exit codes and polkitd's log."""
    etc_rules = tmp_path / "etc-rules"
    share_rules = tmp_path / "share-rules"
    etc_rules.mkdir()
    share_rules.mkdir()
    for rule in Path("/usr/share/polkit-1/rules.d").glob("*.rules"):
        if rule.name != RULES.name:  # an installed copy would shadow the checkout's
            shutil.copy(rule, share_rules)
    shutil.copy(RULES, etc_rules)
    lines = []
    for name, user, action, details in cases:
        flags = " ".join(f"--detail {k} {v}" for k, v in details.items())
        lines.append(f"""
            setpriv --reuid={user.uid} --regid={user.uid} --init-groups sleep 30 &
            subject=$!; sleep 0.2
            pkcheck --action-id {action} --process $subject {flags} >/dev/null 2>&1 \\
              && rc=0 || rc=$?
            echo "RESULT {name} $rc"; kill $subject""")
    script = textwrap.dedent(f"""\
        set -u
        mount -t tmpfs tmpfs /run/dbus
        mount --bind {etc_rules} /etc/polkit-1/rules.d
        mount --bind {share_rules} /usr/share/polkit-1/rules.d
        dbus-daemon --system --fork --print-pid > {tmp_path}/dbus.pid
        /usr/lib/polkit-1/polkitd --no-debug > {tmp_path}/polkitd.log 2>&1 &
        polkitd=$!
        for _ in $(seq 100); do
          busctl --system status org.freedesktop.PolicyKit1 >/dev/null 2>&1 && break
          sleep 0.1
        done
        """) + textwrap.dedent("\n".join(lines)) + textwrap.dedent(f"""
        kill $polkitd; kill $(cat {tmp_path}/dbus.pid); wait
        """)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                             script], capture_output=True, text=True, timeout=120, check=False)
    codes = {line.split()[1]: int(line.split()[2]) for line in result.stdout.splitlines()
             if line.startswith("RESULT ")}
    log = (tmp_path / "polkitd.log").read_text() + result.stderr
    assert len(codes) == len(cases), f"pkcheck did not run every case:\n{result.stdout}\n{log}"
    return codes, log


def test_runa_group_may_start_and_stop_runa_manager_and_nothing_else(
        runa_uid: int, plain_user_factory: type[PlainUser], tmp_path: Path) -> None:
    member = plain_user_factory("runapkmember", groups=("runa",))
    other = plain_user_factory("runapkother")
    manager = f"user@{runa_uid}.service"
    cases = [
        ("member-start", member, MANAGE_UNITS, {"unit": manager, "verb": "start"}),
        ("member-stop", member, MANAGE_UNITS, {"unit": manager, "verb": "stop"}),
        ("member-restart", member, MANAGE_UNITS, {"unit": manager, "verb": "restart"}),
        ("member-reload", member, MANAGE_UNITS, {"unit": manager, "verb": "reload"}),
        ("member-own-manager", member, MANAGE_UNITS,
         {"unit": f"user@{member.uid}.service", "verb": "start"}),
        ("member-root-manager", member, MANAGE_UNITS, {"unit": "user@0.service",
                                                       "verb": "stop"}),
        ("member-other-unit", member, MANAGE_UNITS, {"unit": "ssh.service", "verb": "start"}),
        ("member-other-action", member, "org.freedesktop.systemd1.manage-unit-files", {}),
        ("other-start", other, MANAGE_UNITS, {"unit": manager, "verb": "start"}),
        ("other-stop", other, MANAGE_UNITS, {"unit": manager, "verb": "stop"}),
    ]
    codes, log = check(cases, tmp_path)
    assert "Error" not in log, log
    allowed = {name for name, rc in codes.items() if rc == 0}
    assert allowed == {"member-start", "member-stop", "member-restart"}, (codes, log)
    # Refused means "not authorized" or "needs an administrator's password" (1 or 2), never
    # an error (127) that would look like a refusal.
    assert all(rc in (1, 2) for name, rc in codes.items() if name not in allowed), codes
