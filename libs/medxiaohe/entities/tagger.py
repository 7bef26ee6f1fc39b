"""Dictionary tagging: one Aho-Corasick pass over normalized text, token boundaries, longest
match, each mention linked to its node ids and its path to the root, then ConText."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

import ahocorasick

from medxiaohe.common import cancel
from medxiaohe.common.cancel import CHECK_EVERY
from medxiaohe.entities.abbreviations import defined_abbreviations, occurrences
from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.entities.normalize import normalize_text
from medxiaohe.entities.tree import EntityTree

_SPACED_HYPHEN = re.compile(r"(?<=\w)\s*[-/']\s*(?=\w)")


@dataclass(slots=True)
class Mention:
    start: int
    end: int
    text: str
    node_id: str
    node_ids: tuple[str, ...]  # every candidate, best first
    path: tuple[str, ...]
    entity_type: str
    assertion: Assertion = Assertion.PRESENT
    tagger: str = "dictionary"
    confidence: float = 1.0


def _leftmost_longest(
    matches: list[tuple[int, int, tuple[int, ...]]],
) -> list[tuple[int, int, tuple[int, ...]]]:
    matches.sort(key=lambda m: (m[0], m[0] - m[1]))
    chosen = []
    covered = 0
    for start, end, nodes in matches:
        if start >= covered:
            chosen.append((start, end, nodes))
            covered = end
    return chosen


def _join_hyphenated(text: str, norm: str) -> tuple[str, Callable[[int], int]]:
    """``norm`` with a spaced hyphen or slash read as one space ("Tay - Sachs" reads
    "tay sachs"), and a map from positions in the result back to positions in ``norm``.
    Other runs of spaces stay: a match never crosses ", " or ". "."""
    if not (
        " -" in text or "- " in text or " /" in text or "/ " in text or " '" in text or "' " in text
    ):
        return norm, _identity
    runs = [m for m in _SPACED_HYPHEN.finditer(text) if m.end() - m.start() > 1]
    if not runs:
        return norm, _identity
    pieces, kept_at, resumes_at = [], [], []
    previous = collapsed = 0
    for run in runs:  # positions in norm are one past those in text (its leading space)
        piece = norm[previous : run.start() + 2]
        pieces.append(piece)
        collapsed += len(piece)
        previous = run.end() + 1
        kept_at.append(collapsed)
        resumes_at.append(previous)
    pieces.append(norm[previous:])

    def to_norm(i: int) -> int:
        k = bisect_right(kept_at, i) - 1
        return i if k < 0 else resumes_at[k] + i - kept_at[k]

    return "".join(pieces), to_norm


def _identity(i: int) -> int:
    return i


class DictionaryTagger:
    """Matches every surface form of the tree. Build once per tree (about a second), then tag."""

    def __init__(self, tree: EntityTree) -> None:
        self.tree = tree
        automaton = ahocorasick.Automaton()
        for form, nodes in tree.forms.items():
            # a leading space makes every match start at a token boundary
            automaton.add_word(" " + form, (len(form) + 1, nodes))
        automaton.make_automaton()
        self._automaton = automaton
        self._types = tree.columns["type"]
        self._paths: dict[int, tuple[str, ...]] = {}

    @cached_property
    def types(self) -> frozenset[str]:
        """Entity types its mentions can have (once: a set over every node of the tree was
        most of a TagEntities call's CPU)."""
        return frozenset(self._types)

    def path(self, index: int) -> tuple[str, ...]:
        path = self._paths.get(index)
        if path is None:
            path = tuple(self.tree.ids[i] for i in self.tree.path_indices(index))
            self._paths[index] = path
        return path

    def spans(self, text: str) -> list[tuple[int, int, tuple[int, ...]]]:
        """Leftmost-longest (start, end, node indices) matches on token boundaries, including
        later uses of abbreviations that the text defines."""
        found = self._dictionary_spans(text)
        defined = defined_abbreviations(text, [(s, e) for s, e, _ in found])
        if not defined:
            return found
        extra = [
            (start, end, found[index][2])
            for short, index in defined.items()
            for start, end in occurrences(text, short)
        ]
        return _leftmost_longest(found + extra)

    def _dictionary_spans(self, text: str) -> list[tuple[int, int, tuple[int, ...]]]:
        norm, to_original = _join_hyphenated(text, " " + normalize_text(text))
        if to_original is _identity:  # positions in norm are one past those in text
            return self._scan(norm)
        return [
            (to_original(start + 1) - 1, to_original(end), nodes)
            for start, end, nodes in self._scan(norm)
        ]

    def _scan(self, norm: str) -> list[tuple[int, int, tuple[int, ...]]]:
        """Leftmost-longest keys that end on a token boundary, in one C pass (iter_long);
        where the longest key runs into a longer word ("fever" in "feverish"), the longest
        shorter key that ends on a boundary is taken instead and the pass resumes after it."""
        automaton, last = self._automaton, len(norm) - 1
        found: list[tuple[int, int, tuple[int, ...]]] = []
        position = 0
        while True:
            cancel.check()  # a long note restarts the pass many times
            for end, (length, nodes) in automaton.iter_long(norm, position):
                start = end - length + 1
                if end == last or norm[end + 1] == " ":
                    found.append((start, end, nodes))
                    continue
                stop = norm.find(" ", end + 1)
                shorter = [
                    (e, value)
                    for e, value in automaton.iter(norm, start, last + 1 if stop < 0 else stop)
                    if e - value[0] + 1 == start and (e == last or norm[e + 1] == " ")
                ]
                if shorter:
                    e, (_, best_nodes) = max(shorter, key=lambda m: m[1][0])
                    found.append((start, e, best_nodes))
                    position = e + 1
                else:
                    position = start + 1
                break
            else:
                return found

    def tag(
        self, text: str, types: Iterable[str] | None = None, *, assertions: bool = True
    ) -> list[Mention]:
        wanted = set(types) if types else None
        tree = self.tree
        picked = []
        for start, end, nodes in self.spans(text):
            candidates = [n for n in nodes if wanted is None or self._types[n] in wanted]
            if candidates:
                picked.append((start, end, candidates))
        states = (
            assert_spans(text, [(s, e) for s, e, _ in picked])
            if assertions
            else [Assertion.PRESENT] * len(picked)
        )
        mentions = []
        for i, ((start, end, candidates), state) in enumerate(zip(picked, states, strict=True)):
            if i % CHECK_EVERY == 0:
                cancel.check()
            best = candidates[0]
            mentions.append(
                Mention(
                    start=start,
                    end=end,
                    text=text[start:end],
                    node_id=tree.ids[best],
                    node_ids=tuple(tree.ids[n] for n in candidates),
                    path=self.path(best),
                    entity_type=self._types[best],
                    assertion=state,
                )
            )
        return mentions
