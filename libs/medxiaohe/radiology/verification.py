"""The verifier: every sentence of a candidate report checked against a source of truth (a
reference report, or the perception step's findings written out), finding by finding, and the
source's present findings the candidate leaves out.

A sentence's verdict is ``supported``, ``unsupported`` (kind ``addition``: it states something
the source does not), ``contradicted`` (kind ``negation``, ``laterality``, ``location`` or
``severity``: the source states the same observation otherwise; a different size or a
contradicting change count as severity), or ``not_checked`` (it states nothing: "PA and lateral
views"). Each flagged finding gives a reason; the sentence's kind is the first of negation,
laterality, location, severity, addition among them.

How a finding is decided:

* an observation or device the source asserts (the same concept, or a more specific one) is
  supported when some such statement agrees on every attribute both state; otherwise the
  closest one's first disagreement is the kind;
* one the source denies (explicitly, or by a normal statement whose group holds it: "lungs are
  clear" denies opacity) is a negation, unless the candidate keeps that denial in another
  sentence (then it is an addition beside it); one the source does not mention is an addition;
* a denied observation ("no pneumothorax") is a negation when the source asserts it, supported
  otherwise;
* a normal statement ("heart size is normal") is supported when the source says the same, a
  negation when the source asserts something it denies;
* an ``unknown`` statement (words no vocabulary names) is checked word for word: supported when
  the source states its words, a negation when the source denies them, an addition otherwise.

Omissions are the source's present (or hedged) observations, devices and unknown statements
that no candidate sentence mentions in any way (itself, a broader or narrower concept, or a
related one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from medxiaohe.common.errors import InvalidInput
from medxiaohe.radiology.reading import UNKNOWN, Finding, Reader, Sentence
from medxiaohe.radiology.vocabulary import ABNORMAL, AXES, GROUP, Vocabulary, tokens

SUPPORTED, UNSUPPORTED, CONTRADICTED, NOT_CHECKED = (
    "supported",
    "unsupported",
    "contradicted",
    "not_checked",
)
ADDITION, NEGATION, LATERALITY, LOCATION, SEVERITY = (
    "addition",
    "negation",
    "laterality",
    "location",
    "severity",
)
KINDS = (NEGATION, LATERALITY, LOCATION, SEVERITY, ADDITION)  # a sentence reports the first
MAX_REPORT_CHARS = 20_000  # a reference or a candidate (chest reports run to a few thousand)
_PLACES = ("zone", "depth", "plane")
SIZE_TOLERANCE = 0.25  # sizes that differ by more than this share (and 2 mm) disagree


@dataclass(frozen=True)
class SentenceVerdict:
    start: int
    end: int
    text: str
    verdict: str  # supported, unsupported, contradicted, not_checked
    kind: str | None  # addition, negation, laterality, location, severity
    reasons: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()  # what the sentence states (for omissions)

    @property
    def flagged(self) -> bool:
        return self.verdict in (UNSUPPORTED, CONTRADICTED)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "verdict": self.verdict,
            "kind": self.kind,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Omission:
    text: str
    start: int  # offsets in the source text
    end: int
    concept: str

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "start": self.start, "end": self.end}


@dataclass(frozen=True)
class Verification:
    sentences: tuple[SentenceVerdict, ...]
    omissions: tuple[Omission, ...]

    def flagged(self) -> list[SentenceVerdict]:
        return [s for s in self.sentences if s.flagged]

    def to_json(self) -> dict[str, Any]:
        return {
            "sentences": [s.to_json() for s in self.sentences],
            "omissions": [o.to_json() for o in self.omissions],
        }


class Source:
    """A source of truth, read once: its sentences and findings, and the words it states and
    the words it denies (for statements no vocabulary names)."""

    def __init__(self, text: str, sentences: Sequence[Sentence]) -> None:
        self.text = text
        self.candidate: Source | None = None  # the candidate being checked against it, read
        self.sentences = list(sentences)
        self.findings = [f for s in self.sentences for f in s.findings]
        self.compares = any(f.get("change") for f in self.findings)
        self.stated: set[str] = set()
        self.denied: set[str] = set()
        for sentence in self.sentences:
            words = {t.text for t in tokens(sentence.text)}
            negative = bool(sentence.findings) and all(not f.positive for f in sentence.findings)
            (self.denied if negative else self.stated).update(words)


def _similar(word: str, words: set[str]) -> bool:
    """The word or another form of it ("calcified" / "calcification": a shared stem of 4-6)."""
    if word in words:
        return True
    for other in words:
        k = min(6, len(word), len(other))
        if k >= 4 and word[:k] == other[:k]:
            return True
    return False


def _stated(f: Finding) -> set[str]:
    """The attributes a finding states."""
    return {a for a in AXES if f.get(a)} | ({"size"} if f.size_mm is not None else set())


def _agreements(f: Finding, g: Finding) -> set[str]:
    """The attributes both findings state alike."""
    same = {a for a in AXES if f.get(a) & g.get(a)}
    return same | ({"size"} if f.size_mm is not None and f.size_mm == g.size_mm else set())


def _share(words: Sequence[str], pool: set[str]) -> float:
    return sum(_similar(w, pool) for w in words) / len(words) if words else 0.0


class Verifier:
    def __init__(self, vocab: Vocabulary | None = None, tagger: Any = None) -> None:
        self.reader = Reader(vocab, tagger)
        self.vocab = self.reader.vocab

    def source(self, text: str) -> Source:
        return Source(text, self.reader.read(text))

    def verify(self, reference: str, candidate: str) -> Verification:
        for name, text in (("reference", reference), ("candidate", candidate)):
            if len(text) > MAX_REPORT_CHARS:
                raise InvalidInput(f"the {name} is longer than {MAX_REPORT_CHARS} characters")
        source = self.source(reference)
        read = self.reader.read(candidate)
        source.candidate = Source(candidate, read)
        verdicts = tuple(self.sentence(s, source) for s in read)
        return Verification(verdicts, tuple(self.omissions(source, verdicts, candidate)))

    # -- sentences -----------------------------------------------------------------------------

    def check_text(self, text: str, source: Source) -> SentenceVerdict:
        """A piece of text checked as one sentence (what a report's writer calls a sentence
        may read as two)."""
        findings = tuple(f for s in self.reader.read(text) for f in s.findings)
        return self.sentence(Sentence(0, len(text), text, findings), source)

    def sentence(self, sentence: Sentence, source: Source) -> SentenceVerdict:
        findings = sentence.findings
        if not findings:
            return SentenceVerdict(sentence.start, sentence.end, sentence.text, NOT_CHECKED, None)
        checked = [self.check(f, source) for f in sentence.findings]
        flagged = [(kind, reason) for kind, reason in checked if kind]
        if not flagged:
            reasons = tuple(reason for _, reason in checked)
            return SentenceVerdict(
                sentence.start, sentence.end, sentence.text, SUPPORTED, None, reasons, findings
            )
        kind = min((k for k, _ in flagged), key=KINDS.index)
        verdict = UNSUPPORTED if kind == ADDITION else CONTRADICTED
        reasons = tuple(reason for _, reason in flagged)
        return SentenceVerdict(
            sentence.start, sentence.end, sentence.text, verdict, kind, reasons, findings
        )

    def check(self, finding: Finding, source: Source) -> tuple[str | None, str]:
        """(kind or None when supported, reason) of one finding against the source."""
        if finding.kind == UNKNOWN:
            return self._check_words(finding, source)
        if finding.kind == GROUP:
            return self._check_group(finding, source)
        if finding.positive:
            return self._check_asserted(finding, source)
        return self._check_denied(finding, source)

    def _check_asserted(self, finding: Finding, source: Source) -> tuple[str | None, str]:
        """Against the source's statements of the same concept (else of a more specific one,
        else of a broader one): supported when one agrees on an attribute both state and none
        disagrees more closely; flagged with the closest statement's disagreement."""
        vocab, name = self.vocab, finding.concept
        stated = [g for g in source.findings if g.positive and g.kind != GROUP]
        candidates = (
            [g for g in stated if g.concept == name]
            or [g for g in stated if name in vocab.ancestors(g.concept)]
            or [g for g in stated if g.concept in vocab.ancestors(name)]
        )
        if candidates:
            return self._compare(finding, candidates, source)
        explicit, general = self._deniers(name, source)
        said = ABNORMAL + finding.anatomy  # "the heart is enlarged" against "heart size normal"
        by_anatomy = bool(finding.anatomy) and any(g.concept == said for g in general)
        if by_anatomy or explicit:
            denial = f"no {said}" if by_anatomy else explicit[0].describe()
            if self._denied_elsewhere(finding, by_anatomy, source.candidate):
                # the candidate keeps the source's denial and adds a claim against it
                return ADDITION, (
                    f"{finding.describe()}: not in the source, which says {denial} (as does "
                    "the candidate elsewhere)"
                )
            return NEGATION, f"{finding.describe()}: the source says {denial}"
        if general:
            return ADDITION, (
                f"{finding.describe()}: not in the source, which says {general[0].describe()}"
            )
        return ADDITION, f"{finding.describe()}: not in the source"

    def _deniers(self, name: str, source: Source) -> tuple[list[Finding], list[Finding]]:
        """The source's statements that deny the concept: explicitly (it, or a broader concept:
        "no consolidation" denies pneumonia), and by a normal statement whose group holds it
        ("lungs are clear")."""
        lineage = self.vocab.ancestors(name)
        explicit, general = [], []
        for g in source.findings:
            if g.positive:
                continue
            if g.kind != GROUP and g.concept in lineage:
                explicit.append(g)
            elif g.kind == GROUP:
                concept = self.vocab.concepts.get(g.concept)
                if concept is not None and lineage & concept.members:
                    general.append(g)
        return explicit, general

    def _denied_elsewhere(
        self, finding: Finding, by_anatomy: bool, candidate: Source | None
    ) -> bool:
        """Another sentence of the candidate denies the finding as the source does: by a normal
        statement of its anatomy, or explicitly."""
        if candidate is None:
            return False
        here = next((s for s in candidate.sentences if s.start <= finding.start < s.end), None)
        explicit, general = self._deniers(finding.concept, candidate)
        said = ABNORMAL + finding.anatomy
        denials = [g for g in general if g.concept == said] if by_anatomy else explicit
        return any(here is None or not here.start <= g.start < here.end for g in denials)

    def _check_denied(self, finding: Finding, source: Source) -> tuple[str | None, str]:
        sides = finding.get("laterality")
        denials = [g for g in source.findings if g.concept == finding.concept and not g.positive]
        if any(not (sides and g.get("laterality")) or sides & g.get("laterality") for g in denials):
            return None, f"{finding.describe()}: the source says the same"
        if denials and finding.get("change"):  # "resolution of the right effusion": it was there
            return LATERALITY, f"{finding.describe()}: the source says {denials[0].describe()}"
        for g in source.findings:
            if not g.positive or g.kind == GROUP:
                continue
            if finding.concept != g.concept:  # "no focal opacity" beside minimal atelectasis
                continue
            if sides and g.get("laterality") and not sides & g.get("laterality"):
                continue  # "no left effusion" beside a right one
            return NEGATION, f"{finding.describe()}: the source says {g.describe()}"
        return None, f"{finding.describe()}: the source does not assert it"

    def _check_group(self, finding: Finding, source: Source) -> tuple[str | None, str]:
        concept = self.vocab.concepts.get(finding.concept)
        members = concept.members if concept else frozenset()
        said = [g for g in source.findings if g.concept == finding.concept]
        present = [
            g for g in source.findings if g.positive and g.kind != GROUP and g.concept in members
        ]
        if not finding.positive:  # a normal statement
            if any(not g.positive for g in said):
                return None, f"{finding.describe()}: the source says the same"
            if present:
                return NEGATION, f"{finding.describe()}: the source says {present[0].describe()}"
            return None, f"{finding.describe()}: the source reports nothing it denies"
        if any(g.positive for g in said):
            return None, f"{finding.describe()}: stated in the source"
        if said:
            return NEGATION, f"{finding.describe()}: the source says {said[0].describe()}"
        if present:
            return None, f"{finding.describe()}: the source says {present[0].describe()}"
        return ADDITION, f"{finding.describe()}: not in the source"

    def _check_words(self, finding: Finding, source: Source) -> tuple[str | None, str]:
        words = " ".join(finding.words)
        stated = _share(finding.words, source.stated) >= 0.5
        denied = _share(finding.words, source.denied) >= 0.5
        if finding.positive:
            if stated:
                alike = [
                    g
                    for g in source.findings
                    if g.kind == UNKNOWN
                    and g.positive
                    and _share(finding.words, set(g.words)) >= 0.5
                ]
                if alike:
                    return self._compare(finding, alike, source)
                return None, f"'{words}': stated in the source"
            if denied:
                return NEGATION, f"'{words}': the source denies it"
            return ADDITION, f"'{words}': not in the source"
        if stated and not denied:
            return NEGATION, f"no '{words}': the source states it"
        return None, f"no '{words}': the source does not state it"

    def _compare(
        self, finding: Finding, statements: Sequence[Finding], source: Source
    ) -> tuple[str | None, str]:
        """Supported when one statement agrees on every attribute the source states anywhere
        (of those the finding states), or none disagrees; else the closest disagreement. A
        restatement without the attribute ("left effusion" in the impression) does not hide
        a disagreement ("small left effusion" in the findings)."""
        compared = [(self.disagreements(finding, g, source), g) for g in statements]
        stated = {a for g in statements for a in _stated(finding) & _stated(g)}
        if any(not d and stated <= _agreements(finding, g) for d, g in compared) or all(
            not d for d, _ in compared
        ):
            return None, f"{finding.describe()}: stated in the source"
        return min((d for d, _ in compared if d), key=len)[0]

    def disagreements(self, f: Finding, g: Finding, source: Source) -> list[tuple[str, str]]:
        """Where the candidate finding ``f`` and the source's ``g`` disagree, in KINDS order."""
        out: list[tuple[str, str]] = []
        said = f"{f.describe()}: the source says {g.describe()}"
        sides, theirs = f.get("laterality"), g.get("laterality")
        leads, theirs_lead = f.get("predominance"), g.get("predominance")
        if (sides and theirs and not sides <= theirs) or (
            leads and theirs_lead and not leads & theirs_lead
        ):
            out.append((LATERALITY, said))
        for axis in _PLACES:
            if f.get(axis) and g.get(axis) and not f.get(axis) & g.get(axis):
                out.append((LOCATION, said))
                break
        if f.get("severity") and g.get("severity") and not f.get("severity") & g.get("severity"):
            out.append((SEVERITY, said))
        elif f.size_mm is not None and g.size_mm is not None:
            gap = abs(f.size_mm - g.size_mm)
            if gap >= 2 and gap > SIZE_TOLERANCE * max(f.size_mm, g.size_mm):
                out.append((SEVERITY, f"{said} (size)"))
        if f.get("change") and g.get("change") and not f.get("change") & g.get("change"):
            out.append((SEVERITY, f"{said} (change)"))
        elif f.get("change") and not source.compares:
            out.append((ADDITION, f"{f.describe()}: the source compares with no prior study"))
        return out

    # -- omissions -----------------------------------------------------------------------------

    def omissions(
        self, source: Source, sentences: Sequence[SentenceVerdict], candidate: str
    ) -> list[Omission]:
        """The source's positive findings that no candidate finding mentions (the concept or a
        more specific one, on a side and at a place that do not disagree); one per finding that
        is not a restatement of one already omitted."""
        stated = [f for s in sentences for f in s.findings if f.kind != GROUP]
        mentioned = [f for f in stated if f.positive]
        # a finding denied or stated otherwise (the other side, another place) is reported as
        # the contradiction it is, not also as an omission
        contradicted = {
            c
            for s in sentences
            if s.verdict == CONTRADICTED
            for f in s.findings
            for c in self.vocab.ancestors(f.concept)
        }
        words = {t.text for t in tokens(candidate)}
        out: list[tuple[Finding, Omission]] = []
        for g in source.findings:
            if not g.positive or g.kind == GROUP:
                continue
            if g.kind == UNKNOWN:
                if _share(g.words, words) >= 0.5:
                    continue
            elif g.concept in contradicted or any(self._same_finding(f, g) for f in mentioned):
                continue
            if any(self._same_finding(g, o) for o, _ in out):
                continue
            out.append((g, Omission(source.text[g.start : g.end], g.start, g.end, g.concept)))
        return [o for _, o in out]

    def _same_finding(self, f: Finding, g: Finding) -> bool:
        """``f`` mentions ``g``: the same concept or a more specific one (an opacity does not
        mention the pneumonia it may be), not placed apart (side, location)."""
        if g.concept not in self.vocab.ancestors(f.concept):
            return False
        sides, theirs = f.get("laterality"), g.get("laterality")
        if sides and theirs and not sides & theirs:
            return False
        return not any(f.get(a) and g.get(a) and not f.get(a) & g.get(a) for a in _PLACES)


class Stated(Protocol):
    """A finding as a perception step (or a rubric) gives it."""

    @property
    def text(self) -> str: ...
    @property
    def assertion(self) -> str: ...  # present, absent, uncertain
    @property
    def laterality(self) -> str: ...
    @property
    def site(self) -> str: ...


_WRITTEN = {"present": "{}.", "absent": "No {}.", "uncertain": "Possible {}."}


def findings_text(findings: Sequence[Stated]) -> tuple[str, list[tuple[int, int]]]:
    """Findings written as a source report, one sentence each ("No pneumothorax.", "Possible
    left lower lobe opacity."), and each sentence's span."""
    text, spans = "", []
    for finding in findings:
        side = finding.laterality if finding.laterality not in finding.text else ""
        site = f"in the {finding.site}" if finding.site and finding.site not in finding.text else ""
        sentence = _WRITTEN[finding.assertion].format(
            " ".join(x for x in (side, finding.text, site) if x)
        )
        sentence = sentence[:1].upper() + sentence[1:]
        start = len(text) + (1 if text else 0)
        text = f"{text} {sentence}" if text else sentence
        spans.append((start, start + len(sentence)))
    return text, spans


def verify(reference: str, candidate: str, tagger: Any = None) -> Verification:
    return Verifier(tagger=tagger).verify(reference, candidate)
