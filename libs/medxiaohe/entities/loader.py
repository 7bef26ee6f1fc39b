"""Load (or, in embedded mode, build) the tree in the background, and the NER model when one
is configured; readiness says when everything is in."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from medxiaohe.common.errors import NotFound, NotReady
from medxiaohe.entities.hybrid import HybridTagger, Linker
from medxiaohe.entities.ner import NerTagger
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import PREFIX, EntityTree
from medxiaohe.storage import ArtifactStore

log = logging.getLogger(__name__)


class TaggerLoader:
    """Starts loading on construction; ``tagger`` raises NotReady until it has finished. With
    ``ner`` (a function that loads the model) the tagger is hybrid, and NER-only spans are
    linked by name embedding too (the node-name vectors are computed once per tree version
    and kept in the store)."""

    def __init__(
        self,
        store: ArtifactStore,
        version: str | None = None,
        *,
        build_if_missing: bool = False,
        retry_s: float = 5.0,
        ner: Callable[[], NerTagger] | None = None,
    ) -> None:
        self._store = store
        self._version = version
        self._build = build_if_missing
        self._ner = ner
        self._tagger: DictionaryTagger | HybridTagger | None = None
        self._error = ""
        self._retry_s = retry_s
        threading.Thread(target=self._keep_loading, name="met-loader", daemon=True).start()

    def _keep_loading(self) -> None:
        """Until it succeeds: the store may be down, or the tree not published yet."""
        while not self._load():
            time.sleep(self._retry_s)

    def _load(self) -> bool:
        try:
            try:
                tree = EntityTree.load(self._store, PREFIX, self._version)
            except NotFound:
                if not self._build:
                    raise
                from medxiaohe.entities.build import build_tree

                log.info("building the entity tree", extra={"event": "met_build"})
                tree = build_tree()
                tree.save(self._store)
            dictionary = DictionaryTagger(tree)
            log.info("entity tree loaded", extra={"version": tree.version, "count": len(tree)})
            if self._ner is None:
                self._tagger = dictionary
                return True
            from medxiaohe.evidence.retrievers import embed

            ner = self._ner()
            linker = Linker(dictionary, embed, store=self._store)
            for label in ner.types:
                linker.prepare(label)
            self._tagger = HybridTagger(dictionary, ner, linker)
            log.info("NER model loaded", extra={"component": "ner"})
            return True
        except Exception as exc:  # reported through readiness; retried
            self._error = str(exc) if isinstance(exc, NotFound) else type(exc).__name__
            log.warning("tagger not loaded", extra={"reason": self._error})
            return False

    @property
    def tagger(self) -> DictionaryTagger | HybridTagger:
        if self._tagger is None:
            raise NotReady(f"tagger not loaded: {self._error or 'loading'}")
        return self._tagger

    @property
    def dictionary(self) -> DictionaryTagger:
        """The dictionary tagger alone: bulk corpus ingestion tags with it, for throughput."""
        tagger = self.tagger
        return tagger.dictionary if isinstance(tagger, HybridTagger) else tagger

    @property
    def ready(self) -> bool:
        return self._tagger is not None

    def check(self) -> None:
        """Readiness check for the health service."""
        _ = self.tagger

    def tag(self, text: str) -> list[Any]:
        """The dictionary tagger's mentions (NotReady until the tree is in): a loader serves
        where a tagger is expected, e.g. by the rubric grader."""
        return self.dictionary.tag(text)
