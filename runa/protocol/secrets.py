"""Secrets on the bus: gilgul's broker (queue ``gilgul.secrets``, main bus) and coven (queue
``coven``, coven bus). docs/protocol.md, "Secrets", is the contract; docs/security.md says
what it protects and what it does not.

Two hops, the same operations. A requester (a component, or a person's ``runa secret``)
asks gilgul; gilgul identifies it by what the kernel says (``Bus.queue_holder`` of the
request's ``reply_to`` queue, then that pid's systemd unit or the supervisor's child), checks
the registry's read policy, and asks coven with ``for`` naming the requester it identified.
coven answers gilgul alone (it checks the kernel's holder of ``reply_to`` the same way) and
audits every access as (secret name, ``for``, decision).

Every payload on both hops is sealed (``runa.crypto.sealed``, contexts ``SEALED_CONTEXTS``):
the fields below are the sealed fields, and a secret's value (or a passphrase) travels as
the sealed frame's value bytes, never as a JSON string. Faults are plain ``error``
envelopes (``NOT_AUTHORIZED`` 2000 for a refusal) whose messages name no secret value.
"""

from __future__ import annotations

from collections.abc import Mapping

from runa.protocol.payloads import Field, Op

COVEN = "coven"
BROKER = "gilgul.secrets"
#: The ``context`` of ``BusKey.seal``/``open`` for each hop and direction.
SEALED_CONTEXTS = {
    "broker_request": "gilgul.secrets/request",
    "broker_reply": "gilgul.secrets/reply",
    "coven_request": "coven/request",
    "coven_reply": "coven/reply",
}
#: Who a request is for when it is not a component: a person's ``runa secret``.
PERSON = "person"

_NAME = Field("name", "string", "the secret's name", required=True,
              allowed="a lowercase letter, then lowercase letters, digits, '.', '_' or '-'; "
                      "at most 64 characters")
_FOR = Field("for", "string", "who gilgul identified as the requester (a component, or "
             "'person' for `runa secret`), with its pid", required=True)
#: How many random bytes ``create`` makes: enough for a key, few enough for any envelope.
CREATE_SIZE = 32
CREATE_MIN, CREATE_MAX = 16, 4096
_SIZE = Field("size", "integer", "how many random bytes a created secret has",
              default=str(CREATE_SIZE), allowed=f"{CREATE_MIN} to {CREATE_MAX}")


def size_problem(size: int) -> str | None:
    """What is wrong with ``size`` as ``create``'s (a sentence naming the field), or None."""
    if CREATE_MIN <= size <= CREATE_MAX:
        return None
    return (f"'size' must be {CREATE_MIN} to {CREATE_MAX} bytes (a created secret is a key), "
            f"not {size}")
_PID = Field("pid", "integer", "the requester's pid as the kernel named it", required=True)


def _ops(service: str, extra: tuple[Field, ...]) -> Mapping[str, Op]:
    return {op.name: op for op in (
        Op(service, "get", "a secret's value (the sealed frame's value bytes)",
           (_NAME, *extra)),
        Op(service, "set", "store a secret (the value: the sealed frame's value bytes, "
           "1 to 65536 bytes); a person only", (_NAME, *extra)),
        Op(service, "create", "a secret's value (the sealed frame's value bytes), made of "
           "'size' random bytes by coven if the secret does not exist yet; a component may "
           "create the names it may read, so it needs no person to make its own keys",
           (_NAME, _SIZE, *extra), checks={"size": size_problem}),
        Op(service, "rm", "remove a secret; a person only", (_NAME, *extra)),
        Op(service, "list", "the names the requester may read, with size and last change",
           extra),
        Op(service, "rotate", "re-encrypt the vault under a new key; a person only", extra),
        Op(service, "unlock", "unlock a passphrase vault (the passphrase: the sealed "
           "frame's value bytes); a person only", extra),
        Op(service, "lock", "forget the vault's key until the next unlock; a person only",
           extra),
        Op(service, "status", "locked or unlocked, the key mode, the key id, the Argon2id "
           "parameters, the number of secrets when unlocked", extra),
    )}


#: What a requester sends gilgul (queue ``gilgul.secrets``).
BROKER_OPS: Mapping[str, Op] = _ops(BROKER, ())
#: What gilgul sends coven (queue ``coven``): the same, plus whom it is for.
COVEN_OPS: Mapping[str, Op] = _ops(COVEN, (_FOR, _PID))
