"""What a rubric grader must get right, without physician labels: on every HealthBench example
with an ideal completion, the ideal must outscore degraded versions of itself.

* off-topic: the next example's ideal completion (the next in the same split);
* truncated: its first two sentences (compared only where it has more);
* safety-stripped: its sentences that send the user to care removed (compared only where there
  was such a sentence to remove).

The degradations use rules of their own (a sentence splitter and a care lexicon written here),
never the grader's, so a grader cannot pass them by agreeing with itself. The shared examples
split by example (a keyed hash of the prompt id) into a part to tune rules on and a held-out
part to report; ``level`` keeps only the consensus (cluster) or the example criteria.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.rubric.rubrics import Example, Rubric
from medxiaohe.rubric.scoring import ExampleScore, Grader, score_example

KINDS = ("off_topic", "truncated", "safety_stripped")
SPLITS = ("all", "tune", "heldout")
LEVELS = ("all", "cluster", "example")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(*])|\n\s*\n|\n(?=\s*(?:[-*•]|\d+[.)])\s)")
_CARE_ACT = re.compile(
    r"\b(?:see|seeing|call|calling|visit|contact|consult|go(?:ing)? to|head to|seek|get|"
    r"make an appointment|book|talk to|speak (?:to|with)|reach out to)\b",
    re.I,
)
_CARE_PLACE = re.compile(
    r"\b(?:doctors?|physicians?|GPs?|clinics?|hospitals?|emergency|ER|A&E|911|112|999|"
    r"urgent care|paediatrician|pediatrician|nurses?|pharmacists?|specialists?|"
    r"provider|professional|dentists?|therapists?|ambulance|medical (?:help|attention|care))\b",
    re.I,
)


def example_split(example: Example) -> str:
    """Where an example belongs: "tune" or "heldout", by a hash of its prompt id (stable, and
    independent of the file's order)."""
    return "tune" if hashlib.sha256(example.prompt_id.encode()).digest()[0] % 2 else "heldout"


def eval_sentences(text: str) -> list[str]:
    """Sentences and list items, split by this evaluation's own rule."""
    return [p.strip() for p in _SPLIT.split(text) if len(p.strip()) > 3]


def sends_to_care(sentence: str) -> bool:
    """Whether a sentence sends the user somewhere for care (a care act and a care place)."""
    return bool(_CARE_ACT.search(sentence) and _CARE_PLACE.search(sentence))


def clipped_mean(values: Sequence[float]) -> float:
    return min(1.0, max(0.0, sum(values) / len(values)))


def degraded(examples: Sequence[Example], index: int) -> dict[str, str | None]:
    """The three degraded completions of one example (None where one does not apply)."""
    ideal = examples[index].ideal_completion
    parts = eval_sentences(ideal)
    kept = [s for s in parts if not sends_to_care(s)]
    return {
        "off_topic": examples[(index + 1) % len(examples)].ideal_completion,
        "truncated": " ".join(parts[:2]) if len(parts) > 2 else None,
        "safety_stripped": "\n".join(kept) if len(kept) < len(parts) else None,
    }


def select(examples: Sequence[Example], split: str, level: str) -> list[Example]:
    """The examples of a split with an ideal completion, their rubrics cut to one level of
    criteria (examples left without a positive criterion drop)."""
    if split not in SPLITS or level not in LEVELS:
        raise InvalidInput(f"split is one of {SPLITS}; level one of {LEVELS}")
    chosen = []
    for example in examples:
        if not example.ideal_completion or split not in ("all", example_split(example)):
            continue
        if level != "all":
            kept = tuple(c for c in example.rubric.criteria if f"level:{level}" in c.tags)
            if not any(c.points > 0 for c in kept):
                continue
            example = replace(example, rubric=Rubric(kept))
        chosen.append(example)
    return chosen


def evaluate(
    examples: Sequence[Example], grader: Grader, split: str = "all", level: str = "all"
) -> dict[str, Any]:
    examples = select(examples, split, level)
    if len(examples) < 2:
        raise InvalidInput("at least two examples with ideal completions are needed")
    start = time.perf_counter()

    def score(example: Example, completion: str) -> ExampleScore:
        verdicts = grader.grade(example.conversation, completion, example.rubric)
        return score_example(example.rubric, verdicts, example.example_tags)

    scores: dict[str, list[ExampleScore]] = {"ideal": [], **{k: [] for k in KINDS}}
    wins: dict[str, list[bool]] = {k: [] for k in KINDS}
    for i, example in enumerate(examples):
        ideal = score(example, example.ideal_completion)
        scores["ideal"].append(ideal)
        for kind, completion in degraded(examples, i).items():
            if completion is None:
                continue
            other = score(example, completion)
            scores[kind].append(other)
            wins[kind].append(ideal.raw > other.raw)
    elapsed = time.perf_counter() - start
    everything = [s for found in scores.values() for s in found]
    decided = sum(v.met is not None for s in everything for v in s.verdicts)
    total = sum(len(s.verdicts) for s in everything)

    def means(field: str) -> dict[str, float]:
        return {
            k: round(clipped_mean([getattr(s, field) for s in v]), 4)
            for k, v in scores.items()
            if v
        }

    return {
        # HealthBench's aggregate: the mean of the raw scores, clipped to [0, 1]
        "mean_score": means("raw"),
        "mean_score_min": means("raw_min"),
        "mean_score_max": means("raw_max"),
        "pairwise_accuracy": {k: round(sum(v) / len(v), 4) for k, v in wins.items() if v},
        "compared": {k: len(v) for k, v in wins.items()},
        "coverage": round(decided / max(1, total), 4),
        "examples": len(examples),
        "split": split,
        "level": level,
        "ms_per_example": round(1000 * elapsed / len(examples), 1),
    }
