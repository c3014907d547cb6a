"""whisper's settings, the [whisper] section: tokenWhisper's semantic tier as a service
(docs/whisper.md)."""

from __future__ import annotations

from runa.config import Setting, in_range

SETTINGS: tuple[Setting, ...] = (
    Setting("whisper.embedding_model", str, "default",
            "The embedding model tier 2 reads texts with: a catalog name, a file in a models "
            "directory, or a path (the classifier was fitted on the default one)."),
    Setting("whisper.threads", int, 1,
            "Threads for embedding (-1: one per usable CPU); one leaves the other cores to "
            "generation.", in_range(-1, 1024)),
    Setting("whisper.weights", str, "",
            "The classifier's weights file (empty: the packaged runa/data/policy/tier2.npz)."),
    Setting("whisper.exemplar_cutoff", float, 0.0,
            "Cosine similarity at which a window is a hit of a matrix exemplar (0: the one "
            "tuned with the classifier, in its weights file).", in_range(0.0, 1.0)),
    Setting("whisper.niceness", int, 10,
            "How much whisper lowers its own CPU priority at start (os.nice), so its windows "
            "wait for generation on a busy machine (0: not at all).", in_range(0, 19)),
)

#: The unit's limits ([components.whisper]): the embedding model (all-MiniLM-L6-v2, f32,
#: about 90 MB), llama.cpp's small context, numpy and Python fit well under 384M; one core's
#: worth of CPU, as it embeds on one thread.
RESOURCES = {"cpu_quota": "100%", "memory_max": "384M"}
