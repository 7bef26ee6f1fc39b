"""The hybrid tagger: NER spans and dictionary matches merged, every NER span linked to the
Medical Entity Tree where it can be.

Merge (``MERGES``), NER spans always win where they overlap a dictionary match:
  * ``ner+dictionary`` (the default): plus every dictionary match that overlaps no NER span;
  * ``ner``: plus only dictionary matches of tree types the model does not cover (phenotypes,
    injuries, health factors): the model alone decides on diseases and chemicals.
Disease F1 on the devel splits (NCBI-disease / BC5CDR), default 5-epoch model: NER alone
0.823 / 0.766, ``ner+dictionary`` 0.820 / 0.764, ``ner`` 0.819 / 0.764. The corpora do not
annotate symptoms, so any phenotype match costs precision there; ``ner+dictionary`` keeps them
(clinical notes are full of them) and scored best of the two merges on both splits.

Linking a NER span: a dictionary match with the same boundaries gives its nodes; else the
span's normalized string looked up among the tree's surface forms; else the nearest node name
by MiniLM embedding, when its cosine similarity reaches ``threshold``; else it stays unlinked
with its type."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from functools import cached_property

import numpy as np

from medxiaohe.common import npy
from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.entities.ner import NerSpan, NerTagger
from medxiaohe.entities.normalize import normalize_text
from medxiaohe.entities.tagger import DictionaryTagger, Mention
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import ArtifactStore, publish, read_file, resolve

log = logging.getLogger(__name__)

MERGES = ("ner", "ner+dictionary")
# Tree node types a NER label may link to.
LINKABLE = {"Disease": ("disease", "phenotype"), "Chemical": ("chemical", "drug")}
# Tree node types whose dictionary matches a NER label replaces under the "ner" merge. Phenotypes
# (symptoms, signs) are not among them: the NER corpora do not annotate them.
COVERED = {"Disease": ("disease",), "Chemical": ("chemical", "drug")}
EMBEDDINGS_PREFIX = "met/name-embeddings"

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalized rows


class Linker:
    """NER span -> tree node indices, best first (empty when unlinked)."""

    def __init__(
        self,
        dictionary: DictionaryTagger,
        embed: Embed | None = None,
        *,
        store: ArtifactStore | None = None,
        threshold: float = 0.8,
    ) -> None:
        self.dictionary = dictionary
        self.tree = dictionary.tree
        self.embed = embed
        self.store = store
        self.threshold = threshold
        self._names: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # label -> (indices, vectors)

    def link(self, text: str, label: str) -> tuple[int, ...]:
        allowed = set(LINKABLE.get(label, ()))
        types = self.tree.columns["type"]
        exact = self.tree.forms.get(" ".join(normalize_text(text).split()), ())
        nodes = tuple(n for n in exact if types[n] in allowed)
        if nodes or self.embed is None or not allowed:
            return nodes
        indices, vectors = self._name_vectors(label)
        if not len(indices):
            return ()
        scores = vectors @ self.embed([text])[0]
        best = int(np.argmax(scores))
        return (int(indices[best]),) if scores[best] >= self.threshold else ()

    def prepare(self, label: str) -> None:
        """Compute (or load) the name vectors for a label now rather than on first use."""
        if self.embed is not None and label in LINKABLE:
            self._name_vectors(label)

    def _name_vectors(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the preferred names of the nodes a label links to, cached in the
        store per tree version (computing them takes a minute or two on CPU)."""
        if label in self._names:
            return self._names[label]
        assert self.embed is not None
        allowed = set(LINKABLE[label])
        indices = np.array(
            [i for i, t in enumerate(self.tree.columns["type"]) if t in allowed], dtype=np.int64
        )
        prefix = f"{EMBEDDINGS_PREFIX}/{label.lower()}"
        vectors = None
        if self.store is not None:
            try:
                manifest = resolve(self.store, prefix, self.tree.version)
                vectors = npy.load(read_file(self.store, manifest, "names.npy"))
            except NotFound:
                pass
        if vectors is None or len(vectors) != len(indices):
            names = [self.tree.columns["name"][i] for i in indices]
            log.info("embedding node names", extra={"count": len(names), "key": prefix})
            vectors = self.embed(names).astype(np.float16) if names else np.zeros((0, 1))
            if self.store is not None and len(names):
                buffer = io.BytesIO()
                np.save(buffer, vectors, allow_pickle=False)
                publish(
                    self.store, prefix, {"names.npy": buffer.getvalue()}, version=self.tree.version
                )
        self._names[label] = (indices, vectors.astype(np.float32))
        return self._names[label]


class HybridTagger:
    def __init__(
        self,
        dictionary: DictionaryTagger,
        ner: NerTagger,
        linker: Linker | None = None,
        merge: str = "ner+dictionary",
    ) -> None:
        if merge not in MERGES:
            raise InvalidInput(f"unknown merge {merge!r}; one of {MERGES}")
        self.dictionary = dictionary
        self.ner = ner
        self.linker = linker
        self.merge = merge
        # dictionary matches of these tree types are the model's business
        self._covered = {t for label in ner.types for t in COVERED.get(label, ())}

    @property
    def tree(self) -> EntityTree:
        return self.dictionary.tree

    @cached_property
    def types(self) -> frozenset[str]:
        """Entity types its mentions can have."""
        return self.dictionary.types | {label.lower() for label in self.ner.types}

    def tag(
        self, text: str, types: Iterable[str] | None = None, *, assertions: bool = True
    ) -> list[Mention]:
        return self.tag_many([text], types, assertions=assertions)[0]

    def tag_many(
        self, texts: Sequence[str], types: Iterable[str] | None = None, *, assertions: bool = True
    ) -> list[list[Mention]]:
        wanted = set(types) if types else None
        results = []
        for text, spans in zip(texts, self.ner.tag_many(texts), strict=True):
            found = self.dictionary.tag(text, assertions=False)
            mentions = self._merge(text, spans, found)
            if wanted is not None:
                mentions = [m for m in mentions if m.entity_type in wanted]
            if assertions:
                states = assert_spans(text, [(m.start, m.end) for m in mentions])
                for mention, state in zip(mentions, states, strict=True):
                    mention.assertion = state
            results.append(mentions)
        return results

    def _merge(self, text: str, spans: list[NerSpan], found: list[Mention]) -> list[Mention]:
        by_bounds = {(m.start, m.end): m for m in found}
        mentions = [
            self._from_ner(text, span, by_bounds.get((span.start, span.end))) for span in spans
        ]
        taken = [(s.start, s.end) for s in spans]
        for m in found:
            if any(m.start < e and s < m.end for s, e in taken):
                continue
            if self.merge == "ner" and m.entity_type in self._covered:
                continue
            mentions.append(m)
        mentions.sort(key=lambda m: m.start)
        return mentions

    def _from_ner(self, text: str, span: NerSpan, same: Mention | None) -> Mention:
        surface = text[span.start : span.end]
        kind = span.label.lower()
        if same is not None and same.entity_type in LINKABLE.get(span.label, ()):
            nodes: tuple[int, ...] = tuple(self.dictionary.tree.index[n] for n in same.node_ids)
        elif self.linker is not None:
            nodes = self.linker.link(surface, span.label)
        else:
            nodes = ()
        ids = self.dictionary.tree.ids
        return Mention(
            start=span.start,
            end=span.end,
            text=surface,
            node_id=ids[nodes[0]] if nodes else "",
            node_ids=tuple(ids[n] for n in nodes),
            path=self.dictionary.path(nodes[0]) if nodes else (),
            entity_type=kind,
            assertion=Assertion.PRESENT,
            tagger="ner",
            confidence=span.confidence,
        )
