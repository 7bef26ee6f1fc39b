"""Load (or, in embedded mode, build) the tree in the background; readiness says when it is in."""

from __future__ import annotations

import logging
import threading
import time

from medxiaohe.common.errors import NotFound, NotReady
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import PREFIX, EntityTree
from medxiaohe.storage import ArtifactStore

log = logging.getLogger(__name__)


class TaggerLoader:
    """Starts loading on construction; ``tagger`` raises NotReady until it has finished."""

    def __init__(
        self,
        store: ArtifactStore,
        version: str | None = None,
        *,
        build_if_missing: bool = False,
        retry_s: float = 5.0,
    ) -> None:
        self._store = store
        self._version = version
        self._build = build_if_missing
        self._tagger: DictionaryTagger | None = None
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
            self._tagger = DictionaryTagger(tree)
            log.info("entity tree loaded", extra={"version": tree.version, "count": len(tree)})
            return True
        except Exception as exc:  # reported through readiness; retried
            self._error = str(exc) if isinstance(exc, NotFound) else type(exc).__name__
            log.warning("entity tree not loaded", extra={"reason": self._error})
            return False

    @property
    def tagger(self) -> DictionaryTagger:
        if self._tagger is None:
            raise NotReady(f"entity tree not loaded: {self._error or 'loading'}")
        return self._tagger

    @property
    def ready(self) -> bool:
        return self._tagger is not None

    def check(self) -> None:
        """Readiness check for the health service."""
        _ = self.tagger
