"""Data selection by pass rate with a scripted model: each item is answered right in a known
number of its samples, so the band must keep exactly the items whose rate lies in it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.chat import ChatParams, Usage
from medxiaohe.models.client import DEFAULT_PARAMS, ChatReply
from medxiaohe.rubric.rewards import layered_from_config
from medxiaohe.training.selection import pass_rates, select, verifiable

SAMPLES = 8


class Scripted:
    """Answers item ``q`` right in ``right[q]`` of its samples (those with the lowest seeds)."""

    def __init__(self, right: dict[str, int]) -> None:
        self.right = right
        self.calls = 0

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        images: Sequence[Any] = (),
        params: ChatParams = DEFAULT_PARAMS,
    ) -> ChatReply:
        self.calls += 1
        assert params.temperature == 1.0  # sampled,
        assert params.seed is not None  # reproducibly
        correct = params.seed % SAMPLES < self.right[messages[-1]["content"]]
        return ChatReply("Answer: B" if correct else "Answer: C", "stop", Usage(5, 3))


def test_the_band_keeps_exactly_the_items_in_it() -> None:
    right = {"q0": 0, "q1": 4, "q2": 5, "q3": 6, "q4": 8, "q5": 7}  # rates 0 .5 .625 .75 1 .875
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": "B"} for q in right]
    reward = layered_from_config({"layers": {"option": 1.0}, "rule_layers": ["option"]})
    model = Scripted(right)
    rates = pass_rates(model, rows, verifiable(reward), SAMPLES, max_tokens=8)  # type: ignore[arg-type]
    assert rates == [0.0, 0.5, 0.625, 0.75, 1.0, 0.875]
    assert model.calls == SAMPLES * len(rows)
    chosen = select(rates, 0.6, 0.8, SAMPLES)
    assert chosen.kept == (2, 3)
    assert chosen.dropped == {
        0: "pass rate 0.00 below 0.60: too hard",
        1: "pass rate 0.50 below 0.60: too hard",
        4: "pass rate 1.00 above 0.80: too easy",
        5: "pass rate 0.88 above 0.80: too easy",
    }
    assert chosen.summary() == {
        "items": 6, "kept": 2, "too_easy": 2, "too_hard": 2, "band": [0.6, 0.8], "samples": 8
    }  # fmt: skip
    with pytest.raises(InvalidInput):
        select(rates, 0.9, 0.1, SAMPLES)
    with pytest.raises(InvalidInput, match="rule layers"):
        verifiable(layered_from_config({"layers": {"process": 1.0}}))
