"""The one extractor of option answers: the harness, every reward, pass-rate selection and RFT
read a reply's choice with ``extract_option``, so what training rewards is what evaluation
scores.

In order, on the reply after its last ``</think>``:

1. a JSON ``answer`` (or ``answer_choice``, ``final_answer``): its letter, else the one option
   its text names;
2. the last explicit answer statement: "the answer is (C)", "Answer: **C**", "I choose C",
   "option C is correct" (not "option A is incorrect", not "the answer is not A"); its text
   when it names no letter ("the answer is an iron deficiency anemia");
3. a letter standing alone: at the start ("C.", "(C) ..."), on a line of its own, or the one
   letter in parentheses or bold;
4. the one option whose text the reply states (the longest, when one contains another);
5. else unparsed (None: counted wrong, and reported as a rate).

Option letters are upper case: "a" is an article, never option A, and neither is "A" before a
lower-case word ("A common explanation is ..."), unless that word joins a clause ("A because").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.messages import content_text

MAX_REPLY = 20_000  # characters looked at: regex work stays bounded
LETTERS = "ABCDEFGHIJ"
ANSWER_KEYS = ("answer", "answer_choice", "final_answer")
JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)

_KEYWORD = (
    r"(?i:\b(?P<kind>answer|option|choice)\b(?:\s+(?:is|would\s+be|will\s+be|should\s+be|"
    r"must\s+be))?|\b(?:choose|select|pick|go\s+with)\b)"
)
# "the answer is (C)", "Answer: **C**", "option C": the letter, then what follows it
STATEMENT = re.compile(
    _KEYWORD + r"[ \t*_:=\-]{0,8}[(\[]?(?P<letter>[A-J])(?![A-Za-z0-9])(?P<close>[)\].:*]?)"
)
# "the answer is an iron deficiency anemia": the text of a statement that names no letter
STATED_TEXT = re.compile(r"(?i:\banswer\s*(?:is|would\s+be|:))[ \t*_]{0,8}(?P<text>[^\n.;]{1,200})")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.I)
# words after a bare letter that make it a choice, not an article ("A because ...")
_JOINS = frozenset(
    {"because", "since", "as", "is", "was", "which", "and", "or", "given", "due", "for", "with"}
    | {"so", "but", "it", "this", "that"}
)
# "option A is incorrect", "option A (anemia) is less likely": a rejected choice
_REJECTED = re.compile(
    r"^[ \t]*(?:\([^)\n]{0,80}\)[ \t]*)?(?:,[^,\n]{0,80},[ \t]*)?(?:is|are|seems|appears|"
    r"would\s+be)?[ \t]*(?:not\b|incorrect|wrong|false|unlikely|less\s+likely|excluded|"
    r"ruled\s+out|eliminated)",
    re.I,
)
_NEGATED = re.compile(r"(?i:\bnot|\bexcept|\bexclude)[ \t]*$")
LEADING = re.compile(r"^[ \t*_]*[(\[]?([A-J])(?:[)\].:]|\*\*|[ \t]*$|[ \t]+[-\u2013\u2014])")
# a second choice in one answer: "A/B", "A or B.", "A. x and C. y"
_SECOND = re.compile(r"(?:/|\bor\b|\band\b|,)\s*\(?[A-J](?:[.)/,]|\s*$|\s+(?:or|and)\b)")
LONE_LINE = re.compile(r"^[ \t*_>#-]*[(\[]?([A-J])[)\].:]?[ \t*_]*$")
MARKED = re.compile(r"\(([A-J])\)|\*\*([A-J])[.)]?\*\*")
_OPTION_LINE = re.compile(r"^[ \t]*[(\[]?([A-J])[.):\]][ \t]+(\S[^\n]*)$", re.M)
_OPTION_INLINE = re.compile(r"(?:^| )\(?([A-J])[.)] ?(.+?)(?= \(?[A-J][.)] |$)")


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    how: str  # json, statement, letter, text, unparsed


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def json_answer(reply: str) -> str | None:
    """The value of an answer key in the first JSON object of the reply that has one (empty
    when that answer is empty: the reply answered nothing)."""
    reply = reply[:MAX_REPLY]
    for candidate in (reply.strip(), *JSON_OBJECT.findall(reply)):
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
    said = f" {_words(_ARTICLE.sub('', reply.strip()))} "
    texts = {k: _words(v) for k, v in options.items()}
    found = [k for k, t in texts.items() if t and f" {t} " in said]
    found = [k for k in found if not any(k != o and texts[k] in texts[o] for o in found)]
    return found[0] if len(found) == 1 else None


def options_from_prompt(prompt: Any) -> dict[str, str]:
    """The options a question lists ("A. ibuprofen" lines, or inline "A) ibuprofen B) aspirin"),
    from a prompt string or chat messages (the last user turn); letters from A in order."""
    text = _prompt_text(prompt)[:MAX_REPLY]
    # inline, whitespace runs are one space: the lookahead then scans no run twice (linear)
    for pattern, said in ((_OPTION_LINE, text), (_OPTION_INLINE, " ".join(text.split()))):
        found: dict[str, str] = {}
        for letter, body in pattern.findall(said):
            if letter == "A":  # a later list restarts (the last question of a few-shot prompt)
                found = {}
            if len(found) < len(LETTERS) and letter == LETTERS[len(found)]:
                found[letter] = body.strip()
        if len(found) >= 2:
            return found
    return {}


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence):
        turns = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return content_text(turns[-1].get("content") if turns else "")
    return ""


def _body(reply: str) -> str:
    """The reply after its reasoning: the text after the last ``</think>`` when there is any."""
    reply = reply[:MAX_REPLY]
    after = reply.rsplit("</think>", 1)[-1]
    return after if after.strip() else reply


def _json_letter(stated: str, letters: str) -> str | None:
    """A JSON answer's letter: "C", "(c)", "C. Not recalled"; none when it names two ("A/B",
    "A. 1 kg or B. 2 kg")."""
    bare = stated.strip("() .*")
    if len(bare) == 1:
        return bare.upper() if bare.upper() in letters else None
    found = LEADING.match(stated)
    if found is None or found.group(1) not in letters or _SECOND.search(stated[found.end() :]):
        return None
    return found.group(1)


def _statement(body: str, letters: str) -> str | None:
    """The letter of the last explicit answer statement that is not a rejection."""
    chosen = None
    for found in STATEMENT.finditer(body):
        letter = found.group("letter")
        if letter not in letters or _NEGATED.search(
            body[max(0, found.start() - 12) : found.start()]
        ):
            continue
        rest = body[found.end() : found.end() + 160]
        if not found.group("close"):
            word = re.match(r"[ \t]+([a-z]+)", rest)
            if word and word.group(1) not in _JOINS:
                continue  # "the answer is A common cause": an article
        if (
            found.group("kind")
            and found.group("kind").lower() != "answer"
            and _REJECTED.match(rest)
        ):
            continue  # "option A is incorrect"
        chosen = letter
    return chosen


def _standing_letter(body: str, letters: str) -> str | None:
    found = LEADING.match(body)
    if found and found.group(1) in letters:
        return found.group(1)
    lines = [m.group(1) for line in body.splitlines() if (m := LONE_LINE.match(line))]
    lines = [x for x in lines if x in letters]
    if lines:
        return lines[-1]
    marked = {a or b for a, b in MARKED.findall(body)} & set(letters)
    return marked.pop() if len(marked) == 1 else None


def extraction(reply: str, options: Mapping[str, str] | None = None) -> Extraction:
    """The option a reply chooses and how it was read. ``options``: letter -> text; without
    them any letter A-J is read and no option text."""
    options = options or {}
    letters = "".join(options) or LETTERS
    body = _body(reply)
    stated = json_answer(body)
    if stated is not None:
        letter = _json_letter(stated, letters)
        if letter is not None:
            return Extraction(letter, "json")
        named = option_text(stated, options) if not _SECOND.search(stated) else None
        return Extraction(named, "json" if named else "unparsed")
    letter = _statement(body, letters)
    if letter is not None:
        return Extraction(letter, "statement")
    for found in reversed(list(STATED_TEXT.finditer(body))):
        named = option_text(found.group("text"), options)
        if named is not None:
            return Extraction(named, "statement")
    letter = _standing_letter(body, letters)
    if letter is not None:
        return Extraction(letter, "letter")
    named = option_text(body, options)
    return Extraction(named, "text") if named else Extraction(None, "unparsed")


def extract_option(reply: str, options: Mapping[str, str] | None = None) -> str | None:
    """The option letter the reply chooses, or None (unparsed)."""
    return extraction(reply, options).letter


def choice_summary(chosen: Sequence[str | None], gold: Sequence[str]) -> dict[str, Any]:
    """Accuracy beside what a position bias or a collapsed policy would show: balanced
    accuracy (the mean of per-letter recall over the gold letters), the share of items given
    the most frequent answer, the most frequent gold letter's share (what a constant answer
    scores) and the unparsed rate."""
    if len(chosen) != len(gold):
        raise ValueError("one chosen answer per gold answer")
    n = len(gold)
    if not n:
        return {"items": 0}
    right = [c == g for c, g in zip(chosen, gold, strict=True)]
    recalls = [
        sum(r for r, g in zip(right, gold, strict=True) if g == letter) / gold.count(letter)
        for letter in sorted(set(gold))
    ]
    answered = [c for c in chosen if c is not None]
    top = max((answered.count(c) for c in set(answered)), default=0)
    return {
        "items": n,
        "accuracy": round(sum(right) / n, 4),
        "balanced_accuracy": round(sum(recalls) / len(recalls), 4),
        "top_answer_share": round(top / n, 4),
        "constant_answer": round(max(gold.count(g) for g in set(gold)) / n, 4),
        "unparsed_rate": round((n - len(answered)) / n, 4),
    }
