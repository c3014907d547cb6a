"""Tier 2 as whisper keeps it: one loaded embedder and classifier, the matrix's exemplars
re-read when the matrix files change.

Used by whisper's daemon and by ``runa policy check`` when no stack runs, so both judge
with the same model, weights and exemplars the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from runa import log
from runa.config import Config
from runa.errors import RunaError
from runa.models import Embedder, configured_embedder
from runa.paths import Paths
from runa.policy import Matrix, PolicyLibrary
from runa.policy.tier2 import Classifier, Judgement, SemanticTier, packaged_weights


def weights_path(config: Config) -> Path:
    """The classifier file ``whisper.weights`` names (empty: the packaged one)."""
    configured = config["whisper.weights"]
    return Path(configured).expanduser() if configured else packaged_weights()


def load_embedder(config: Config, paths: Paths) -> Embedder:
    """The configured embedding model (ModelNotFoundError or EmbedderError saying what to do)."""
    return configured_embedder(config, paths.models, "whisper")


class Tier2:
    """The semantic tier with its model loaded once; exemplars follow the matrix files."""

    def __init__(self, embedder: Embedder, classifier: Classifier, library: PolicyLibrary,
                 logger: logging.Logger, *, exemplar_cutoff: float | None = None) -> None:
        self.embedder = embedder
        self.classifier = classifier
        self.library = library
        self.logger = logger
        self.exemplar_cutoff = exemplar_cutoff
        self._matrix: Matrix | None = None
        self._tier: SemanticTier | None = None

    @classmethod
    def load(cls, config: Config, paths: Paths, library: PolicyLibrary,
             logger: logging.Logger,
             embedder_factory: Callable[[], Embedder] | None = None) -> Tier2:
        """The configured tier (RunaError naming what is missing: model, weights)."""
        classifier = Classifier.load(weights_path(config))
        embedder = embedder_factory() if embedder_factory else load_embedder(config, paths)
        return cls(embedder, classifier, library, logger,
                   exemplar_cutoff=config["whisper.exemplar_cutoff"] or None)

    def tier(self) -> SemanticTier:
        """The tier with the matrix's current exemplars (embedded again after a change)."""
        matrix = self.library.matrix()
        if self._tier is None or matrix is not self._matrix:
            self._tier = SemanticTier(self.embedder, self.classifier, matrix.motifs,
                                      exemplar_cutoff=self.exemplar_cutoff)
            if self._matrix is not None:
                log.event(self.logger, "tier2_exemplars", "matrix changed: "
                          f"{len(self._tier.exemplars)} exemplars embedded again",
                          exemplars=len(self._tier.exemplars))
            self._matrix = matrix
        return self._tier

    def judge(self, text: str, side: str) -> Judgement:
        return self.tier().judge(text, side)

    @property
    def exemplars(self) -> int:
        return len(self._tier.exemplars) if self._tier is not None else 0

    def close(self) -> None:
        close = getattr(self.embedder, "close", None)
        if close is not None:
            close()


def unavailable_reason(error: RunaError) -> str:
    """One line saying why tier 2 cannot run (for status, the log and notices)."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__
