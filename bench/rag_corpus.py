"""The RAG benchmark's documents and labels, made mechanically from the Python FAQ.

Source: Debian bookworm's ``python3.11-doc`` package (the CPython documentation,
written by the Python community, not by anyone here), its reStructuredText
sources ``/usr/share/doc/python3.11/html/_sources/faq/*.rst.txt``.

Labels come from the FAQ's own structure and nothing else:

1. every section whose title ends with ``?`` is an entry; its answer is the text
   from the title's underline to the next section title of any level;
2. the query is the title with reStructuredText markup reduced to plain text;
3. the relevant document is that entry's answer — the corpus holds each answer
   as one Markdown file *without* its question, so a hit cannot come from the
   title words;
4. entries whose answer has fewer than ``MIN_ANSWER_WORDS`` words get no query
   (their answer stays in the corpus);
5. the split is by the entry id's sha256: first byte even → ``tune``, odd →
   ``test``; tuning looks only at ``tune``, the report only at ``test``.

Distractors, in the corpus but never relevant: the Python tutorial and the
glossary from the same package. Running this module writes the labels
(``--write-labels``) or the corpus (``--write-corpus DIR``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "python3.11-doc"
PACKAGE_VERSION = "3.11.2-6+deb12u9"
SOURCES = Path("usr/share/doc/python3.11/html/_sources")
FAQ_FILES = ("general", "programming", "design", "library", "extending", "windows", "gui",
             "installed")
DISTRACTORS = ("tutorial/*.rst.txt", "glossary.rst.txt")
MIN_ANSWER_WORDS = 20
LABELS = Path(__file__).resolve().parent / "data" / "rag" / "python-faq-labels.jsonl"
CACHE = Path.home() / ".cache" / "runa-bench"

_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_.:])\1{2,}\s*$")
_PEP = re.compile(r":(pep|rfc):`(\d+)[^`]*`")
_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")
_LITERAL = re.compile(r"``(.+?)``")
_EMPHASIS = re.compile(r"(?<![\w*])\*\*?([^*\n]+?)\*\*?(?![\w*])")
_DIRECTIVE = re.compile(r"^\s*\.\. (_[^:]+:|index::|only::|contents::|highlight::|"
                        r"versionadded::|versionchanged::|seealso::|note::|tabularcolumns::)")


@dataclass(frozen=True)
class Entry:
    id: str
    faq: str
    section: str
    question: str
    answer: str

    @property
    def split(self) -> str:
        return "tune" if hashlib.sha256(self.id.encode()).digest()[0] % 2 == 0 else "test"


def plain(text: str) -> str:
    """reStructuredText inline markup reduced to the words a reader sees."""
    text = _PEP.sub(lambda m: f"{m.group(1).upper()} {m.group(2)}", text)
    text = _ROLE.sub(lambda m: m.group(1).strip().split(".")[-1] if m.group(1).startswith("~")
                     else m.group(1).strip(), text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return text.replace("\\", "")


def _headings(lines: list[str]) -> Iterator[tuple[int, int]]:
    """(title line, first body line) of every section title."""
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if (title.strip() and not _UNDERLINE.match(title) and _UNDERLINE.match(under)
                and len(under.rstrip()) >= len(title.rstrip()) and not title.startswith(" ")):
            yield i, i + 2


def _body(lines: list[str]) -> str:
    kept = [ln for ln in lines if not _DIRECTIVE.match(ln)]
    return plain("\n".join(kept)).strip()


def entries(root: Path) -> list[Entry]:
    """Every question → answer entry of the FAQ under ``root`` (an unpacked package)."""
    out: list[Entry] = []
    for faq in FAQ_FILES:
        lines = (root / SOURCES / "faq" / f"{faq}.rst.txt").read_text().splitlines()
        heads = list(_headings(lines))
        section = ""
        for n, (title_at, body_at) in enumerate(heads):
            title = plain(lines[title_at].strip())
            end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
            if not title.endswith("?"):
                section = title
                continue
            number = sum(1 for e in out if e.faq == faq) + 1
            out.append(Entry(f"{faq}-{number:03d}", faq, section, title,
                             _body(lines[body_at:end])))
    return out


def distractors(root: Path) -> list[tuple[str, str]]:
    """(name, text) of the documents that are never relevant."""
    docs = []
    for pattern in DISTRACTORS:
        for path in sorted((root / SOURCES).glob(pattern)):
            docs.append((str(path.relative_to(root / SOURCES)),
                         _body(path.read_text().splitlines())))
    return docs


def source_hashes(root: Path) -> dict[str, str]:
    return {f: hashlib.sha256((root / SOURCES / "faq" / f"{f}.rst.txt").read_bytes()).hexdigest()
            for f in FAQ_FILES}


def package_root(cache: Path = CACHE) -> Path:
    """The unpacked documentation: the installed package, else ``apt-get download`` + unpack."""
    if (Path("/") / SOURCES / "faq").is_dir():
        return Path("/")
    root = cache / "python3.11-doc"
    if (root / SOURCES / "faq").is_dir():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
    if not found:
        if not shutil.which("apt-get"):
            sys.exit(f"bench needs the {PACKAGE} package: install it (apt-get install {PACKAGE})")
        proc = subprocess.run(["apt-get", "download", f"{PACKAGE}={PACKAGE_VERSION}"], cwd=debs,
                              capture_output=True, text=True)
        found = sorted(debs.glob(f"{PACKAGE}_*.deb"))
        if proc.returncode != 0 or not found:
            sys.exit(f"cannot fetch {PACKAGE}={PACKAGE_VERSION} ({proc.stderr.strip()}); "
                     f"install it with apt-get install {PACKAGE}")
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    return root


def write_corpus(root: Path, dest: Path) -> int:
    """The eval corpus as Markdown files with front matter; returns the number of files."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "faq").mkdir(parents=True)
    (dest / "docs").mkdir()
    count = 0
    for entry in entries(root):
        meta = {"faq": entry.faq, "entry": entry.id, "section": entry.section}
        front = "---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in meta.items()) + "---\n"
        (dest / "faq" / f"{entry.id}.md").write_text(front + entry.answer + "\n")
        count += 1
    for name, text in distractors(root):
        safe = name.replace("/", "-").removesuffix(".rst.txt")
        front = f"---\nfaq: none\nentry: none\nsection: {json.dumps(name)}\n---\n"
        (dest / "docs" / f"{safe}.md").write_text(front + text + "\n")
        count += 1
    return count


def load_labels(path: Path = LABELS) -> tuple[dict[str, object], list[dict[str, str]]]:
    """The header line and the labelled queries."""
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(ln) for ln in lines[1:] if ln.strip()]


def make_labels(root: Path) -> list[str]:
    header = {"source": f"{PACKAGE} {PACKAGE_VERSION}", "files": source_hashes(root),
              "rules": "bench/rag_corpus.py", "min_answer_words": MIN_ANSWER_WORDS}
    rows = [json.dumps(header)]
    for entry in entries(root):
        if len(entry.answer.split()) < MIN_ANSWER_WORDS:
            continue
        rows.append(json.dumps({"id": entry.id, "query": entry.question,
                                "relevant": entry.id, "split": entry.split}))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-labels", action="store_true", help=f"write {LABELS}")
    parser.add_argument("--write-corpus", type=Path, metavar="DIR")
    args = parser.parse_args()
    root = package_root()
    if args.write_labels:
        rows = make_labels(root)
        LABELS.parent.mkdir(parents=True, exist_ok=True)
        LABELS.write_text("\n".join(rows) + "\n")
        splits = [json.loads(r)["split"] for r in rows[1:]]
        print(f"{LABELS}: {len(rows) - 1} queries ({splits.count('tune')} tune, "
              f"{splits.count('test')} test)")
    if args.write_corpus:
        print(f"{args.write_corpus}: {write_corpus(root, args.write_corpus)} documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
