"""Short answers (VQA), and MIRAGE's own extraction (``locate_answer``, in its order, with its
fall-back to "A") for reproducing its numbers. Option answers: ``medxiaohe.rubric.answers``."""

from __future__ import annotations

import re

from medxiaohe.rubric.answers import MAX_REPLY, json_answer


def extract_short(reply: str) -> str | None:
    """A short answer (VQA): the JSON answer, else the reply's first line; lower case, without
    surrounding punctuation."""
    stated = json_answer(reply[:MAX_REPLY])
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
