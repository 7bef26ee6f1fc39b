"""Reading a radiology report as findings: each sentence's observations, devices and normal
statements, each with its assertion (ConText: present, absent, uncertain) and its attributes:
side, location (zone, depth, plane), severity, change and size.

* Concepts come from the radiology vocabulary, and from the Medical Entity Tree tagger when one
  is given (what the vocabulary does not name, by tree node id).
* "<anatomy> is normal / clear / unremarkable" denies the anatomy's group ("abnormal lungs": the
  observations a normal statement about the lungs rules out); "<anatomy> is enlarged" asserts
  the concept the vocabulary names for it (cardiomegaly); coordinated anatomy ("heart and
  mediastinum are normal") shares the statement.
* An attribute word goes to the finding it precedes in its clause ("small left effusion"), else
  to the one it follows ("opacity in the right lower lobe").
* A sentence that names no concept but has words the vocabulary and report language do not
  explain is one ``unknown`` finding of those words: it still states something.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from medxiaohe.entities.context import Assertion, assert_spans
from medxiaohe.radiology.vocabulary import (
    ABNORMAL,
    GROUP,
    OBSERVATION,
    Role,
    Token,
    Vocabulary,
    tokens,
    vocabulary,
)

UNKNOWN = "unknown"
_CLAUSE_END = frozenset({";", ":", "but", "however", "although", "though", "whereas", "except"})
_BARRIER = frozenset({",", "and", "or", "with", "without", "but", "no", "nor", "versus", "vs"})
_BOUNDARY = re.compile(r"[.!?]+(?=\s|[A-Z]|$)|\n+|(?:(?<=\s)|^)\d{1,2}[.)](?=\s)")
_SIDES = {"left": frozenset({"left"}), "right": frozenset({"right"})}
_SIDES["bilateral"] = _SIDES["left"] | _SIDES["right"]
MAX_SENTENCE_CHARS = 2000  # longer "sentences" (no punctuation) are read in pieces this long


@dataclass(frozen=True)
class Finding:
    """One thing a sentence states: ``concept`` (a vocabulary concept, a tree node id, or the
    words of an unknown statement), its assertion, and its attributes (empty: not stated)."""

    concept: str
    kind: str  # observation, device, group (a normal statement's), unknown
    assertion: str  # present, absent, uncertain
    start: int  # offsets of the mention in the text read
    end: int
    attributes: dict[str, frozenset[str]] = field(default_factory=dict, hash=False)
    size_mm: float | None = None
    words: tuple[str, ...] = ()  # an unknown finding's words
    anatomy: str = ""  # the anatomy it was said of ("the heart is enlarged": heart)

    @property
    def positive(self) -> bool:
        return self.assertion != "absent"

    def get(self, axis: str) -> frozenset[str]:
        return self.attributes.get(axis, frozenset())

    def describe(self) -> str:
        """The finding in words, for reasons: "small left pleural effusion"."""
        parts = [
            *sorted(self.get("severity")),
            *sorted(self.get("change")),
            *(
                ["bilateral"]
                if len(self.get("laterality")) == 2
                else sorted(self.get("laterality"))
            ),
            *(f"{side} greater" for side in sorted(self.get("predominance"))),
            *sorted(self.get("zone")),
            self.concept,
        ]
        if self.size_mm is not None:
            parts.append(f"{self.size_mm:g} mm")
        if self.assertion == "absent":
            parts.insert(0, "no")
        elif self.assertion == "uncertain":
            parts.insert(0, "possible")
        return " ".join(parts)


@dataclass(frozen=True)
class Sentence:
    start: int  # offsets in the text read
    end: int
    text: str
    findings: tuple[Finding, ...]


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: split at sentence punctuation (also when a capital follows
    with no space, "apex.There"), line breaks and list numbers ("2. "); trimmed; pieces without
    a letter dropped; very long pieces cut."""
    spans: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        for lo in range(start, end, MAX_SENTENCE_CHARS):
            hi = min(end, lo + MAX_SENTENCE_CHARS)
            if any(c.isalpha() for c in text[lo:hi]):
                spans.append((lo, hi))

    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.end() if text[match.start()] in ".!?" else match.start()
        add(start, end)
        start = match.end()
    add(start, len(text))
    return spans


@dataclass
class _Slot:
    """A matched phrase at token positions [i, j)."""

    i: int
    j: int
    role: Role
    clause: int


@dataclass
class _Draft:
    concept: str
    kind: str
    i: int  # where attributes attach (token index)
    start: int  # mention span (chars)
    end: int
    assert_at: tuple[int, int]  # the span ConText judges
    normal: str = ""  # a normal statement's polarity: "normal" denies the group, "abnormal"
    # asserts it (and negated words the reverse)
    attributes: dict[str, set[str]] = field(default_factory=dict)
    size_mm: float | None = None
    words: tuple[str, ...] = ()
    anatomy: str = ""


def _statement(
    toks: list[Token],
    site: _Slot,
    word: _Slot,
    concept: str,
    kind: str,
    normal: str = "",
    anatomy: str = "",
) -> _Draft:
    """A finding an anatomy and a word about it state together ("heart is enlarged", "lungs
    are clear"): it spans both, and its assertion is read at the word."""
    lo, hi = sorted((site, word), key=lambda s: s.i)
    return _Draft(
        concept,
        kind,
        word.i,
        toks[lo.i].start,
        toks[hi.j - 1].end,
        (toks[word.i].start, toks[word.j - 1].end),
        normal=normal,
        anatomy=anatomy,
    )


class Reader:
    """Reads text into sentences of findings with one vocabulary (and optionally the tree
    tagger)."""

    def __init__(self, vocab: Vocabulary | None = None, tagger: Any = None) -> None:
        self.vocab = vocab or vocabulary()
        self.tagger = tagger

    def read(self, text: str) -> list[Sentence]:
        return [self.sentence(text, start, end) for start, end in sentence_spans(text)]

    def sentence(self, text: str, start: int, end: int) -> Sentence:
        part = text[start:end]
        toks = tokens(part, start)
        slots = self._slots(part, start, toks)
        drafts = self._drafts(toks, slots)
        self._attach(toks, slots, drafts)
        findings = self._assert(part, start, drafts)
        return Sentence(start, end, part, tuple(findings))

    # -- matching ------------------------------------------------------------------------------

    def _slots(self, part: str, offset: int, toks: list[Token]) -> list[_Slot]:
        clause, clauses = 0, []
        for token in toks:
            if token.text in _CLAUSE_END:
                clause += 1
            clauses.append(clause)
        words = [t.text for t in toks]
        slots = [
            _Slot(m.start, m.end, role, clauses[m.start])
            for m in self.vocab.match(words)
            for role in m.roles
        ]
        slots += self._sizes(toks, clauses)
        if self.tagger is not None:
            slots += self._tree_concepts(part, offset, toks, slots, clauses)
        slots.sort(key=lambda s: (s.i, s.j))
        return slots

    def _sizes(self, toks: list[Token], clauses: list[int]) -> list[_Slot]:
        """ "5 mm", "1.2 cm", "3 x 4 cm": the largest dimension in millimetres."""
        out, i = [], 0
        while i < len(toks):
            numbers, j = [], i
            while j < len(toks) and _number(toks[j].text) is not None:
                numbers.append(_number(toks[j].text) or 0.0)
                if j + 2 < len(toks) and toks[j + 1].text == "x":
                    j += 2
                else:
                    j += 1
                    break
            unit = self.vocab.units.get(toks[j].text) if numbers and j < len(toks) else None
            if unit is not None:
                out.append(_Slot(i, j + 1, Role("size", f"{max(numbers) * unit:g}"), clauses[i]))
                i = j + 1
            else:
                i += 1
        return out

    def _tree_concepts(
        self, part: str, offset: int, toks: list[Token], slots: list[_Slot], clauses: list[int]
    ) -> list[_Slot]:
        """Tree mentions where the vocabulary matched nothing."""
        taken = [(toks[s.i].start, toks[s.j - 1].end) for s in slots]
        out = []
        for mention in self.tagger.tag(part, assertions=False):
            lo, hi = mention.start + offset, mention.end + offset
            if not mention.node_id or any(s < hi and lo < e for s, e in taken):
                continue
            inside = [k for k, t in enumerate(toks) if lo <= t.start and t.end <= hi]
            if inside:
                role = Role("concept", mention.node_id)
                out.append(_Slot(inside[0], inside[-1] + 1, role, clauses[inside[0]]))
        return out

    # -- findings ------------------------------------------------------------------------------

    def _drafts(self, toks: list[Token], slots: list[_Slot]) -> list[_Draft]:
        vocab = self.vocab
        drafts: list[_Draft] = []
        for slot in slots:
            if slot.role.kind != "concept":
                continue
            concept = vocab.concepts.get(slot.role.value)
            draft = _Draft(
                slot.role.value,
                concept.kind if concept else OBSERVATION,
                slot.i,
                toks[slot.i].start,
                toks[slot.j - 1].end,
                (toks[slot.i].start, toks[slot.j - 1].end),
            )
            for axis, value in slot.role.attributes:
                draft.attributes.setdefault(axis, set()).add(value)
            drafts.append(draft)
        concepts = sorted(s.i for s in slots if s.role.kind == "concept")
        anatomy = [s for s in slots if s.role.kind == "anatomy"]
        used: set[int] = set()  # anatomy slots that made an "enlarged" statement
        for word in (s for s in slots if s.role.kind == "abnormal"):
            site = _nearest(anatomy, word, concepts)
            if site is not None and site.i not in used:
                used.add(site.i)
                named = dict(word.role.attributes)["concept"]
                drafts.append(
                    _statement(toks, site, word, named, OBSERVATION, anatomy=word.role.value)
                )
        marks = sorted(
            {s.i for s in slots if s.role.kind in ("normal", "abnormal")} | set(concepts)
        )
        for word in (s for s in slots if s.role.kind == "normal"):
            for site in _coordinated(anatomy, word, marks):
                if site.i in used:
                    continue
                group = ABNORMAL + site.role.value
                drafts.append(_statement(toks, site, word, group, GROUP, normal=word.role.value))
        if not drafts:
            drafts += self._unknown(toks, slots)
        # one finding per concept and statement: a phrase with two anatomy roles ("heart and
        # mediastinum") may reach the same group twice
        unique: dict[tuple[str, int], _Draft] = {}
        for draft in sorted(drafts, key=lambda d: d.i):
            unique.setdefault((draft.concept, draft.assert_at[0]), draft)
        return list(unique.values())

    def _unknown(self, toks: list[Token], slots: list[_Slot]) -> list[_Draft]:
        covered = {k for s in slots for k in range(s.i, s.j)}
        content = [
            k
            for k, t in enumerate(toks)
            if k not in covered
            and t.text.isalpha()
            and len(t.text) > 2
            and not self.vocab.known(t.text)
        ]
        if not content:
            return []
        words = tuple(dict.fromkeys(toks[k].text for k in content))
        first, last = toks[content[0]], toks[content[-1]]
        return [
            _Draft(
                " ".join(words),
                UNKNOWN,
                content[0],
                first.start,
                last.end,
                (first.start, first.end),
                words=words,
            )
        ]

    def _attach(self, toks: list[Token], slots: list[_Slot], drafts: list[_Draft]) -> None:
        """Each attribute to the finding it precedes (nothing but modifiers between), else to
        the one it follows, in its clause."""
        if not drafts:
            return
        clause_of = {}
        clause = 0
        for k, token in enumerate(toks):
            if token.text in _CLAUSE_END:
                clause += 1
            clause_of[k] = clause
        for slot in slots:
            if slot.role.kind in ("concept", "anatomy", "normal", "abnormal"):
                continue
            same = [d for d in drafts if clause_of.get(d.i) == slot.clause]
            after = [d for d in same if d.i >= slot.j]
            before = [d for d in same if d.i < slot.i]
            target = None
            if after:
                nxt = min(after, key=lambda d: d.i)
                if not any(t.text in _BARRIER for t in toks[slot.j : nxt.i]):
                    target = nxt
            if target is None and before:
                target = max(before, key=lambda d: d.i)
            if target is None and after:
                target = min(after, key=lambda d: d.i)
            if target is None:
                continue
            target.start = min(target.start, toks[slot.i].start)
            target.end = max(target.end, toks[slot.j - 1].end)
            axis, value = slot.role.kind, slot.role.value
            if axis == "size":
                size = float(value)
                target.size_mm = max(size, target.size_mm or 0.0)
                continue
            values = _SIDES[value] if axis == "laterality" else {value}
            target.attributes.setdefault(axis, set()).update(values)

    def _assert(self, part: str, offset: int, drafts: list[_Draft]) -> list[Finding]:
        spans = [(lo - offset, hi - offset) for lo, hi in (d.assert_at for d in drafts)]
        out = []
        for draft, found in zip(drafts, _assertions(part, spans), strict=True):
            negated = found is Assertion.NEGATED or _denied_after(part, draft.assert_at[1] - offset)
            if draft.normal:  # "lungs are clear" denies; "lungs are not clear" asserts
                assertion = "present" if negated == (draft.normal == "normal") else "absent"
            elif negated:
                assertion = "absent"
            else:
                assertion = "uncertain" if found is Assertion.UNCERTAIN else "present"
            out.append(
                Finding(
                    draft.concept,
                    draft.kind,
                    assertion,
                    draft.start,
                    draft.end,
                    {k: frozenset(v) for k, v in draft.attributes.items()},
                    draft.size_mm,
                    draft.words,
                    draft.anatomy,
                )
            )
        return out


# a new statement inside a sentence: ConText's scopes stop here ("lungs are free of infiltrate
# and there is pleural fluid", "bones without abnormality with mild degenerative change")
_NEW_STATEMENT = re.compile(
    r"[;:]|\b(?:and|with|but)\s+(?=there\s+(?:is|are)\b)|"
    r"\bwith\s+(?=(?:slight|mild|minimal|small|moderate|severe|large|marked|trace|tiny)\b)",
    re.I,
)


def _assertions(part: str, spans: Sequence[tuple[int, int]]) -> list[Assertion]:
    """ConText's assertion of each span, statement by statement."""
    bounds = [0, *(m.end() for m in _NEW_STATEMENT.finditer(part)), len(part) + 1]
    out: list[Assertion] = []
    for start, end in spans:
        k = max(i for i, b in enumerate(bounds[:-1]) if b <= start)
        lo, hi = bounds[k], bounds[k + 1]
        (found,) = assert_spans(part[lo:hi], [(start - lo, end - lo)])
        out.append(found)
    return out


_DENIED_AFTER = re.compile(
    r"^[^,;:]{0,40}?\b(?:(?:is|are|was|were)\s+)?(?:not|no longer)\s+(?:be\s+)?(?:seen|noted|"
    r"identified|visualized|demonstrated|appreciated|evident|present|appreciable|detected|"
    r"visible|observed)\b|^[^,;:]{0,40}?\b(?:(?:has|have)\s+)?resolved\b|"
    r"^[^,;:]{0,40}?\b(?:is|are)\s+absent\b",
    re.I,
)


def _denied_after(part: str, end: int) -> bool:
    """Denied by words after the mention, in its clause ("effusion is not seen", "the
    effusion has resolved"), which ConText's backward triggers do not all cover."""
    rest = part[end : end + 80]
    cut = re.search(r"\b(?:but|however|although|which)\b", rest, re.I)
    return bool(_DENIED_AFTER.search(rest[: cut.start()] if cut else rest))


def _number(word: str) -> float | None:
    try:
        return float(word)
    except ValueError:
        return None


def _nearest(sites: Sequence[_Slot], word: _Slot, concepts: Sequence[int]) -> _Slot | None:
    """The anatomy an "enlarged"-like word speaks of: the nearest fitting one in its clause,
    before it (up to 8 words) or right after it (up to 5), no concept between."""
    best: _Slot | None = None
    for site in sites:
        if site.clause != word.clause or site.role.value != word.role.value:
            continue
        if site.j <= word.i:
            gap, lo, hi = word.i - site.j, site.j, word.i
            if gap > 8:
                continue
        elif site.i >= word.j:
            gap, lo, hi = site.i - word.j, word.j, site.i
            if gap > 5:
                continue
        else:
            continue
        if any(lo <= c < hi for c in concepts):
            continue
        if best is None or gap < abs(best.i - word.i):
            best = site
    return best


def _coordinated(sites: Sequence[_Slot], word: _Slot, marks: Sequence[int]) -> list[_Slot]:
    """The anatomy a normal word speaks of: every anatomy in its clause since the previous
    statement ("heart size and mediastinal contours are normal"), else the anatomy right after
    it ("normal heart size", "clear lungs")."""
    previous = max((m for m in marks if m < word.i), default=-1)
    before = [s for s in sites if s.clause == word.clause and previous < s.i < word.i]
    if before:
        return before
    following = max((m for m in marks if m <= word.i), default=word.i)
    after = [
        s
        for s in sites
        if s.clause == word.clause
        and word.j <= s.i <= word.j + 3
        and not any(following < m < s.i for m in marks if m != word.i)
    ]
    return after[:1] if after else []


def read(text: str, tagger: Any = None) -> list[Sentence]:
    return Reader(tagger=tagger).read(text)


def with_assertion(finding: Finding, assertion: str) -> Finding:
    return replace(finding, assertion=assertion)
