"""alethia's requests (queue ``alethia`` on the ``alethia`` bus; docs/protocol.md, "alethia").

Every payload is sealed with the stack's bus key (``runa.crypto.sealed``, contexts
``SEALED_CONTEXTS``): what a person said is never on the bus in the clear. A request's
sealed fields are ``Op.request(...)``; an answer is a ``response`` envelope whose sealed
payload carries the fields named under each op below; a failure is a plain ``error``
envelope (``code``, ``name``, ``message``, ``exit_code``, and ``kind``: the store error's
class) whose message names no remembered text.

Ids are ``YYYY-MM-DD/N`` (the UTC day and the record's place in that day's chain, from 1).
"""

from __future__ import annotations

from collections.abc import Mapping

from runa.protocol.payloads import Field, Op

SERVICE = "alethia"
BUS = "alethia"
SEALED_CONTEXTS = {"request": "alethia/request", "reply": "alethia/reply"}
#: What a record remembers: a chat turn now, documents with the index (issue "alethia II").
KINDS = ("turn", "document")

# -- answer fields (sealed) ------------------------------------------------------------------
ID, IDS, ENTRIES, RECORD, RECORDS, NEXT = "id", "ids", "entries", "record", "records", "next"
#: ``search``: the best records first, each ``{"id", "score" (cosine, -1 to 1), "time",
#: "kind", "conversation", "persona", "text"}`` and, for a document, ``"source"``,
#: ``"title"``, ``"passage"``; ``text`` is the turn's ``user`` and ``answer`` (or the
#: passage) cut to ``EXCERPT_CHARS``. ``SKIPPED`` (``ingest``): sources already stored with
#: the same sha256, not stored again. A source too large for one request (the bus's 96 KiB
#: envelope) comes in several, its ``passage`` numbers going on from one to the next, in
#: order: what is skipped is a passage already stored under the same source, sha256 and
#: number, so the later requests of one source are stored, not skipped.
MATCHES, SKIPPED = "matches", "skipped"
#: Characters of a match's text in a ``search`` answer at most (the whole record is
#: ``show``). 50 of them do not always fit one answer of the alethia bus (JSON escapes a
#: character that is not ASCII to 6 or 12 bytes; even ASCII, 50 x 1200 characters sealed
#: and in base64 is over 96 KiB): alethia cuts every excerpt by the same share until the
#: answer is at most 64 KiB of JSON, as a page of ``list`` or ``export`` is.
EXCERPT_CHARS = 1200
#: ``status``: ``records``, ``days``, ``bytes``, ``key_version``, ``public_key`` (hex of the
#: Ed25519 public key), ``unsigned`` (records not yet under a signature), ``durability``
#: (``{"records": int, "ms": int}``: the most an unclean stop may lose), ``recording``
#: (whether turns are written for this person).
#: ``indexed``: records in the search index; ``index``: ``"ready"``, ``"building"`` (at
#: start, from the vector file), ``"embedding"`` (records not yet embedded are being
#: caught up) or ``"no embedding model"`` (search is off until it is installed).
STATUS_FIELDS = ("records", "days", "bytes", "key_version", "public_key", "unsigned",
                 "durability", "recording", "indexed", "index")

_ID = Field("id", "string", "a record's id, 'YYYY-MM-DD/N'", required=True)
_CONVERSATION = Field("conversation", "string", "a conversation's id")
_SINCE = Field("since", "number", "only records at or after this time (Unix seconds, UTC)")
_AFTER = Field("after", "string", "the page after this id (the previous answer's 'next')")
_LIMIT = Field("limit", "integer", "at most this many in one answer", default="100",
               allowed="1 to 1000")

OPS: Mapping[str, Op] = {op.name: op for op in (
    Op(SERVICE, "append", "remember one chat turn; answers its 'id' once it is written "
       "(durable within the stated bound)", (
        Field("kind", "string", "what the record is", default="turn", allowed="turn"),
        Field("conversation", "string", "the conversation's id", required=True),
        Field("persona", "string", "the persona that answered"),
        Field("user", "string", "what the person said", required=True),
        Field("answer", "string", "what Runa answered (may be empty: stopped, blocked)",
              required=True),
        Field("interventions", "list of objects", "tokenWhisper's interventions "
              "(rule, action, tier; never the matched text)"),
        Field("feedback", "string", "the person's feedback on the answer, if any"),
        Field("time", "number", "when the turn happened (Unix seconds)", default="now",
              allowed="0 to at most 60 s ahead of alethia's clock; else `BAD_SCHEMA`"),
    )),
    Op(SERVICE, "list", "records' ids, times, kinds, conversations and personas, oldest "
       "first ('entries', and 'next' for the following page)",
       (_SINCE, _CONVERSATION, _AFTER, _LIMIT)),
    Op(SERVICE, "show", "one record, decrypted ('record')", (_ID,)),
    Op(SERVICE, "export", "whole records, decrypted, oldest first ('records', 'next'): the "
       "person's own data for `runa memory export`", (_SINCE, _CONVERSATION, _AFTER, _LIMIT)),
    Op(SERVICE, "forget", "destroy a record's ciphertext, or a whole conversation's, leaving "
       "signed tombstones ('ids')", (
        Field("id", "string", "the record to forget"),
        Field("conversation", "string", "forget every record of this conversation"),
    )),
    Op(SERVICE, "sign", "write what is pending and sign every day's chain head now"),
    Op(SERVICE, "rotate", "re-wrap every day's key under a new memory key from coven "
       "('key_version'); nothing is re-encrypted, nothing lost"),
    Op(SERVICE, "release", "write what is pending, sign, close the store and give up its "
       "lock until 'reload' (so `runa memory restore` can replace it while the daemon runs)"),
    Op(SERVICE, "reload", "close the store and open it again from disk (after `runa memory "
       "restore` replaced it)"),
    Op(SERVICE, "search", "the records nearest in meaning to 'query' ('matches', best "
       "first): turns and document passages, found through the binary index", (
        Field("query", "string", "what to look for, in the person's words", required=True),
        Field("k", "integer", "how many matches", default="5", allowed="1 to 50"),
        _SINCE,
        _CONVERSATION,
        Field("kind", "string", "only records of this kind", allowed="turn, document"),
    )),
    Op(SERVICE, "ingest", "store document passages (as tieto reads and chunks them, front "
       "matter kept), written and signed before the answer ('ids'; 'skipped' names sources "
       "whose passages were already stored with the same sha256 and number)", (
        Field("passages", "list of objects", "each {source, sha256, title, meta (the "
              "front matter), passage (its number in the source, from 0), text}",
              required=True),
    )),
    Op(SERVICE, "status", "the store's counts, key version, public key and durability bound"),
)}
