"""tieto: retrieval over a person's own documents (docs/tieto.md).

Modules, each with one job: ``sources`` (files → records, front matter
through ``runa.frontmatter``),
``chunk`` (records → chunks that fit the model), ``embed`` (the model),
``index`` (one SQLite file per topic: sqlite-vec + FTS5 + metadata),
``values``/``filters`` (typed ``--filter`` expressions → SQL), ``fts``,
``fusion`` (reciprocal rank fusion), ``ingest``, ``recall``, ``topic`` (a
topic's settings) and ``api`` (all of it behind one object for the CLI and the
daemon).
"""
