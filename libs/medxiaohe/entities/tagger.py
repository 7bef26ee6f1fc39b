"""Dictionary tagging: one Aho-Corasick pass over normalized text, token boundaries, longest
match, each mention linked to its node ids and its path to the root, then ConText."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick

from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.entities.normalize import normalize_text
from medxiaohe.entities.tree import EntityTree


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
        """Leftmost-longest (start, end, node indices) matches on token boundaries."""
        norm = " " + normalize_text(text)
        last = len(norm) - 1
        found = []
        for end, (length, nodes) in self._automaton.iter(norm):
            if end == last or norm[end + 1] == " ":
                found.append((end - length + 1, end, nodes))
        found.sort(key=lambda m: (m[0], m[0] - m[1]))
        chosen = []
        covered = 0
        for start, end, nodes in found:
            if start >= covered:
                chosen.append((start, end, nodes))
                covered = end
        return chosen

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
