"""alethia: Runa's permanent memory — every turn encrypted at rest, hash-chained, signed by day.

``store`` is the library (files, keys, chain, signatures; no bus); ``daemon`` serves it on the
``alethia`` bus (``runa.protocol.memory``). docs/alethia.md is the format and its guarantees.
"""
