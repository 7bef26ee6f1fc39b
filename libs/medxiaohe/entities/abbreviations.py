"""Abbreviations defined in the text itself: "Duchenne muscular dystrophy (DMD)".

A simplified Schwartz-Hearst rule: a parenthesized short form right after a tagged mention, whose
first letter is the first letter of one of the mention's words, and whose letters appear in the
mention in order, names the mention's node; its later occurrences are tagged with that node.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PAREN = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9-]{1,9})\s*\)")


def _letters_in_order(short: str, long: str) -> bool:
    position = 0
    long = long.lower()
    for ch in short.lower():
        if not ch.isalnum():
            continue
        position = long.find(ch, position)
        if position < 0:
            return False
        position += 1
    return True


def defined_abbreviations(text: str, spans: Sequence[tuple[int, int]]) -> dict[str, int]:
    """Short form -> index of the span it abbreviates."""
    ends = {end: i for i, (_, end) in enumerate(spans)}
    found: dict[str, int] = {}
    for match in _PAREN.finditer(text):
        before = text[: match.start()].rstrip()
        index = ends.get(len(before))
        if index is None:
            continue
        short = match.group(1)
        long = text[spans[index][0] : spans[index][1]]
        initials = {w[0].lower() for w in re.findall(r"[A-Za-z0-9]+", long)}
        if (
            short[0].lower() in initials
            and _letters_in_order(short, long)
            and len(short) < len(long)
        ):
            found.setdefault(short, index)
    return found


def occurrences(text: str, short: str) -> list[tuple[int, int]]:
    """Case-sensitive, whole-word occurrences of a short form."""
    pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(short) + r"(?![A-Za-z0-9])")
    return [(m.start(), m.end()) for m in pattern.finditer(text)]
