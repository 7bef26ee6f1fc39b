"""Rewards for reinforcement learning, with TRL's reward signature
(``reward(prompts, completions, **columns) -> list[float]``; the dataset's other columns arrive
as keyword lists), and the layered reward that composes them:

    total = 0                                           when a safety criterion is met
    total = sum(weight * layer) + shaping               otherwise, |shaping| <= bound

Layers: rule rewards (exact answer, option letter, set match, regex), the rubric score, and the
process reward on the ``<think>`` part. Shaping (length, format) is bounded by ``shaping_bound``,
and the config requires ``2 * shaping_bound < min(rule weights)``: shaping can never flip the
order of a correct and an incorrect answer that the rule layers tell apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.messages import content_text
from medxiaohe.rubric.answers import extract_option, options_from_prompt
from medxiaohe.rubric.rubrics import Criterion, Rubric, criterion_from
from medxiaohe.rubric.scoring import score_example

Reward = Callable[..., list[float]]
STAGES = ("understanding", "observation|recall", "reasoning", "conclusion")
_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S | re.I)


def text_of(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a conversation whose last message is it."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def conversation(prompt: Any) -> list[dict[str, str]]:
    """A prompt as graders read it: messages with text contents (image parts dropped, text
    parts joined); a plain string is one user turn."""
    if not isinstance(prompt, list):
        return [{"role": "user", "content": str(prompt)}]
    return [
        {"role": str(m.get("role", "user")), "content": content_text(m.get("content"))}
        for m in prompt
    ]


def final_answer(text: str) -> str:
    """What the completion answers: a JSON ``answer``, else the text after ``</think>`` and an
    ``Answer:`` label."""
    body = text.split("</think>")[-1].strip()
    try:
        data = json.loads(body)
        if isinstance(data, dict) and "answer" in data:
            return str(data["answer"]).strip()
    except ValueError:
        pass
    label = re.search(r"answer\s*(?:is|:)\s*(.+)", body, re.I)
    return (label.group(1) if label else body).strip().rstrip(".")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def exact_answer(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **_: Any
) -> list[float]:
    """1 when the final answer equals the gold one (case, spacing and punctuation aside).

    >>> exact_answer(["q"], ["<think>...</think>Answer: Iron deficiency."], ["iron deficiency"])
    [1.0]
    """
    return [
        float(_norm(final_answer(text_of(c))) == _norm(a))
        for c, a in zip(completions, answer, strict=True)
    ]


def option_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[str],
    options: Sequence[Mapping[str, str] | None] | None = None,
    **_: Any,
) -> list[float]:
    """1 when the option the completion chooses is the gold one, read by the extractor the
    harness scores with (``medxiaohe.rubric.answers``); the options come from the ``options``
    column, else from the prompt. An unparsed reply earns 0.

    >>> q = "Which drug? A. aspirin B. a bacterial culture C. ibuprofen"
    >>> option_reward([q, q, q], ['{"answer": "C"}', "I think (B).", "It is ibuprofen."], ["C"] * 3)
    [1.0, 0.0, 1.0]
    """
    chosen = []
    for i, completion in enumerate(completions):
        given: Any = options[i] if options is not None else None
        if isinstance(given, str):  # a dataset column of JSON text
            given = json.loads(given) if given else None
        listed = dict(given) if given else options_from_prompt(prompts[i])
        chosen.append(extract_option(text_of(completion), listed))
    return [float(c == a.strip().upper()) for c, a in zip(chosen, answer, strict=True)]


def set_match(
    prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any], **_: Any
) -> list[float]:
    """F1 between the items the completion lists (comma, semicolon or "and" separated) and the
    gold items.

    >>> set_match(["q"], ["Answer: fever, cough and rash"], [["fever", "rash"]])
    [0.8]
    """
    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        wanted = {_norm(g) for g in (gold.split(",") if isinstance(gold, str) else gold)}
        said = {
            _norm(x)
            for x in re.split(r",|;|\band\b", final_answer(text_of(completion)))
            if x.strip()
        }
        hit = len(wanted & said)
        scores.append(round(2 * hit / (len(wanted) + len(said)), 4) if hit else 0.0)
    return scores


def regex_reward(pattern: str) -> Reward:
    """A reward of 1 where the completion matches ``pattern``.

    >>> regex_reward("call 911")(["q", "q"], ["Call 911 now.", "Rest."])
    [1.0, 0.0]
    """
    compiled = re.compile(pattern, re.I)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        return [float(bool(compiled.search(text_of(c)))) for c in completions]

    reward.__name__ = "regex"
    return reward


def process_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    answer: Sequence[str] | None = None,
    **_: Any,
) -> list[float]:
    """The share of the structured stages (Understanding, Observation/Recall, Reasoning,
    Conclusion) that the ``<think>`` part has, in that order; 0 when the gold answer appears in
    it before the Conclusion (an answer leaked, not reasoned to).

    >>> staged = "<think>Understanding: .. Recall: .. Reasoning: .. Conclusion: B</think>B"
    >>> leaked = "<think>B. Reasoning: ..</think>B"
    >>> process_reward(["q", "q"], [staged, leaked], ["B", "B"])
    [1.0, 0.0]
    """
    scores = []
    for i, completion in enumerate(completions):
        think = _THINK.search(text_of(completion))
        if think is None:
            scores.append(0.0)
            continue
        body = think.group(1)
        positions = [re.search(rf"\b(?:{stage})\b", body, re.I) for stage in STAGES]
        found = [m.start() for m in positions if m]
        in_order = found == sorted(found)
        share = len(found) / len(STAGES) if in_order else 0.0
        conclusion = positions[-1].start() if positions[-1] else len(body)
        gold = (answer or [""] * len(completions))[i].strip()
        leaked = bool(gold) and bool(
            re.search(
                rf"(?<!\w){re.escape(gold)}(?!\w)", body[:conclusion], re.I if len(gold) > 1 else 0
            )
        )
        scores.append(0.0 if leaked else share)
    return scores


def item_rubric(value: Any) -> Rubric | Any:
    """A row's ``rubric`` column, checked: a list of criteria (HealthBench's shape: ``criterion``,
    ``points``) gives a Rubric; ``{"findings": [...]}`` (a study's findings: ``text``,
    ``assertion``, ``laterality``, ``site``) gives the study's dynamic report rubric. JSON text of
    either is read too."""
    from medxiaohe.rubric.dynamic import Finding, rubric_for

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            raise InvalidInput("a rubric column holds JSON") from None
    if isinstance(value, dict) and isinstance(value.get("findings"), list) and value["findings"]:
        try:
            return rubric_for([Finding(**f) for f in value["findings"]])
        except TypeError:
            raise InvalidInput("a finding has text, assertion, laterality and site") from None
    if isinstance(value, list) and value:
        return Rubric(tuple(criterion_from(c) for c in value))
    raise InvalidInput("every prompt needs a rubric: a list of criteria, or {'findings': [...]}")


def rubric_reward(grader: Any) -> Reward:
    """The rubric score (HealthBench's, clipped to [0, 1]) of each completion against its row's
    ``rubric`` column (``item_rubric``): criteria graded by ``grader``, a report's dynamic
    rubric by the finding grader (the verifier's reading of the report)."""
    from medxiaohe.rubric.dynamic import DynamicRubric, FindingGrader

    findings = FindingGrader()
    parsed_text: dict[str, Any] = {}  # a prompt's rubric, read once for its many completions

    def rubric_of(value: Any) -> Any:
        if not isinstance(value, str):
            return item_rubric(value)
        if value not in parsed_text:
            parsed_text[value] = item_rubric(value)
        return parsed_text[value]

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        rubric: Sequence[Any] | None = None,
        **_: Any,
    ) -> list[float]:
        if rubric is None:
            raise InvalidInput("the rubric layer needs a 'rubric' column in the prompt data")
        scores = []
        for prompt, completion, value in zip(prompts, completions, rubric, strict=True):
            parsed = rubric_of(value)
            if isinstance(parsed, DynamicRubric):
                verdicts = findings.grade(text_of(completion), parsed)
                scores.append(score_example(parsed.rubric, verdicts).score)
                continue
            verdicts = grader.grade(conversation(prompt), text_of(completion), parsed)
            scores.append(score_example(parsed, verdicts).score)
        return scores

    reward.__name__ = "rubric"
    return reward


@dataclass
class SafetyGate:
    """Critical criteria, each a harm the answer does ("recommends a contraindicated action",
    "tells the user that chest pain needs no urgent care"): any one met zeroes the whole reward.
    A criterion the grader cannot decide does not close the gate (counted in ``abstained``)."""

    criteria: Sequence[Criterion]
    grader: Any
    abstained: int = 0

    def closed(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[bool]:
        shut = []
        for prompt, completion in zip(prompts, completions, strict=True):
            verdicts = self.grader.grade_criteria(
                conversation(prompt), text_of(completion), self.criteria
            )
            self.abstained += sum(v.met is None for v in verdicts)
            shut.append(any(v.met for v in verdicts))
        return shut


@dataclass(frozen=True)
class Shaping:
    """Small, bounded shaping: a format bonus (a closed ``<think>`` then an answer) and a
    length penalty past ``target_words``; the sum is clipped to [-bound, +bound]."""

    bound: float = 0.1
    target_words: int = 400

    def __call__(self, completions: Sequence[Any]) -> list[float]:
        out = []
        for completion in completions:
            text = text_of(completion)
            formatted = bool(re.search(r"</think>\s*\S", text))
            words = len(text.split())
            over = max(0, words - self.target_words) / max(1, self.target_words)
            value = (0.5 if formatted else -0.5) * self.bound - min(1.0, over) * self.bound
            out.append(max(-self.bound, min(self.bound, value)))
        return out


@dataclass
class LayeredReward:
    """``layers``: name -> (reward, weight). Call it as a TRL reward function; ``last`` holds
    each layer's mean, the shaping mean and how many completions the gate zeroed, for logging."""

    layers: Mapping[str, tuple[Reward, float]]
    rule_layers: Sequence[str] = ()
    gate: SafetyGate | None = None
    shaping: Shaping | None = None
    last: dict[str, float] = field(default_factory=dict)
    __name__: str = "layered"

    def __post_init__(self) -> None:
        if not self.layers:
            raise InvalidInput("a layered reward needs at least one layer")
        unknown = set(self.rule_layers) - set(self.layers)
        if unknown:
            raise InvalidInput(f"rule layers {sorted(unknown)} are not layers")
        if self.shaping is not None and self.rule_layers:
            smallest = min(self.layers[name][1] for name in self.rule_layers)
            if not 2 * self.shaping.bound < smallest:
                raise InvalidInput(
                    f"shaping bound {self.shaping.bound} must be under half the smallest rule "
                    f"weight ({smallest}), or shaping could outweigh correctness"
                )

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float]:
        values = {
            name: fn(prompts, completions, **columns) for name, (fn, _) in self.layers.items()
        }
        shaped = self.shaping(completions) if self.shaping else [0.0] * len(completions)
        closed = self.gate.closed(prompts, completions) if self.gate else [False] * len(completions)
        totals = [
            0.0
            if closed[i]
            else sum(w * values[name][i] for name, (_, w) in self.layers.items()) + shaped[i]
            for i in range(len(completions))
        ]
        n = max(1, len(completions))
        self.last = {name: sum(v) / n for name, v in values.items()}
        self.last |= {
            "shaping": sum(shaped) / n,
            "gated": float(sum(closed)),
            "total": sum(totals) / n,
        }
        return totals


# "Fails to refer the user to emergency care" is met by every answer that says nothing of
# emergencies: a gate on it zeroes safe answers and trains over-referral
_ABSENCE = re.compile(
    r"^\s*(?:fails?|failing|does\s+not|doesn't|did\s+not|omits?|neglects?|misses|lacks?|"
    r"never)\b",
    re.I,
)


def gate_criterion(value: Any) -> Criterion:
    """A safety-gate criterion: a harm the answer does ("Recommends aspirin to a child"), never
    the absence of a phrase ("Fails to ...", "Does not ...")."""
    criterion = criterion_from(value)
    if _ABSENCE.match(criterion.text):
        raise InvalidInput(
            f"a gate criterion names a harm the answer does, not what it leaves out: "
            f"{criterion.text[:80]!r}"
        )
    return criterion


RULES: dict[str, Reward] = {
    "exact_answer": exact_answer,
    "option": option_reward,
    "set_match": set_match,
    "process": process_reward,
}


def layered_from_config(config: Mapping[str, Any], grader: Any = None) -> LayeredReward:
    """From a stage config::

    layers: {option: 1.0, rubric: 0.5, process: 0.2}   # names: RULES, "rubric", "regex:<p>"
    rule_layers: [option]
    safety: [{criterion: "Recommends a contraindicated action", points: -10}]
    shaping: {bound: 0.1, target_words: 400}
    """
    layers: dict[str, tuple[Reward, float]] = {}
    for name, weight in dict(config.get("layers") or {}).items():
        if name == "rubric":
            if grader is None:
                raise InvalidInput("the rubric layer needs a grader")
            layers[name] = (rubric_reward(grader), float(weight))
        elif name.startswith("regex:"):
            layers[name] = (regex_reward(name[len("regex:") :]), float(weight))
        elif name in RULES:
            layers[name] = (RULES[name], float(weight))
        else:
            raise InvalidInput(
                f"unknown reward layer {name!r}; known: {sorted(RULES)}, rubric, regex:<pattern>"
            )
    safety = [gate_criterion(c) for c in config.get("safety") or []]
    if safety and grader is None:
        raise InvalidInput("the safety gate needs a grader")
    shaping = config.get("shaping")
    return LayeredReward(
        layers,
        rule_layers=tuple(config.get("rule_layers") or ()),
        gate=SafetyGate(safety, grader) if safety else None,
        shaping=Shaping(**shaping) if shaping else None,
    )
