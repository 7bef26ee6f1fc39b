"""Benchmark overlap: which benchmark items a training text copies. An item is found by any
normalised 13-gram (lower-case alphanumeric words) of its question, options and answer, or by
an exact match of its whole question. The items' n-grams are indexed once; a batch of texts is
then hashed window by window in numpy (a rolling polynomial hash over word ids) and only the
hash hits are compared word for word."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

WORD = re.compile(r"[a-z0-9]+")
BASE = np.uint64(1_000_003)
N = 13
FILTER_BITS = 24  # a 16 MiB table of hash bits screens windows before the sorted lookup


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class BenchmarkIndex:
    """``add`` every benchmark item, then ``find`` the items each text overlaps."""

    def __init__(self, n: int = N) -> None:
        self.n = n
        self.vocabulary: dict[str, int] = {}  # id 0: a word no item has
        self.grams: dict[tuple[int, ...], set[str]] = {}
        self.questions: dict[str, set[str]] = {}
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._filter = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len({ref for refs in self.grams.values() for ref in refs})

    def add(self, ref: str, text: str, question: str = "") -> None:
        """Index one item by its reference (``suite/id``); ``question`` adds an exact match."""
        ids = [self.vocabulary.setdefault(w, len(self.vocabulary) + 1) for w in words(text)]
        for i in range(len(ids) - self.n + 1):
            self.grams.setdefault(tuple(ids[i : i + self.n]), set()).add(ref)
        if question and words(question):
            self.questions.setdefault(" ".join(words(question)), set()).add(ref)
        self._hashes = np.zeros(0, dtype=np.uint64)  # rebuilt on the next find

    def _window_hashes(self, ids: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            hashes = np.zeros(len(ids) - self.n + 1, dtype=np.uint64)
            for j in range(self.n):
                hashes = hashes * BASE + ids[j : len(ids) - self.n + 1 + j]
        return hashes

    def find(self, texts: Sequence[Sequence[str]]) -> list[set[str]]:
        """For each record (its texts, e.g. a chat's turns), the items it overlaps."""
        mask = np.uint64((1 << FILTER_BITS) - 1)
        if not len(self._hashes) and self.grams:
            keys = np.array(list(self.grams), dtype=np.uint64)
            self._hashes = np.unique(self._window_hashes(keys.ravel())[:: self.n])
            self._filter = np.zeros(1 << FILTER_BITS, dtype=bool)
            self._filter[self._hashes & mask] = True
        found: list[set[str]] = [set() for _ in texts]
        ids: list[int] = []
        owner: list[int] = []
        get = self.vocabulary.get
        for index, parts in enumerate(texts):
            for part in parts:
                said = words(part)
                refs = self.questions.get(" ".join(said))
                if refs:
                    found[index] |= refs
                ids.extend(map(get, said, repeat(0)))
                ids.append(0)  # no n-gram spans two texts
                owner.extend([index] * (len(said) + 1))
        if len(ids) >= self.n and len(self._hashes):
            hashes = self._window_hashes(np.asarray(ids, dtype=np.uint64))
            maybe = np.flatnonzero(self._filter[hashes & mask])
            at = np.minimum(np.searchsorted(self._hashes, hashes[maybe]), len(self._hashes) - 1)
            hits = maybe[self._hashes[at] == hashes[maybe]]
            for start in hits.tolist():
                refs = self.grams.get(tuple(ids[start : start + self.n]))
                if refs:
                    found[owner[start]] |= refs
        return found


def first_overlap(refs: Iterable[str]) -> str:
    """The reason a record is dropped, naming one item it copies (no text of the record)."""
    ordered = sorted(refs)
    more = f" and {len(ordered) - 1} more" if len(ordered) > 1 else ""
    return f"overlaps benchmark item {ordered[0]}{more}"
