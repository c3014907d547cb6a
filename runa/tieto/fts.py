"""Turn a question into an FTS5 query: its content words, any of which may match.

A question is not FTS5 syntax (quotes, ``-``, ``*``, ``AND`` would be
operators), so it is reduced to its words, each quoted, joined with OR; BM25
then ranks chunks by how many rare words they share. Frequent function words
are dropped because they match nearly every chunk and only cost time.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)

_STOPWORD_TEXT = """
a about an and are as at be been but by can could do does did for from has have how i if in
into is it its me my no not of on or our so should than that the their them then there these
they this to was we were what when where which who whom why will with would you your
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def fts_query(question: str, stopwords: frozenset[str] = STOPWORDS) -> str:
    """The FTS5 MATCH expression for ``question`` ("" when it has no words)."""
    words = [w.lower() for w in _WORD.findall(question)]
    content = [w for w in words if w not in stopwords and len(w) > 1] or words
    unique = list(dict.fromkeys(content))
    return " OR ".join(f'"{w}"' for w in unique)
