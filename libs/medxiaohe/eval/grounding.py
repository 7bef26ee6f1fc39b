"""Does the verifier catch what a report gets wrong, on reports written in other words?

IU X-ray reports' findings are the references (see ``load_reports``). Each candidate is the
reference paraphrased (``medxiaohe.eval.rewrite``: synonyms, other sentence forms, lists
joined), reordered, and given at most one error, injected by surface rules that never ask the
verifier what a sentence says:

* addition: a sentence stating a finding, from another report, whose content words this
  report does not have;
* negation, laterality, location, severity: one sentence's assertion flipped, left <-> right,
  upper <-> lower (apex <-> base), small <-> large (mild <-> severe);
* omission: a sentence stating something no other sentence of the report says, dropped;
* none: the paraphrase alone (every sentence of it is untouched).

Per kind: recall (injected errors flagged as that kind; ``detected``: flagged at all) and
precision (flags of that kind that hit an error of that kind); ``false_alarm_rate``: untouched
sentences flagged; omissions: recall (dropped sentences reported as omitted) and the share of
pairs with a spurious omission; ``not_checked``: candidate sentences the verifier abstained
on. The token-overlap baseline flags a candidate sentence unlike every reference sentence (and
a reference sentence unlike every candidate one, as omitted); its threshold is tuned on the
tuning split and applied to the evaluated one.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medxiaohe.datasets import iu_xray
from medxiaohe.eval import rewrite
from medxiaohe.radiology.verification import Verification, Verifier

ERRORS = ("addition", "negation", "laterality", "location", "severity")
Span = tuple[int, int]


@dataclass(frozen=True)
class Pair:
    id: str
    reference: str
    candidate: str
    kind: str  # an ERRORS kind, "omission", or "none"
    target: Span | None  # the error's sentence in the candidate; the dropped one in the reference
    sentences: tuple[Span, ...]  # the candidate's sentences
    reference_sentences: tuple[Span, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "reference": self.reference, "candidate": self.candidate}


def load_reports(path: Path, split: str, limit: int = 0) -> list[tuple[str, list[str]]]:
    """(uid, sentences) of each report of the split with any text: its findings, or with the
    impression too when the findings are a single sentence. An impression restates findings, so
    a dropped finding would still be in the candidate and its omission no error."""
    reports = []
    for row in iu_xray.rows(path):
        if row.get("split") != split:
            continue
        sentences = rewrite.split(row.get("findings", ""))
        if len(sentences) < 2:
            sentences += rewrite.split(row.get("impression", ""))
        if sentences:
            reports.append((row["uid"], sentences))
        if limit and len(reports) >= limit:
            break
    return reports


def _join(parts: Sequence[str]) -> tuple[str, tuple[Span, ...]]:
    spans, text = [], ""
    for part in parts:
        if text:
            text += " "
        spans.append((len(text), len(text) + len(part)))
        text += part
    return text, tuple(spans)


def _candidate(
    sentences: Sequence[str], changed: int | None, rng: random.Random
) -> tuple[str, tuple[Span, ...], Span | None]:
    """Lists joined (not the changed sentence), order shuffled; the changed sentence's span."""
    units = rewrite.join_lists(sentences)
    units = [u for u in units if changed not in u[1] or u[1] == (changed,)]
    kept = {i for _, positions in units for i in positions}
    units += [(sentences[i], (i,)) for i in range(len(sentences)) if i not in kept]
    rng.shuffle(units)
    text, spans = _join([u[0] for u in units])
    target = next((spans[k] for k, u in enumerate(units) if u[1] == (changed,)), None)
    return text, spans, target


def build_pairs(reports: Sequence[tuple[str, list[str]]], seed: int = 13) -> list[Pair]:
    """A clean paraphrase of each report, and at most one pair per error kind."""
    pairs = []
    for uid, original in reports:
        rng = random.Random(f"{seed}:{uid}")  # noqa: S311  (a reproducible sample)
        reference, reference_spans = _join(original)
        para = [rewrite.paraphrase(s, rng) for s in original]
        made: list[tuple[str, list[str], int | None, Span | None]] = [("none", para, None, None)]
        for kind, corrupt in rewrite.CORRUPTIONS.items():
            options = [(j, wrong) for j, s in enumerate(para) if (wrong := corrupt(s))]
            if options:
                j, wrong = rng.choice(options)
                made.append((kind, [wrong if k == j else s for k, s in enumerate(para)], j, None))
        words = set().union(*(rewrite.content(s) for s in original))
        for _ in range(20):
            donor_uid, donor = reports[rng.randrange(len(reports))]
            sentence = rng.choice(donor)
            if donor_uid == uid or not rewrite.stating(sentence):
                continue
            if not rewrite.content(sentence) & words:
                at = rng.randrange(len(para) + 1)
                made.append(("addition", [*para[:at], sentence, *para[at:]], at, None))
                break
        alone = [
            j
            for j, s in enumerate(original)
            if rewrite.stating(s)
            and len(original) > 1
            and rewrite.content(s)
            - set().union(*(rewrite.content(t) for k, t in enumerate(original) if k != j))
        ]
        if alone:
            j = rng.choice(alone)
            dropped = [s for k, s in enumerate(para) if k != j]
            made.append(("omission", dropped, None, reference_spans[j]))
        for kind, sentences, changed, drop in made:
            text, spans, target = _candidate(sentences, changed, rng)
            pairs.append(
                Pair(f"{uid}-{kind}", reference, text, kind, drop or target, spans, reference_spans)
            )
    return pairs


# -- scoring ----------------------------------------------------------------------------------


@dataclass
class Tally:
    injected: Counter[str]
    hits: Counter[str]  # flagged as the right kind
    detected: Counter[str]  # flagged at all
    flags: Counter[str]  # flags of each kind, anywhere
    untouched: int = 0
    alarms: int = 0
    sentences: int = 0
    not_checked: int = 0
    omission_pairs: int = 0
    omission_hits: int = 0
    spurious_pairs: int = 0
    omissions: int = 0
    pairs: int = 0

    @classmethod
    def empty(cls) -> Tally:
        return cls(Counter(), Counter(), Counter(), Counter())

    def result(self) -> dict[str, Any]:
        def ratio(a: float, b: float) -> float:
            return round(a / b, 4) if b else 0.0

        out: dict[str, Any] = {
            kind: {
                "recall": ratio(self.hits[kind], self.injected[kind]),
                "detected": ratio(self.detected[kind], self.injected[kind]),
                "precision": ratio(self.hits[kind], self.flags[kind]),
                "n": self.injected[kind],
            }
            for kind in ERRORS
        }
        out["omission"] = {
            "recall": ratio(self.omission_hits, self.omission_pairs),
            "spurious_pair_rate": ratio(self.spurious_pairs, self.pairs),
            "reported": self.omissions,
            "n": self.omission_pairs,
        }
        out["false_alarm_rate"] = ratio(self.alarms, self.untouched)
        out["not_checked"] = ratio(self.not_checked, self.sentences)
        return out


def _inside(span: Span, within: Span) -> bool:
    return within[0] <= span[0] < within[1]


def _overlaps(a: Span, b: Span) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(
    pair: Pair,
    flags: Sequence[tuple[Span, str]],
    omitted: Sequence[Span],
    tally: Tally,
    checked: Sequence[bool] = (),
) -> None:
    """Tally one pair: ``flags`` the (span, kind) of each flagged candidate sentence,
    ``omitted`` the reference spans reported omitted, ``checked`` per verifier sentence."""
    tally.pairs += 1
    tally.sentences += len(checked)
    tally.not_checked += sum(not c for c in checked)
    flagged: dict[Span, set[str]] = {}
    for span, kind in flags:
        unit = next((s for s in pair.sentences if _inside(span, s)), span)
        flagged.setdefault(unit, set()).add(kind)
    for kinds in flagged.values():
        for kind in kinds:
            tally.flags[kind] += 1
    if pair.kind in ERRORS:
        tally.injected[pair.kind] += 1
        kinds = flagged.get(pair.target, set()) if pair.target else set()
        tally.detected[pair.kind] += bool(kinds)
        tally.hits[pair.kind] += pair.kind in kinds
    untouched = [s for s in pair.sentences if not (pair.kind in ERRORS and s == pair.target)]
    tally.untouched += len(untouched)
    tally.alarms += sum(1 for s in untouched if s in flagged)
    tally.omissions += len(omitted)
    drop = pair.target if pair.kind == "omission" else None
    if drop is not None:
        tally.omission_pairs += 1
        tally.omission_hits += any(_overlaps(o, drop) for o in omitted)
    tally.spurious_pairs += any(drop is None or not _overlaps(o, drop) for o in omitted)


def score_verifier(pairs: Sequence[Pair], verifier: Verifier) -> Tally:
    tally = Tally.empty()
    for pair in pairs:
        result: Verification = verifier.verify(pair.reference, pair.candidate)
        flags = [((s.start, s.end), s.kind or "") for s in result.sentences if s.flagged]
        omitted = [(o.start, o.end) for o in result.omissions]
        checked = [s.verdict != "not_checked" for s in result.sentences]
        score(pair, flags, omitted, tally, checked)
    return tally


# -- the token-overlap baseline ---------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def overlap(a: frozenset[str], b: frozenset[str]) -> float:
    """Token F1 of two sentences' word sets."""
    common = len(a & b)
    return 2 * common / (len(a) + len(b)) if common else 0.0


def score_overlap(pairs: Sequence[Pair], threshold: float) -> Tally:
    """A candidate sentence unlike every reference sentence is flagged (its kind: the pair's,
    since the matcher names none); a reference sentence unlike every candidate one is omitted."""
    tally = Tally.empty()
    for pair in pairs:
        ref = [(s, _words(pair.reference[s[0] : s[1]])) for s in pair.reference_sentences]
        cand = [(s, _words(pair.candidate[s[0] : s[1]])) for s in pair.sentences]
        kind = pair.kind if pair.kind in ERRORS else "addition"
        flags = [
            (span, kind)
            for span, words in cand
            if max((overlap(words, r) for _, r in ref), default=0.0) < threshold
        ]
        omitted = [
            span
            for span, words in ref
            if max((overlap(words, c) for _, c in cand), default=0.0) < threshold
        ]
        score(pair, flags, omitted, tally, [True] * len(cand))
    return tally


def tune_overlap(pairs: Sequence[Pair]) -> float:
    """The threshold with the best mean of error recall and omission recall minus false alarms
    and spurious omissions."""
    best, chosen = -1.0, 0.5
    for threshold in np.arange(0.2, 0.95, 0.05):
        result = score_overlap(pairs, float(threshold)).result()
        value = (
            np.mean([result[k]["detected"] for k in ERRORS])
            + result["omission"]["recall"]
            - result["false_alarm_rate"]
            - result["omission"]["spurious_pair_rate"]
        )
        if value > best:
            best, chosen = float(value), round(float(threshold), 2)
    return chosen


def evaluate(
    path: Path,
    split: str = "val",
    tune_split: str = "train",
    limit: int = 0,
    seed: int = 13,
    verifier: Verifier | None = None,
    rubric: Callable[[Sequence[Pair]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    verifier = verifier or Verifier()
    pairs = build_pairs(load_reports(path, split, limit), seed)
    tune_pairs = build_pairs(load_reports(path, tune_split, limit), seed)
    threshold = tune_overlap(tune_pairs)
    out: dict[str, Any] = {
        "split": split,
        "verifier": score_verifier(pairs, verifier).result(),
        "token_overlap": {
            **score_overlap(pairs, threshold).result(),
            "threshold": threshold,
            "tuned_on": tune_split,
        },
        "pairs": dict(Counter(p.kind for p in pairs)),
        "vocabulary": verifier.vocab.version,
    }
    if rubric is not None:
        out["dynamic_rubric"] = rubric(pairs)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def rubric_drops(tagger: Any = None) -> Callable[[Sequence[Pair]], dict[str, Any]]:
    """For each error kind, the share of corrupted candidates the dynamic rubric (generated
    from the reference's findings) scores below the clean paraphrase of the same report."""
    from medxiaohe.radiology.reading import UNKNOWN
    from medxiaohe.radiology.vocabulary import GROUP
    from medxiaohe.rubric.dynamic import Finding, FindingGrader, rubric_for
    from medxiaohe.rubric.scoring import score_example

    grader = FindingGrader(tagger)

    def measure(pairs: Sequence[Pair]) -> dict[str, Any]:
        clean: dict[str, float] = {}
        rubrics: dict[str, Any] = {}
        lowered: dict[str, list[bool]] = {k: [] for k in (*ERRORS, "omission")}
        for pair in pairs:
            if pair.reference not in rubrics:
                read = [
                    f
                    for s in grader.verifier.reader.read(pair.reference)
                    for f in s.findings
                    if f.kind not in (GROUP, UNKNOWN)
                ]
                findings = [Finding(pair.reference[f.start : f.end], f.assertion) for f in read]
                rubrics[pair.reference] = (
                    rubric_for(findings, grader.verifier) if findings else None
                )
            dynamic = rubrics[pair.reference]
            if dynamic is None:
                continue
            value = score_example(dynamic.rubric, grader.grade(pair.candidate, dynamic)).raw
            if pair.kind == "none":
                clean[pair.reference] = value
            elif pair.reference in clean:
                lowered[pair.kind].append(value < clean[pair.reference])
        return {
            "clean_mean": round(float(np.mean(list(clean.values()))), 4) if clean else 0.0,
            "lowered": {k: round(float(np.mean(v)), 4) if v else 0.0 for k, v in lowered.items()},
        }

    return measure
