"""HealthBench's score, exactly as OpenAI's simple-evals ``healthbench_eval.py`` computes it.

Per example: the points of the met criteria (negative ones subtract) over the points of the
positive criteria; per rubric tag, the same over the criteria with that tag, kept only where they
include a positive one; each example tag takes the example's score. Over examples: the mean of
each metric clipped to [0, 1], with a bootstrap standard deviation of that clipped mean.

A grader may abstain on a criterion (``met is None``): abstained criteria count in neither sum,
``coverage`` says how many were decided, and ``raw_min``/``raw_max`` bound what the score would
be had the grader decided them (the worst case: abstained positive criteria not met, negative
ones met; the best case the other way round). With every criterion decided all three are equal
to HealthBench's score.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from medxiaohe.common.errors import InvalidInput
from medxiaohe.rubric.rubrics import Criterion, Rubric


@dataclass(frozen=True)
class Verdict:
    criterion_id: str
    met: bool | None  # None: the grader abstained
    explanation: str
    grader: str  # which grader decided: "deterministic", "model", ...


class Grader(ABC):
    """Grades a response, criterion by criterion: one Verdict each, in order."""

    name: str

    def grade(
        self, conversation: Sequence[dict[str, str]], completion: str, rubric: Rubric
    ) -> list[Verdict]:
        return self.grade_criteria(conversation, completion, rubric.criteria)

    @abstractmethod
    def grade_criteria(
        self,
        conversation: Sequence[dict[str, str]],
        completion: str,
        criteria: Sequence[Criterion],
    ) -> list[Verdict]:
        """Criteria need not form a rubric (safety criteria are often all negative)."""


@dataclass(frozen=True)
class ExampleScore:
    score: float  # clipped to [0, 1]
    raw: float  # unclipped: negative criteria can take it below 0
    achieved: int
    possible: int
    verdicts: tuple[Verdict, ...]
    tag_scores: Mapping[str, float] = field(default_factory=dict)
    raw_min: float = 0.0  # the raw score, every abstention decided against the response
    raw_max: float = 0.0  # ... and in its favour

    @property
    def score_min(self) -> float:
        return float(np.clip(self.raw_min, 0.0, 1.0))

    @property
    def score_max(self) -> float:
        return float(np.clip(self.raw_max, 0.0, 1.0))

    @property
    def coverage(self) -> float:
        return sum(v.met is not None for v in self.verdicts) / max(1, len(self.verdicts))

    def metrics(self) -> dict[str, float]:
        """What the aggregate averages: the raw score and every tag score."""
        return {"overall_score": self.raw, **self.tag_scores}


def points(criteria: Sequence[Criterion], verdicts: Sequence[Verdict]) -> tuple[int, int]:
    """(achieved, possible) over the decided criteria."""
    decided = [(c, v) for c, v in zip(criteria, verdicts, strict=True) if v.met is not None]
    possible = sum(c.points for c, _ in decided if c.points > 0)
    achieved = sum(c.points for c, v in decided if v.met)
    return achieved, possible


def ratio(criteria: Sequence[Criterion], verdicts: Sequence[Verdict]) -> float | None:
    """Achieved over possible points; None when no decided criterion has positive points."""
    achieved, possible = points(criteria, verdicts)
    return achieved / possible if possible > 0 else None


def bounds(criteria: Sequence[Criterion], verdicts: Sequence[Verdict]) -> tuple[float, float]:
    """The raw score with every abstention decided against the response, and in its favour."""
    possible = sum(c.points for c in criteria if c.points > 0)
    if possible == 0:
        return 0.0, 0.0
    met = sum(c.points for c, v in zip(criteria, verdicts, strict=True) if v.met)
    open_ = [c.points for c, v in zip(criteria, verdicts, strict=True) if v.met is None]
    worst = met + sum(p for p in open_ if p < 0)
    best = met + sum(p for p in open_ if p > 0)
    return worst / possible, best / possible


def score_example(
    rubric: Rubric, verdicts: Sequence[Verdict], example_tags: Iterable[str] = ()
) -> ExampleScore:
    if [v.criterion_id for v in verdicts] != [c.id for c in rubric.criteria]:
        raise InvalidInput("one verdict per criterion, in the rubric's order")
    achieved, possible = points(rubric.criteria, verdicts)
    raw = achieved / possible if possible > 0 else 0.0
    tags: dict[str, float] = {tag: raw for tag in example_tags}
    by_tag: dict[str, list[int]] = defaultdict(list)
    for i, criterion in enumerate(rubric.criteria):
        for tag in dict.fromkeys(criterion.tags):
            by_tag[tag].append(i)
    for tag, indexes in by_tag.items():
        value = ratio([rubric.criteria[i] for i in indexes], [verdicts[i] for i in indexes])
        if value is not None:
            tags[tag] = value
    low, high = bounds(rubric.criteria, verdicts)
    return ExampleScore(
        score=float(np.clip(raw, 0.0, 1.0)),
        raw=raw,
        achieved=achieved,
        possible=possible,
        verdicts=tuple(verdicts),
        tag_scores=tags,
        raw_min=low,
        raw_max=high,
    )


def aggregate(
    examples: Sequence[Mapping[str, float]], rounds: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per metric over the examples that have it: the mean clipped to [0, 1], the bootstrap
    standard deviation of that clipped mean, and the number of examples."""
    values: dict[str, list[float]] = defaultdict(list)
    for metrics in examples:
        for name, value in metrics.items():
            values[name].append(value)
    rng = np.random.default_rng(seed)
    out = {}
    for name, found in sorted(values.items()):
        array = np.asarray(found, dtype=float)
        samples = rng.choice(array, size=(rounds, len(array)), replace=True)
        out[name] = {
            "mean": float(np.clip(array.mean(), 0, 1)),
            "bootstrap_std": float(np.clip(samples.mean(axis=1), 0, 1).std()),
            "n_samples": len(array),
        }
    return out
