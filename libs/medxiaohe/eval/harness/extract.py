"""Answer extraction as a benchmark paper would accept it: a JSON answer when the reply holds
one, else an option letter the reply states, else the text of exactly one option, else
unparsed (None: counted wrong, and reported). ``mirage_choice`` is MIRAGE's own extraction
(``locate_answer``, in its order, with its fall-back to "A"), for reproducing its numbers."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
ANSWER_KEYS = ("answer", "answer_choice", "final_answer")
MAX_REPLY = 20_000  # characters looked at: regex work stays bounded
STATED = (
    # "The answer is B", "Answer: (B)", "correct option is B"
    re.compile(r"\b(?i:answer|option|choice)\s*(?:is|:)?\s*\(?([A-E])\b(?![\w'])"),
    re.compile(r"^\s*\(?([A-E])\)?\s*(?:[.):]|$|\s)"),  # "B", "B.", "(B) text" at the start
)


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def json_answer(reply: str) -> str | None:
    """The value of an ``answer`` key in the first JSON object of the reply that has one
    (empty when that answer is empty: the reply answered nothing)."""
    reply = reply[:MAX_REPLY]
    candidates = [reply.strip(), *JSON_OBJECT.findall(reply)]
    for candidate in candidates:
        try:
            value: Any = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            for key in ANSWER_KEYS:
                if isinstance(value.get(key), str | int | float):
                    return str(value[key]).strip()
    return None


def option_text(reply: str, options: Mapping[str, str]) -> str | None:
    """The letter of the one option whose words the reply contains (the longest such option
    wins when one option's words contain another's)."""
    said = f" {_words(reply)} "
    texts = {k: _words(v) for k, v in options.items()}
    found = [k for k, t in texts.items() if t and f" {t} " in said]
    found = [k for k in found if not any(k != o and texts[k] in texts[o] for o in found)]
    return found[0] if len(found) == 1 else None


def extract_choice(reply: str, options: Mapping[str, str]) -> str | None:
    """The option letter the reply gives, or None (unparsed)."""
    reply = reply[:MAX_REPLY]
    stated = json_answer(reply)
    if stated is not None:
        letter = stated.strip("() .").upper()
        if letter in options:
            return letter
        return option_text(stated, options)
    for pattern in STATED:
        found = pattern.search(reply)
        if found and found.group(1).upper() in options:
            return found.group(1).upper()
    return option_text(reply, options)


def extract_short(reply: str) -> str | None:
    """A short answer (VQA): the JSON answer, else the reply's first line; lower case, without
    surrounding punctuation."""
    stated = json_answer(reply)
    text = stated if stated is not None else (reply.strip().splitlines() or [""])[0]
    text = text.strip().lower().strip(" .!?\"'")
    return text or None


MIRAGE_PATTERNS = (
    r"^\s*(A|B|C|D)$",
    r"^\s*(A|B|C|D) or",
    r"^\s*(A|B|C|D) and",
    r"^\s*(A|B|C|D)/",
    r"^\s*(A|B|C|D),",
    r"[Oo]ption (A|B|C|D)",
    r":\s*(A|B|C|D)",
    r"^\s*(A|B|C|D)\.",
    r"^\s*(A|B|C|D)\"",
    r"^\s*(A|B|C|D):",
)


def mirage_choice(reply: str) -> tuple[str, bool]:
    """MIRAGE's extraction of one raw output: (letter, parsed). It reads what follows the last
    ``"answer_choice": "`` and tries its patterns in its order; when none matches it answers
    "A" (parsed False), as MIRAGE's evaluate.py does."""
    tail = reply[:MAX_REPLY].split('"answer_choice": "')[-1].strip()
    for pattern in MIRAGE_PATTERNS:
        found = re.findall(pattern, tail)
        if found:
            return found[0].upper(), True
    return "A", False
