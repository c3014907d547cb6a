"""splinfer: llama.cpp inference, many conversations at once, independent of the bus.

``engine.Engine`` loads one model (after ``fit.check_fit`` says it fits) into one
context with several sequences and decodes every running answer in one batch
(``generation`` holds the per-answer loop); ``params`` holds the inference options
under llama.cpp's names; ``prompt`` turns messages into tokens safely and keeps long
conversations inside the context, ``turnplan`` extends a conversation's tokens turn
by turn; ``conversations`` keeps histories and saved model states on disk
(``statefile``, ``storage``, ``modelid``); ``personas`` reads the persona files.
The daemon that puts this on the bus (``daemon``, with ``requests`` and ``stream``)
is the only module that knows about envelopes.
"""

import os

# llama.cpp's OpenMP threads spin while they wait. On a machine that is doing anything else
# that costs far more than it saves (measured here, SmolLM2, a 60-token prompt, 2 threads,
# beside two busy processes: 812 ms spinning, with 2.4 s outliers, vs 644 ms passive; on a
# quiet machine 213 vs 220 ms). Passive unless the person chose otherwise; it only takes
# effect if set before llama_cpp first loads, hence here, ahead of every module importing it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
