"""Rewriting chest X-ray report sentences for the grounding evaluation, with its own word lists
(it never asks the verifier, its reader or its vocabulary what a sentence says):

* ``paraphrase``: the same content in other words: synonyms, other sentence forms ("There is
  no X." / "No X is seen." / "X: none."), lists joined ("No X. No Y." / "No X or Y.");
* ``corrupt``: one error of a kind in a sentence: ``negation`` (asserted <-> denied),
  ``laterality`` (left <-> right), ``location`` (upper <-> lower, apex <-> base), ``severity``
  (small <-> large, mild <-> severe);
* which sentences deny, which state a finding (``stating``), and which are normal statements,
  by surface cues.

Every rule either applies cleanly or returns None: a case is built only where its rule fits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

_W = r"(?<![A-Za-z])"  # word start
_E = r"(?![A-Za-z])"  # word end

# -- surface cues ---------------------------------------------------------------------------

_NEGATIVE = re.compile(
    rf"{_W}(no|not|without|negative|free of|none|absent|resolved|removed|clear|normal|"
    rf"unremarkable|intact|within normal limits|unchanged|stable|midline)({_E})",
    re.I,
)
_FUNCTION_WORDS = """the a an and or of in on at to for by with is are was were be been there this
that these those it its as from into than then also both either each which who may might could
would should can seen noted identified present evidence demonstrated visualized appear appears
again otherwise xxxx stable"""
_STOP = frozenset(_FUNCTION_WORDS.split())
# words of a report's structure, not of what it finds
_STRUCTURE_WORDS = """chest view views lateral frontal exam examination comparison study film
films findings impression technique portable upright supine pelvis abdomen"""
_STRUCTURE = frozenset(_STRUCTURE_WORDS.split())


_SPLIT = re.compile(r"(?<=[.!?])\s+|(?<=[a-z]\.)(?=[A-Z])|(?:^|\s)\d\.\s+")


def split(text: str) -> list[str]:
    """Sentences, by punctuation and list numbers."""
    return [s.strip() for s in _SPLIT.split(text) if s and re.search(r"[A-Za-z]{2}", s)]


def denies(sentence: str) -> bool:
    """A negative or normal statement (by its cue words)."""
    return bool(_NEGATIVE.search(sentence))


def content(sentence: str) -> set[str]:
    """Lower-case content words (4 letters or more, not function words)."""
    return {w for w in re.findall(r"[a-z]+", sentence.lower()) if len(w) > 3 and w not in _STOP}


def stating(sentence: str) -> bool:
    """States a finding: no negative or normal cue, and two content words that are not about
    the report's structure ("Chest.", "PA and lateral views")."""
    return not denies(sentence) and len(content(sentence) - _STRUCTURE) >= 2


# -- paraphrase -----------------------------------------------------------------------------

# (pattern, alternatives): one alternative is drawn per match
SYNONYMS: list[tuple[str, tuple[str, ...]]] = [
    (r"pleural effusions", ("pleural fluid collections", "effusions")),
    (r"pleural effusion", ("effusion", "pleural fluid")),
    (r"pneumothoraces", ("pneumothorax",)),
    (r"focal airspace disease", ("focal consolidation", "focal airspace opacity")),
    (r"airspace disease", ("airspace opacity", "consolidation")),
    (r"consolidation", ("airspace consolidation",)),
    (r"opacities", ("densities", "opacifications")),
    (r"opacity", ("density", "opacification")),
    (r"infiltrates?", ("opacity", "airspace opacity")),
    (r"cardiomegaly", ("cardiac enlargement", "an enlarged heart")),
    (r"atelectasis", ("atelectatic change", "subsegmental atelectasis")),
    (r"calcified granulomas?", ("calcified nodule", "granulomatous calcification")),
    (r"granulomas", ("granulomata",)),
    (r"scarring", ("scar", "fibrotic scarring")),
    (r"degenerative changes", ("degenerative disease", "spondylosis")),
    (r"degenerative change", ("degenerative disease",)),
    (r"hyperexpanded", ("hyperinflated", "overinflated")),
    (r"hyperinflated", ("hyperexpanded", "overinflated")),
    (r"emphysema", ("emphysematous change",)),
    (r"\bcopd\b", ("chronic obstructive pulmonary disease",)),
    (r"pulmonary edema", ("pulmonary oedema", "interstitial edema")),
    (r"pneumonia", ("infectious pneumonia", "pneumonic consolidation")),
    (r"nodules", ("nodular opacities",)),
    (r"nodule", ("nodular opacity",)),
    (r"within normal limits", ("normal", "unremarkable")),
    (r"unremarkable", ("normal", "within normal limits")),
    (r"(?:is|are) intact", ("are unremarkable", "are without abnormality")),
    (r"osseous structures", ("bones", "bony structures")),
    (r"bony structures", ("osseous structures", "bones")),
    (r"cardiomediastinal silhouette", ("heart and mediastinum", "cardiomediastinal contour")),
    (r"mediastinal contours", ("mediastinum", "mediastinal silhouette")),
    (r"pulmonary vascularity", ("pulmonary vasculature", "pulmonary vessels")),
    (r"heart size", ("cardiac size", "size of the heart")),
    (r"\bmild\b", ("slight", "minimal")),
    (r"\bmildly\b", ("slightly",)),
    (r"\bsmall\b", ("tiny", "small-sized")),
    (r"\blarge\b", ("sizable", "large-sized")),
    (r"\bleft(?![- ]sided)\b", ("left-sided",)),
    (r"\bright(?![- ]sided)\b", ("right-sided",)),
    (r"upper lobe", ("upper lung zone", "upper lobe region")),
    (r"lower lobe", ("lower lung zone", "lower lobe region")),
    (r"lung base", ("lung basilar region", "base of the lung")),
    (r"\bapex\b", ("apical region",)),
    (r"tortuous", ("ectatic", "unfolded")),
    (r"thoracic spine", ("thoracic vertebrae",)),
    (r"\bnoted\b", ("seen", "identified")),
    (r"\bidentified\b", ("seen", "visualized")),
]
_SYNONYMS = [(re.compile(rf"{_W}{p}{_E}", re.I), alts) for p, alts in SYNONYMS]

# sentence forms: (pattern, template) with {x} the rest; one that matches is applied
FORMS: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (
        re.compile(r"^there (?:is|are) no (?:evidence of )?(?P<x>[^.;]+?)\.?$", re.I),
        ("No {x} is seen.", "No evidence of {x}.", "{X} is not seen."),
    ),
    (
        re.compile(r"^no (?:evidence of )?(?P<x>[^.;]+?)\.?$", re.I),
        ("There is no {x}.", "Negative for {x}.", "No {x} is identified."),
    ),
    (
        re.compile(r"^there (?:is|are) (?:a |an )?(?P<x>[^.;]+?)\.?$", re.I),
        ("{X} is seen.", "{X} is noted.", "Findings include {x}."),
    ),
    (
        re.compile(r"^(?:the )?lungs are clear\.?$", re.I),
        ("Clear lungs.", "The lungs are free of focal opacity.", "Both lungs are clear."),
    ),
    (
        re.compile(
            r"^(?:the )?heart (?:size )?is (?:normal|within normal limits)(?: in size)?\.?$", re.I
        ),
        ("Normal heart size.", "The heart is not enlarged.", "Heart size within normal limits."),
    ),
    (
        re.compile(r"^no acute cardiopulmonary (?:abnormality|disease|process)\.?$", re.I),
        (
            "No acute cardiopulmonary disease.",
            "No acute abnormality of the chest.",
            "No evidence of acute cardiopulmonary process.",
        ),
    ),
]


def _fill(template: str, rest: str) -> str:
    return template.replace("{x}", rest).replace("{X}", rest[:1].upper() + rest[1:])


def _chooser(alternatives: Sequence[str], rng: random.Random) -> Callable[[re.Match[str]], str]:
    return lambda _match: rng.choice(alternatives)


def paraphrase(sentence: str, rng: random.Random) -> str:
    """The sentence in other words (synonyms, then another sentence form), or as it was."""
    text = sentence.strip()
    for pattern, alternatives in _SYNONYMS:
        if rng.random() < 0.7:
            text = pattern.sub(_chooser(alternatives, rng), text)
    for pattern, templates in FORMS:
        match = pattern.match(text)
        if match and rng.random() < 0.8:
            rest = match.groupdict().get("x") or ""
            text = _fill(rng.choice(templates), rest)
            break
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


_BARE_NO = re.compile(r"^(?:there (?:is|are) )?no (?P<x>[^.,;]+?)\.?$", re.I)


def join_lists(sentences: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
    """Adjacent short denials joined into a list ("No X. No Y." -> "No X or Y."), each with the
    positions of the sentences it came from."""
    out: list[tuple[str, tuple[int, ...]]] = []
    for i, sentence in enumerate(sentences):
        match = _BARE_NO.match(sentence.strip())
        previous = _BARE_NO.match(out[-1][0]) if out and len(out[-1][1]) == 1 else None
        if match and previous and len(match.group("x").split()) <= 3:
            merged = f"No {previous.group('x')} or {match.group('x')}."
            out[-1] = (merged, (*out[-1][1], i))
        else:
            out.append((sentence, (i,)))
    return out


# -- corruption -----------------------------------------------------------------------------


def _swap(pairs: Sequence[tuple[str, str]]) -> Callable[[str], str | None]:
    table = {a.lower(): b for a, b in pairs} | {b.lower(): a for a, b in pairs}
    pattern = re.compile(
        rf"{_W}({'|'.join(sorted(map(re.escape, table), key=len, reverse=True))}){_E}", re.I
    )

    def apply(sentence: str) -> str | None:
        if denies(sentence):
            return None  # "no left effusion" -> "no right effusion" is not an error

        def other(match: re.Match[str]) -> str:
            word = table[match.group(1).lower()]
            return word[:1].upper() + word[1:] if match.group(1)[0].isupper() else word

        changed = pattern.sub(other, sentence)
        return changed if changed != sentence else None

    return apply


swap_sides = _swap([("left", "right")])
swap_location = _swap(
    [
        ("upper", "lower"),
        ("apex", "base"),
        ("apices", "bases"),
        ("apical", "basilar"),
        ("superior", "inferior"),
    ]
)
swap_severity = _swap(
    [
        ("small", "large"),
        ("mild", "severe"),
        ("mildly", "markedly"),
        ("minimal", "extensive"),
        ("tiny", "large"),
        ("slight", "marked"),
        ("trace", "large"),
    ]
)

_TO_POSITIVE = (
    (re.compile(r"\b(there (?:is|are)) no (?:evidence of )?", re.I), r"\1 "),
    (re.compile(r"^no (?:evidence of )?", re.I), ""),
    (re.compile(r"\bnegative for\b", re.I), "positive for"),
    (re.compile(r"\bwithout\b", re.I), "with"),
    (re.compile(r"\b(is|are) not (seen|identified|present|visualized)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(lungs? (?:is|are)) clear\b", re.I), r"\1 not clear"),
    (
        re.compile(r"\b((?:is|are)) (?:normal|within normal limits|unremarkable)\b", re.I),
        r"\1 abnormal",
    ),
    (re.compile(r"^normal\b", re.I), "Abnormal"),
)
_TO_NEGATIVE = (
    (re.compile(r"\b(there (?:is|are))(?: an?)? ", re.I), r"\1 no "),
    (re.compile(r"\b(is|are) (seen|noted|present|identified)\b", re.I), r"\1 not \2"),
)


_NOT_A_FINDING = re.compile(
    r"\b(?:no|without|negative for) (?:\w+ )?(?:change|comparison|prior|previous)|"
    r"^(?:the|a|an|this|these|there|patient|comparison|with|no|if|recommend)\b",
    re.I,
)
_VERB = re.compile(r"\b(?:is|are|was|were|has|have|had|appears?|seen|noted)\b", re.I)


def flip(sentence: str) -> str | None:
    """The sentence with its assertion flipped, or None when no rule fits (nor on "no
    change", "without comparison")."""
    if re.search(
        r"\b(?:no|without|negative for) (?:\w+ )?(?:change|comparison|prior)", sentence, re.I
    ):
        return None
    rules = _TO_POSITIVE if denies(sentence) else _TO_NEGATIVE
    for pattern, replacement in rules:
        changed, count = pattern.subn(replacement, sentence, count=1)
        if count and changed != sentence:
            return changed[:1].upper() + changed[1:]
    bare = not _VERB.search(sentence) and not _NOT_A_FINDING.search(sentence)
    if bare and stating(sentence):  # a bare finding: "Small left effusion."
        return "No " + sentence[:1].lower() + sentence[1:]
    return None


CORRUPTIONS: dict[str, Callable[[str], str | None]] = {
    "negation": flip,
    "laterality": swap_sides,
    "location": swap_location,
    "severity": swap_severity,
}
