"""`runa ingest` and `runa recall` as a person runs them, with the real embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import isolated_env, runa

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


@pytest.fixture
def env(tmp_path: Path, minilm_gguf: Path) -> dict[str, str]:
    env = isolated_env(tmp_path)
    env["RUNA_TIETO_EMBEDDING_MODEL"] = str(minilm_gguf)
    return env


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "passwords.md").write_text(
        "---\ntitle: Passwords\nyear: 2021\ntags: [security, accounts]\n---\n"
        "To reset your password, open the account page and choose 'Forgot password'. "
        "A link arrives by e-mail within five minutes.\n")
    (root / "garden.md").write_text(
        "---\ntitle: Garden\nyear: 2018\n---\nTomatoes need six hours of sun a day.\n")
    (root / "office.jsonl").write_text(
        json.dumps({"text": "The office closes at five on Fridays.",
                    "meta": {"year": 2023}}) + "\n")
    return root


def test_ingest_then_recall(env: dict[str, str], docs: Path) -> None:
    done = runa("ingest", str(docs), "--topic", "notes", "--filterable", "year:integer",
                env=env)
    assert done.returncode == 0, done.stderr
    assert "topic notes: 3 files: 3 ingested (3 chunks embedded)" in done.stderr
    again = runa("ingest", str(docs), "--topic", "notes", "--json", env=env)
    report = json.loads(again.stdout)
    assert again.returncode == 0 and report["chunks_embedded"] == 0 and report["unchanged"] == 3

    found = runa("recall", "how can I change my password?", "--topic", "notes", "--k", "1",
                 env=env)
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0]
    assert first.startswith(f"1. {docs / 'passwords.md'}:6 (chunk 0)  score "), first
    assert "  similarity 0." in first  # the cosine beside the score the list is sorted by
    assert "Forgot password" in found.stdout

    filtered = runa("recall", "how can I change my password?", "--topic", "notes",
                    "--filter", "year>=2022", "--json", env=env)
    listing = json.loads(filtered.stdout)
    hits = listing["hits"]
    assert listing["sorted_by"] == "score"
    assert [h["source"] for h in hits] == [str(docs / "office.jsonl")]
    assert set(hits[0]) >= {"text", "score", "similarity", "source", "line", "chunk"}
    # year is declared integer: a number beyond 64 bits cannot be compared with it
    huge = runa("recall", "x", "--topic", "notes", "--filter", "year = " + "9" * 30, env=env)
    assert huge.returncode == 64 and "Traceback" not in huge.stderr, huge.stderr
    assert f"'year' is declared integer; {'9' * 30} is out of its range" in huge.stderr


def test_errors_and_exit_codes(env: dict[str, str], docs: Path) -> None:
    (docs / "broken.md").write_text("---\ntitle: [x\n---\nBody\n")
    done = runa("ingest", str(docs), "--topic", "notes", env=env)
    assert done.returncode == 65
    assert f"runa ingest: {docs / 'broken.md'}:2: front matter is not valid YAML" in done.stderr
    assert "3 ingested" in done.stderr

    unknown = runa("recall", "x", "--topic", "nope", env=env)
    assert unknown.returncode == 66 and "no topic 'nope' (known topics: notes)" in unknown.stderr
    bad_op = runa("recall", "x", "--topic", "notes", "--filter", "year=>2020", env=env)
    assert bad_op.returncode == 64 and "unknown operator '=>'" in bad_op.stderr
    bad_key = runa("recall", "x", "--topic", "notes", "--filter", "yeer>2020", env=env)
    assert bad_key.returncode == 64 and "did you mean 'year'" in bad_key.stderr
