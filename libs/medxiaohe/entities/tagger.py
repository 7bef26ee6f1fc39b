"""Dictionary tagging: one Aho-Corasick pass over normalized text, token boundaries, longest
match, each mention linked to its node ids and its path to the root, then ConText."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import ahocorasick

from medxiaohe.entities.abbreviations import defined_abbreviations, occurrences
from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.entities.normalize import normalize_text
from medxiaohe.entities.tree import EntityTree

_RUNS = re.compile(r"  +")


@dataclass(frozen=True)
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


def _collapse_spaces(norm: str) -> tuple[str, Callable[[int], int]]:
    """``norm`` with runs of spaces shortened to one ("type - 2" reads "type 2"), and a map
    from positions in the result back to positions in ``norm``."""
    runs = list(_RUNS.finditer(norm))
    if not runs:
        return norm, lambda i: i
    pieces, kept_at, resumes_at = [], [], []
    previous = collapsed = 0
    for run in runs:
        piece = norm[previous : run.start() + 1]
        pieces.append(piece)
        collapsed += len(piece)
        previous = run.end()
        kept_at.append(collapsed)
        resumes_at.append(previous)
    pieces.append(norm[previous:])

    def to_norm(i: int) -> int:
        k = bisect_right(kept_at, i) - 1
        return i if k < 0 else resumes_at[k] + i - kept_at[k]

    return "".join(pieces), to_norm


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
        norm, to_original = _collapse_spaces(" " + normalize_text(text))
        last = len(norm) - 1
        found = []
        for end, (length, nodes) in self._automaton.iter(norm):
            if end == last or norm[end + 1] == " ":
                # positions in norm are one past those in text (the leading space)
                first = to_original(end - length + 2) - 1
                found.append((first, to_original(end), nodes))
        return _leftmost_longest(found)

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
        for (start, end, candidates), state in zip(picked, states, strict=True):
            best = candidates[0]
            mentions.append(
                Mention(
                    start=start,
                    end=end,
                    text=text[start:end],
                    node_id=tree.ids[best],
                    node_ids=tuple(tree.ids[n] for n in candidates),
                    path=tuple(tree.ids[i] for i in tree.path_indices(best)),
                    entity_type=self._types[best],
                    assertion=state,
                )
            )
        return mentions
