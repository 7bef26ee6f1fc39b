"""Data selection by pass rate, before an RL stage: sample the current model ``samples``
times per item, score each sample with the reward's verifiable (rule) layers, and keep the
items whose pass rate lies in the band (the paper uses 60-80 %): items the model always
solves teach nothing, items it never solves give no signal. Every dropped item keeps its
reason."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import ModelClient
from medxiaohe.report.images import png
from medxiaohe.rubric.rewards import LayeredReward

Check = Callable[[Sequence[Any], Sequence[Any], Sequence[str]], list[bool]]


@dataclass(frozen=True)
class Selection:
    rates: tuple[float, ...]
    kept: tuple[int, ...]  # row indexes
    dropped: dict[int, str]  # row index -> why
    band: tuple[float, float]
    samples: int

    def summary(self) -> dict[str, Any]:
        reasons = list(self.dropped.values())
        return {
            "items": len(self.rates),
            "kept": len(self.kept),
            "too_easy": sum(r.endswith("too easy") for r in reasons),
            "too_hard": sum(r.endswith("too hard") for r in reasons),
            "band": list(self.band),
            "samples": self.samples,
        }


def verifiable(reward: LayeredReward) -> Check:
    """A sample passes when every rule layer gives it full marks."""
    if not reward.rule_layers:
        raise InvalidInput("data selection needs rule layers (a verifiable answer)")
    layers = [reward.layers[name][0] for name in reward.rule_layers]

    def check(
        prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str]
    ) -> list[bool]:
        scores = [layer(prompts, completions, answer=answer) for layer in layers]
        return [all(s[i] >= 1.0 for s in scores) for i in range(len(completions))]

    return check


def _text_parts(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages without image placeholders: the client places the images itself."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [p for p in content if p.get("type") != "image"]
        out.append({**message, "content": content})
    return out


def sample(
    client: ModelClient, row: dict[str, Any], samples: int, max_tokens: int, seed: int = 0
) -> list[str]:
    """``samples`` replies to a prompt row (temperature 1, seeds ``seed``, ``seed + 1``, ...)."""
    images = [png(i) for i in row.get("images") or []]
    messages = _text_parts(row["prompt"])
    return [
        client.chat(messages, images, ChatParams(max_tokens, temperature=1.0, seed=seed + j)).text
        for j in range(samples)
    ]


def pass_rates(
    client: ModelClient,
    rows: Sequence[dict[str, Any]],
    check: Check,
    samples: int,
    max_tokens: int,
    seed: int = 0,
) -> list[float]:
    """Each row's share of ``samples`` sampled replies that pass."""
    rates = []
    for row in rows:
        replies = sample(client, row, samples, max_tokens, seed)
        passed = check([row["prompt"]] * samples, replies, [row["answer"]] * samples)
        rates.append(sum(passed) / samples)
    return rates


def select(rates: Sequence[float], low: float, high: float, samples: int) -> Selection:
    """Keep ``low <= rate <= high``."""
    if not 0.0 <= low <= high <= 1.0:
        raise InvalidInput("the pass-rate band needs 0 <= low <= high <= 1")
    kept, dropped = [], {}
    for i, rate in enumerate(rates):
        if rate > high:
            dropped[i] = f"pass rate {rate:.2f} above {high:.2f}: too easy"
        elif rate < low:
            dropped[i] = f"pass rate {rate:.2f} below {low:.2f}: too hard"
        else:
            kept.append(i)
    return Selection(tuple(rates), tuple(kept), dropped, (low, high), samples)
