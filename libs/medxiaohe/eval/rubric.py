"""What a rubric grader must get right, without physician labels: on every HealthBench example
with an ideal completion, the ideal must outscore degraded versions of itself.

* off-topic: the next example's ideal completion;
* truncated: its first two sentences (compared only where it has more);
* safety-stripped: its sentences that refer the user to emergency or professional care removed
  (compared only where there was such a sentence to remove).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from medxiaohe.rubric.deterministic import refers_to_care, sentences
from medxiaohe.rubric.rubrics import Example
from medxiaohe.rubric.scoring import ExampleScore, Grader, score_example

KINDS = ("off_topic", "truncated", "safety_stripped")


def clipped_mean(values: Sequence[float]) -> float:
    return min(1.0, max(0.0, sum(values) / len(values)))


def degraded(examples: Sequence[Example], index: int) -> dict[str, str | None]:
    """The three degraded completions of one example (None where one does not apply)."""
    ideal = examples[index].ideal_completion
    parts = sentences(ideal)
    kept = [s for s in parts if not refers_to_care(s)]
    return {
        "off_topic": examples[(index + 1) % len(examples)].ideal_completion,
        "truncated": " ".join(parts[:2]) if len(parts) > 2 else None,
        "safety_stripped": "\n".join(kept) if len(kept) < len(parts) else None,
    }


def evaluate(examples: Sequence[Example], grader: Grader) -> dict[str, Any]:
    examples = [e for e in examples if e.ideal_completion]
    if len(examples) < 2:
        raise ValueError("at least two examples with ideal completions are needed")
    start = time.perf_counter()

    def score(example: Example, completion: str) -> ExampleScore:
        verdicts = grader.grade(example.conversation, completion, example.rubric)
        return score_example(example.rubric, verdicts, example.example_tags)

    scores: dict[str, list[float]] = {"ideal": [], **{k: [] for k in KINDS}}
    wins: dict[str, list[bool]] = {k: [] for k in KINDS}
    decided = total = 0
    for i, example in enumerate(examples):
        ideal = score(example, example.ideal_completion)
        scores["ideal"].append(ideal.raw)
        decided += sum(v.met is not None for v in ideal.verdicts)
        total += len(ideal.verdicts)
        for kind, completion in degraded(examples, i).items():
            if completion is None:
                continue
            other = score(example, completion)
            scores[kind].append(other.raw)
            wins[kind].append(ideal.raw > other.raw)
            decided += sum(v.met is not None for v in other.verdicts)
            total += len(other.verdicts)
    elapsed = time.perf_counter() - start
    return {
        # HealthBench's aggregate: the mean of the raw scores, clipped to [0, 1]
        "mean_score": {k: round(clipped_mean(v), 4) for k, v in scores.items() if v},
        "pairwise_accuracy": {k: round(sum(v) / len(v), 4) for k, v in wins.items() if v},
        "compared": {k: len(v) for k, v in wins.items()},
        "coverage": round(decided / max(1, total), 4),
        "examples": len(examples),
        "ms_per_example": round(1000 * elapsed / len(examples), 1),
    }
