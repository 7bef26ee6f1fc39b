"""Does the verifier catch what a report gets wrong? IU X-ray-format reports (findings and
impression) are corrupted with a fixed seed, one error per copy, and verified with the original
as the source of truth:

* addition: a sentence from another report that asserts an observation this one lacks;
* negation: a sentence's assertion flipped ("There is no effusion" <-> "There is effusion");
* laterality: left and right swapped in a sentence with a sided observation;
* omission: a sentence that alone asserts an observation, dropped.

Per type: precision (flags of that type that hit the injected error) and recall (injected errors
flagged as that type); the false-alarm rate is the share of unchanged sentences flagged. Two
baselines match sentences instead (ROUGE-L, MiniLM cosine): a sentence unlike every source
sentence is flagged, as is a source sentence unlike every report sentence (an omission); their
thresholds are tuned on the same data. Every report, original and corrupted, is also scored with
the dynamic rubric generated from the original's findings.
"""

from __future__ import annotations

import csv
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from medxiaohe.eval.report import rouge_l
from medxiaohe.report.claims import Claim, claims, split_sentences
from medxiaohe.report.verifier import positive, verify
from medxiaohe.rubric.dynamic import Finding, FindingGrader, rubric_for
from medxiaohe.rubric.scoring import score_example

TYPES = ("addition", "negation", "laterality", "omission")
Similarity = Callable[[str, str], float]


@dataclass(frozen=True)
class Case:
    report: int  # index of the original
    kind: str
    sentences: tuple[str, ...]  # the corrupted report
    target: int  # the injected sentence (addition, negation, laterality) or the dropped one
    concepts: tuple[str, ...]  # the observations the error concerns (all that a drop omits)


def load_reports(path: Path, limit: int = 0) -> list[list[str]]:
    """Findings then impression of each report, as sentences (reports without any skipped)."""
    reports = []
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = " ".join(x for x in (row.get("findings", ""), row.get("impression", "")) if x)
            sentences = split_sentences(text)
            if sentences:
                reports.append(sentences)
            if limit and len(reports) >= limit:
                break
    return reports


_TO_POSITIVE = (
    (re.compile(r"\b(there (?:is|are)) no\b", re.I), r"\1"),
    (re.compile(r"^no (?:evidence of |signs? of )?", re.I), ""),
    (re.compile(r"\bwithout\b", re.I), "with"),
    (re.compile(r"\bnegative for\b", re.I), "positive for"),
    (re.compile(r"\b(is|are) not (?:seen|identified|present|evident)\b", re.I), r"\1 seen"),
)
_TO_NEGATIVE = ((re.compile(r"\b(there (?:is|are))(?: an?)?\b", re.I), r"\1 no"),)


def flip(sentence: str) -> str | None:
    """The sentence with its assertion flipped, or None when no rule applies."""
    before = claims(sentence)
    if not before:
        return None
    rules = _TO_POSITIVE if before[0].assertion == "negated" else _TO_NEGATIVE
    for pattern, replacement in rules:
        flipped, count = pattern.subn(replacement, sentence, count=1)
        if count:
            flipped = flipped[:1].upper() + flipped[1:]
            after = claims(flipped)
            same = bool(after) and after[0].concept == before[0].concept
            if same and (after[0].assertion == "negated") != (before[0].assertion == "negated"):
                return flipped
    return None


def swap_sides(sentence: str) -> str:
    def other(match: re.Match[str]) -> str:
        word = {"left": "right", "right": "left"}[match.group(1).lower()]
        return word.capitalize() if match.group(1)[0].isupper() else word

    return re.sub(r"\b(left|right)\b", other, sentence, flags=re.I)


def corrupt(reports: Sequence[list[str]], seed: int = 13) -> list[Case]:
    """At most one case of each type per report, chosen with a fixed seed."""
    rng = random.Random(seed)  # noqa: S311  (a reproducible sample, not a secret)
    found = [[claims(s) for s in report] for report in reports]
    cases = []
    for i, (report, per_sentence) in enumerate(zip(reports, found, strict=True)):
        order = rng.sample(range(len(report)), len(report))
        concepts = {c.concept for cl in per_sentence for c in cl}
        for j in order:  # negation
            flipped = flip(report[j])
            if flipped:
                cases.append(
                    Case(i, "negation", _with(report, j, flipped), j, (per_sentence[j][0].concept,))
                )
                break
        for j in order:  # laterality
            sided = [c for c in per_sentence[j] if c.side in ("left", "right")]
            if sided and positive(sided[0].assertion):
                cases.append(
                    Case(
                        i,
                        "laterality",
                        _with(report, j, swap_sides(report[j])),
                        j,
                        (sided[0].concept,),
                    )
                )
                break
        for j in order:  # omission: a sentence alone in asserting its observation
            others = {c.concept for k, cl in enumerate(per_sentence) if k != j for c in cl}
            only = [c.concept for c in per_sentence[j] if c.assertion == "present"]
            only = [c for c in only if c not in others]
            if only:
                kept = tuple(s for k, s in enumerate(report) if k != j)
                if kept:
                    cases.append(Case(i, "omission", kept, j, tuple(dict.fromkeys(only))))
                break
        for _ in range(20):  # addition: a donor sentence asserting something new
            donor = rng.randrange(len(reports))
            if donor == i:
                continue
            k = rng.randrange(len(reports[donor]))
            new = [
                c for c in found[donor][k] if c.assertion == "present" and c.concept not in concepts
            ]
            if new:
                at = rng.randrange(len(report) + 1)
                sentences = (*report[:at], reports[donor][k], *report[at:])
                cases.append(Case(i, "addition", sentences, at, (new[0].concept,)))
                break
    return cases


def _with(report: Sequence[str], index: int, sentence: str) -> tuple[str, ...]:
    return (*report[:index], sentence, *report[index + 1 :])


# -- scoring ----------------------------------------------------------------------------------


@dataclass
class Tally:
    hits: Counter[str]
    flags: Counter[str]
    injected: Counter[str]
    alarms: int = 0
    unchanged: int = 0

    def result(self) -> dict[str, Any]:
        """Precision and recall per type; an omission case counts each omitted observation."""
        out: dict[str, Any] = {
            kind: {
                "precision": round(self.hits[kind] / self.flags[kind], 4)
                if self.flags[kind]
                else 0.0,
                "recall": round(self.hits[kind] / self.injected[kind], 4)
                if self.injected[kind]
                else 0.0,
            }
            for kind in TYPES
        }
        out["false_alarm_rate"] = round(self.alarms / max(1, self.unchanged), 4)
        return out


def _unchanged(case: Case) -> int:
    return len(case.sentences) - (1 if case.kind != "omission" else 0)


def score_verifier(
    reports: Sequence[list[str]], cases: Sequence[Case], tagger: Any = None
) -> Tally:
    tally = Tally(Counter(), Counter(), Counter())
    sources = [[c for s in r for c in claims(s, tagger)] for r in reports]
    for case in cases:
        result = verify(case.sentences, sources[case.report], tagger)
        tally.injected[case.kind] += len(case.concepts) if case.kind == "omission" else 1
        tally.unchanged += _unchanged(case)
        for flagged in result.flagged():
            tally.flags[flagged.verdict] += 1
            if case.kind != "omission" and flagged.index == case.target:
                tally.hits[flagged.verdict] += flagged.verdict == case.kind
            else:
                tally.alarms += 1
        for concept in result.omissions:
            tally.flags["omission"] += 1
            tally.hits["omission"] += case.kind == "omission" and concept in case.concepts
    return tally


def score_matcher(
    reports: Sequence[list[str]], cases: Sequence[Case], similarity: Similarity, threshold: float
) -> Tally:
    """Sentence matching: no types, so a flag counts for the type of the case it is found in."""
    tally = Tally(Counter(), Counter(), Counter())
    for case in cases:
        source = reports[case.report]
        tally.injected[case.kind] += 1
        tally.unchanged += _unchanged(case)
        if case.kind == "omission":
            for k, sentence in enumerate(source):
                if max((similarity(sentence, s) for s in case.sentences), default=0) < threshold:
                    tally.flags["omission"] += 1
                    tally.hits["omission"] += k == case.target
            continue
        for k, sentence in enumerate(case.sentences):
            if max(similarity(sentence, s) for s in source) < threshold:
                tally.flags[case.kind] += 1
                if k == case.target:
                    tally.hits[case.kind] += 1
                else:
                    tally.alarms += 1
    return tally


def tuned(
    reports: Sequence[list[str]], cases: Sequence[Case], similarity: Similarity
) -> tuple[float, Tally]:
    """The threshold with the best mean F1 over the types, and its tally."""
    best: tuple[float, float, Tally] | None = None
    similarity = lru_cache(maxsize=None)(similarity)  # the same pairs at every threshold
    for threshold in np.arange(0.3, 1.0, 0.05):
        tally = score_matcher(reports, cases, similarity, float(threshold))
        result = tally.result()
        f1 = np.mean([_f1(result[k]["precision"], result[k]["recall"]) for k in TYPES])
        if best is None or f1 > best[1]:
            best = (round(float(threshold), 2), float(f1), tally)
    assert best is not None
    return best[0], best[2]


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def minilm_similarity(sentences: Sequence[str]) -> Similarity:
    from medxiaohe.evidence.retrievers import embed

    unique = sorted(set(sentences))
    vectors = dict(zip(unique, embed(unique), strict=True))
    return lambda a, b: float(vectors[a] @ vectors[b])


def findings_of(source: Sequence[Claim]) -> list[Finding]:
    """The original report's claims as the perception step would give them."""
    seen, out = set(), []
    for claim in source:
        assertion = {"negated": "absent"}.get(claim.assertion, claim.assertion)
        side = claim.side if claim.side in ("left", "right", "bilateral") else ""
        key = (claim.concept, assertion, side)
        if key not in seen:
            seen.add(key)
            out.append(Finding(claim.concept, assertion, side))
    return out


def dynamic_rubric_scores(
    reports: Sequence[list[str]], cases: Sequence[Case], tagger: Any = None
) -> dict[str, Any]:
    grader = FindingGrader(tagger)
    originals: dict[int, float] = {}
    lowered: dict[str, list[bool]] = {k: [] for k in TYPES}

    def score(report: int, sentences: Sequence[str]) -> float | None:
        findings = findings_of([c for s in reports[report] for c in claims(s, tagger)])
        if not findings:
            return None
        dynamic = rubric_for(findings)
        return score_example(dynamic.rubric, grader.grade(" ".join(sentences), dynamic)).raw

    for case in cases:
        if case.report not in originals:
            value = score(case.report, reports[case.report])
            if value is None:
                continue
            originals[case.report] = value
        corrupted = score(case.report, case.sentences)
        if corrupted is not None:
            lowered[case.kind].append(corrupted < originals[case.report])
    return {
        "original_mean": round(float(np.mean(list(originals.values()))), 4) if originals else 0.0,
        "lowered": {k: round(float(np.mean(v)), 4) if v else 0.0 for k, v in lowered.items()},
    }


def evaluate(path: Path, limit: int = 0, seed: int = 13, tagger: Any = None) -> dict[str, Any]:
    started = time.perf_counter()
    reports = load_reports(path, limit)
    cases = corrupt(reports, seed)
    ours = score_verifier(reports, cases, tagger).result()
    rouge_threshold, rouge = tuned(reports, cases, rouge_l)
    all_sentences = [s for r in reports for s in r] + [s for c in cases for s in c.sentences]
    minilm_threshold, minilm = tuned(reports, cases, minilm_similarity(all_sentences))
    return {
        "ours": ours,
        "rouge_l": {**rouge.result(), "threshold": rouge_threshold},
        "minilm": {**minilm.result(), "threshold": minilm_threshold},
        "dynamic_rubric": dynamic_rubric_scores(reports, cases, tagger),
        "reports": len(reports),
        "cases": dict(Counter(c.kind for c in cases)),
        "seconds": round(time.perf_counter() - started, 1),
    }
