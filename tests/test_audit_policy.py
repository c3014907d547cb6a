"""``runa audit --policy``: the policy's interventions read back from a real journald.

The records are written as splinfer writes them (runa.policy.Intervention.fields, through
the journal's native protocol under SYSLOG_IDENTIFIER=runa-splinfer); the reader is the one
person-facing part tested here.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from support import runa, wait_for

from runa.cli import interventions
from runa.journald import JournalSocket
from runa.policy import Intervention


def written(conversation: str) -> list[Intervention]:
    return [
        Intervention("privacy.ssn", "privacy", "medium", "mask", "output", "default",
                     token_index=7, conversation=conversation),
        Intervention("self-harm.end-my-life", "suicide_self_harm", "heavy", "whisper",
                     "prompt", "default", conversation=conversation),
        Intervention("weapons.nerve-agent", "indiscriminate_weapons", "medium", "flag",
                     "output", "research", token_index=12, conversation=conversation,
                     reason="delay without the semantic tier: fail open"),
    ]


def record(item: Intervention, when: float, **sender: str) -> dict[str, object]:
    return {"__REALTIME_TIMESTAMP": datetime.fromtimestamp(when), "RUNA_COMPONENT": "splinfer",
            **item.fields(), **sender}


def test_records_become_events_newest_last_and_a_table() -> None:
    items = written("c0ffee00c0ffee00")
    stream = interventions.events([
        record(items[1], 200.0, _COMM="python3", SYSLOG_IDENTIFIER="runa-splinfer"),
        record(items[0], 100.0, _SYSTEMD_USER_UNIT="runa-splinfer@main.service"),
        {"RUNA_EVENT": "restart", "RUNA_COMPONENT": "splinfer"},
        record(items[2], 300.0, SYSLOG_IDENTIFIER="runa-splinfer")])
    assert [e.rule for e in stream] == ["privacy.ssn", "self-harm.end-my-life",
                                        "weapons.nerve-agent"]
    assert stream[0].token_index == 7 and stream[1].token_index is None
    lines = interventions.table(stream)
    assert lines[0].split() == ["time", "conversation", "policy", "rule", "category", "weight",
                                "action", "side", "token", "writer"]
    assert lines[1].split()[2:] == ["c0ffee00", "default", "privacy.ssn", "privacy", "medium",
                                    "mask", "output", "7", "runa-splinfer@main.service"]
    # journald's own fields name the writer; an identifier the sender chose is marked
    assert lines[2].split()[-3:] == ["prompt", "-", "python3"]
    assert lines[3].endswith("  runa-splinfer?  (delay without the semantic tier: "
                             "fail open)")


def test_without_a_journal_it_says_where_the_records_went(tmp_path: Path) -> None:
    log = tmp_path / "supervisor.log"
    with pytest.raises(interventions.NoJournal) as no:
        interventions.check_journal(False, log)
    assert no.value.exit_code == 69
    assert f"no journald runs here; under 'runa up' they are in the stack's log ({log})" \
        in str(no.value)
    interventions.check_journal(True, log)


def test_mode_does_not_go_with_policy(runa_env: dict[str, str]) -> None:
    result = runa("audit", "--policy", "--mode", "systemd", env=runa_env)
    assert result.returncode == 64
    assert "--mode goes with the incarnations" in result.stderr


@pytest.mark.real_systemd
def test_audit_policy_lists_the_interventions_from_the_journal(
        user_manager, runa_env: dict[str, str]) -> None:
    conversation = uuid.uuid4().hex
    since = time.time()
    journal = JournalSocket()
    try:
        for item in written(conversation):
            journal.send({"MESSAGE": "policy intervention", "PRIORITY": 6,
                          "SYSLOG_IDENTIFIER": "runa-splinfer", "RUNA_COMPONENT": "splinfer",
                          **item.fields()})
    finally:
        journal.close()

    def listed() -> list[dict] | None:
        out = runa("audit", "--policy", "--json", "--since", f"@{since}", env=runa_env)
        assert out.returncode == 0, out.stderr
        mine = [json.loads(line) for line in out.stdout.splitlines()]
        mine = [e for e in mine if e["conversation"] == conversation]
        return mine if len(mine) == 3 else None

    events = wait_for(listed, 10, "three interventions in the journal")
    assert all(e["writer"] for e in events)  # type: ignore[index]
    assert [{k: v for k, v in e.items() if k not in ("time", "writer")}  # type: ignore[union-attr]
            for e in events] == [
        {"component": "splinfer", **item.to_dict(), "token_index": item.token_index,
         "reason": item.reason} for item in written(conversation)]
    assert all(since - 1 <= e["time"] <= time.time() for e in events)  # type: ignore[union-attr,index]

    text = runa("audit", "--policy", "--component", "splinfer", "--since", f"@{since}",
                env=runa_env)
    assert text.returncode == 0, text.stderr
    mine = [line.split() for line in text.stdout.splitlines() if conversation[:8] in line]
    assert [row[3:9] for row in mine] == [
        ["default", "privacy.ssn", "privacy", "medium", "mask", "output"],
        ["default", "self-harm.end-my-life", "suicide_self_harm", "heavy", "whisper", "prompt"],
        ["research", "weapons.nerve-agent", "indiscriminate_weapons", "medium", "flag", "output"]]
    none = runa("audit", "--policy", "--component", "tieto", "--since", f"@{since}",
                env=runa_env)
    assert none.stdout.startswith("no policy interventions in the journal since @")
