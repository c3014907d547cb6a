"""Types of the C Hamming scan built from ``_popcount.c`` (type checkers do not read the .so)."""

from _typeshed import ReadableBuffer, WriteableBuffer

def hamming(codes: ReadableBuffer, query: ReadableBuffer, out: WriteableBuffer, /) -> None:
    """out[i] = popcount(codes[i] XOR query), one uint16 a row; codes are uint64 rows."""
