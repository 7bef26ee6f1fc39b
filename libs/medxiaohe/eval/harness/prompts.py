"""One prompt template per kind of item and mode (``prompts.json``, versioned as a whole):
zero-shot by default, or "thinking", which asks for the reasoning before the answer. Multiple
choice (and every thinking-mode answer) is asked as JSON and, where the endpoint constrains
decoding, held to a schema, so even a random-weight model answers in a parseable shape."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.eval.harness.suites import CHOICE, REPORT, RUBRIC, Item

MODES = ("zero-shot", "thinking")
MAX_TOKENS = {CHOICE: 24, "closed": 16, "open": 24, REPORT: 160, RUBRIC: 256}
THINKING_TOKENS = 512


@cache
def templates() -> dict[str, Any]:
    text = resources.files("medxiaohe.eval.harness").joinpath("prompts.json").read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def version(mode: str) -> str:
    """The prompt version a prediction records: the file's version and the mode."""
    return f"{templates()['version']}-{mode}"


def messages(item: Item, mode: str) -> list[dict[str, Any]]:
    """The chat to send for an item (a HealthBench item's own conversation)."""
    if mode not in MODES:
        raise InvalidInput(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    if item.kind == RUBRIC:
        return [dict(m) for m in item.extra["example"].conversation]
    options = "\n".join(f"{k}. {v}" for k, v in item.options.items())
    text = templates()[item.kind][mode].format(question=item.question, options=options)
    return [{"role": "user", "content": text}]


def schema(item: Item, mode: str) -> str | None:
    """The JSON schema the answer is held to, or None for free text."""
    answer: dict[str, Any]
    if item.kind == CHOICE:
        answer = {"type": "string", "enum": list(item.options)}
    elif mode == "thinking" and item.kind in ("closed", "open"):
        answer = {"type": "string", "maxLength": 64}
    else:
        return None
    properties: dict[str, Any] = {"answer": answer}
    if mode == "thinking":
        properties = {"reasoning": {"type": "string", "maxLength": 1000}, **properties}
    body = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return json.dumps(body, separators=(",", ":"))  # in order: the reasoning comes first


def max_tokens(item: Item, mode: str) -> int:
    return THINKING_TOKENS if mode == "thinking" and item.kind != REPORT else MAX_TOKENS[item.kind]
