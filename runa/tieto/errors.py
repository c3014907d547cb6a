"""What can go wrong in tieto, each with the file, line, key or topic a person must look at.

Exit codes follow sysexits: bad input data 65, missing input 66, bad usage 64.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from runa.errors import RunaError, UsageError


class TietoError(RunaError):
    """Base of every tieto problem."""

    exit_code = 65  # EX_DATAERR


class InputError(TietoError):
    """One input file (or one line of it) cannot be ingested; names the file and line."""

    def __init__(self, path: Path | str, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")


class FrontMatterError(InputError):
    """The YAML front matter is unclosed, not YAML, or not a mapping."""


class JsonlLineError(InputError):
    """A JSONL line is not a JSON object with a string ``text``."""


class EmptyInputError(InputError):
    """The file (or its body after the front matter) holds no text."""


class NotTextError(InputError):
    """The file is binary or not UTF-8."""


class NotRegularFileError(InputError):
    """A FIFO, socket or device where a file was expected: skipped, never waited on."""


class MetadataError(InputError):
    """A front-matter value does not fit the type its key is declared with in the topic."""


class FilterError(UsageError):
    """A ``--filter`` expression that cannot be used: syntax, operator, key or value."""


class TopicError(TietoError):
    """A topic name that is not allowed, or a topic in a state tieto cannot use."""

    exit_code = 64


class UnknownTopicError(TopicError):
    """Recall from a topic nothing was ever ingested into."""

    exit_code = 66  # EX_NOINPUT

    def __init__(self, topic: str, known: Sequence[str]) -> None:
        self.topic = topic
        self.known = list(known)
        listing = ", ".join(self.known) if self.known else "none yet"
        super().__init__(
            f"no topic {topic!r} (known topics: {listing}); "
            f"create it with 'runa ingest PATH... --topic {topic}'"
        )


class EmbeddingMismatchError(TietoError):
    """The topic was indexed with a different embedding model than the one loaded."""

    def __init__(self, topic: str, problem: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {topic!r}: {problem}; re-index it with "
            f"'runa ingest PATH... --topic {topic} --rebuild' or configure the model it was "
            "built with (tieto.embedding_model)"
        )


class DimensionMismatchError(EmbeddingMismatchError):
    """Vectors of one length cannot be searched with vectors of another."""


class IndexCorruptError(TietoError):
    """The index file is not a tieto index or was written by an incompatible version."""


class TopicBusyError(TietoError):
    """The topic is being ingested; what was asked would replace it under the ingest."""

    exit_code = 75  # EX_TEMPFAIL: try again when the ingest has ended


class IndexWriteError(TietoError):
    """The topic's index file cannot be written: a full disk, an I/O error, a read-only file.

    SQLite rolls the failed change back, so the index keeps what it had before it.
    """

    exit_code = 74  # EX_IOERR

    def __init__(self, path: Path | str, problem: str, context: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"cannot write the index {self.path}: {problem}"
                         + (f"; {context}" if context else ""))

    def during_ingest(self, ingested: int, total: int) -> IndexWriteError:
        """The same error, saying what an interrupted ingest keeps and how to finish it."""
        return IndexWriteError(self.path, self.problem, (
            f"{ingested} of {total} file(s) were ingested before it and are kept; free some "
            "space and run the same command again to add the rest (unchanged files are "
            "skipped)"))

    def topic_not_created(self) -> IndexWriteError:
        """The same error, for an ingest that was creating its topic (removed again)."""
        return IndexWriteError(self.path, self.problem,
                               "the new topic was not created; free some space and run it again")
