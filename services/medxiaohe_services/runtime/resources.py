"""What the services of one process load once and share: the entity tree and its tagger, the
evidence indexes, the query encoder, the in-process model. ``medxiaohe up`` runs the four
services over one ``Resources``; a pod running one service has one of its own.

Everything that loads in the background is a ``Loader``: nothing starts in a constructor. The
platform starts the loaders its services use when it starts, and stops them when it stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from medxiaohe.common.errors import NotFound, NotReady
from medxiaohe.common.settings import Settings
from medxiaohe.entities.hybrid import HybridTagger, Linker
from medxiaohe.entities.ner import NerTagger
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import PREFIX, EntityTree
from medxiaohe.evidence.registry import IndexRegistry
from medxiaohe.models.chat import ChatModel
from medxiaohe.models.client import LocalModelClient
from medxiaohe.storage import ArtifactStore

log = logging.getLogger(__name__)


class Lifecycle(Protocol):
    """What the platform starts with itself and stops on shutdown."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Loader:
    """Loads something in a background thread once ``start`` is called, retrying until it
    succeeds or ``stop`` is called: after ``retry_s``, then twice as long each time up to
    ``max_retry_s`` (default: ``retry_s``, a steady pace). ``check`` raises NotReady until it
    is in, with the last failure's reason."""

    what = "resource"

    def __init__(self, retry_s: float = 5.0, max_retry_s: float | None = None) -> None:
        self.retry_s = retry_s
        self.max_retry_s = retry_s if max_retry_s is None else max_retry_s
        self.error = ""
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load, or raise; tried again after each of ``delays`` while it raises."""
        raise NotImplementedError

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"{self.what}-loader", daemon=True
                )
                self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """No more retries; waits up to ``timeout`` for a load in progress to end."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def delays(self) -> Iterator[float]:
        """The waits between tries: ``retry_s``, doubled each time up to ``max_retry_s``."""
        wait = self.retry_s
        while True:
            yield wait
            wait = min(wait * 2, self.max_retry_s)

    def _run(self) -> None:
        delays = self.delays()
        while not self._stopping.is_set():
            try:
                self.load()
            except Exception as exc:  # reported through readiness; retried
                reason = str(exc) if isinstance(exc, NotFound) else type(exc).__name__
                if reason != self.error:  # once per reason, not once per retry
                    log.warning("not loaded", extra={"component": self.what, "reason": reason})
                self.error = reason
                self._stopping.wait(next(delays))
            else:
                self.error = ""
                self._ready.set()
                return

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def running(self) -> bool:
        """Whether its thread is loading (or waiting to retry) now."""
        return self._thread is not None and self._thread.is_alive()

    def check(self) -> None:
        """Readiness check for the health service."""
        if not self.ready:
            raise NotReady(f"{self.what} not loaded: {self.error or 'loading'}")


class TaggerLoader(Loader):
    """The entity tree (built when missing, in embedded mode) and its dictionary tagger; with
    ``ner`` (a function that loads the model) a hybrid tagger too, whose NER-only spans are
    linked by name embedding (node-name vectors computed once per tree version, kept in the
    store)."""

    what = "tagger"

    def __init__(
        self,
        store: ArtifactStore,
        version: str | None = None,
        *,
        build_if_missing: bool = False,
        retry_s: float = 5.0,
        ner: Callable[[], NerTagger] | None = None,
    ) -> None:
        super().__init__(retry_s)
        self._store = store
        self._version = version
        self._build = build_if_missing
        self._ner = ner
        self._tagger: DictionaryTagger | HybridTagger | None = None

    def load(self) -> None:
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
            return
        from medxiaohe.evidence.retrievers import embed

        ner = self._ner()
        linker = Linker(dictionary, embed, store=self._store)
        for label in ner.types:
            linker.prepare(label)
        self._tagger = HybridTagger(dictionary, ner, linker)
        log.info("NER model loaded", extra={"component": "ner"})

    @property
    def tagger(self) -> DictionaryTagger | HybridTagger:
        """The hybrid tagger when an NER model is configured, else the dictionary tagger."""
        if self._tagger is None:
            self.check()
        assert self._tagger is not None
        return self._tagger

    @property
    def dictionary(self) -> DictionaryTagger:
        """The dictionary tagger alone: bulk ingestion, evidence, reports and the rubric rules
        tag with it."""
        tagger = self.tagger
        return tagger.dictionary if isinstance(tagger, HybridTagger) else tagger

    def tag(self, text: str) -> list[Any]:
        """The dictionary tagger's mentions (NotReady until the tree is in): a loader serves
        where a tagger is expected, e.g. by the rubric grader."""
        return self.dictionary.tag(text)


class EncoderLoader(Loader):
    """The query encoder (all-MiniLM-L6-v2, cached by the library once per process)."""

    what = "query encoder"

    def load(self) -> None:
        from medxiaohe.evidence.retrievers import encoder

        encoder()


class LocalModel(Loader, LocalModelClient):
    """A model folder loaded in this process; until it is in, calls raise NotReady. Stopping
    it stops its batching thread."""

    what = "in-process model"

    def __init__(self, uri: str, settings: Settings) -> None:
        # a passing failure (the store not reachable yet; another thread importing
        # transformers at the same moment) must not leave the service down for good, and
        # weights that keep failing are tried ever more rarely: up to every 5 minutes
        Loader.__init__(self, retry_s=5.0, max_retry_s=300.0)
        self.uri = uri
        self.version = ""
        self._settings = settings
        self._loaded: ChatModel | None = None

    def load(self) -> None:
        from medxiaohe.models.folders import model_folder
        from medxiaohe.models.vlm import load_vlm

        folder = model_folder(self.uri, self._settings)
        self._loaded = ChatModel(load_vlm(folder))
        self.version = folder.name
        log.info("model loaded", extra={"component": "model", "version": self.version})

    @property
    def model(self) -> ChatModel:
        if self._loaded is None:
            self.check()
        assert self._loaded is not None
        return self._loaded

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._loaded is not None:
            self._loaded.stop()


class Resources:
    """One process's shared resources, each made on first use and shared after that. Each
    service names the loaders it uses in its spec; the platform starts and stops them."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self._tagging: TaggerLoader | None = None
        self._encoder: EncoderLoader | None = None
        self._indexes: IndexRegistry | None = None
        self._models: dict[str, LocalModel] = {}
        self._lock = threading.Lock()

    @property
    def tagging(self) -> TaggerLoader:
        """The tree and tagger: NER joins the dictionary when MEDXIAOHE_NER_MODEL_URI is set."""
        with self._lock:
            if self._tagging is None:
                settings, uri = self.settings, self.settings.ner_model_uri
                if uri:
                    from medxiaohe.models.folders import model_folder

                    def ner() -> NerTagger:
                        return NerTagger(model_folder(uri, settings))

                self._tagging = TaggerLoader(
                    self.store,
                    settings.met_version or None,
                    build_if_missing=settings.met_build_if_missing,
                    ner=ner if uri else None,
                )
            return self._tagging

    @property
    def encoder(self) -> EncoderLoader:
        with self._lock:
            if self._encoder is None:
                self._encoder = EncoderLoader()
            return self._encoder

    @property
    def indexes(self) -> IndexRegistry:
        with self._lock:
            if self._indexes is None:
                self._indexes = IndexRegistry(self.store)
            return self._indexes

    def local_model(self, uri: str) -> LocalModel:
        """The one in-process instance of the model at ``uri``."""
        with self._lock:
            if uri not in self._models:
                self._models[uri] = LocalModel(uri, self.settings)
            return self._models[uri]
