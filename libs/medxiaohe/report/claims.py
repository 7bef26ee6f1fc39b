"""Claims in report sentences: which observation, asserted how (ConText), on which side.

Observations come from a chest X-ray lexicon (CheXpert's observation classes and their usual
wordings, e.g. "consolidation", "opacity", "heart size is normal") and from the Medical Entity
Tree tagger when one is given (mentions the lexicon does not cover, by node id).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.entities.context import Assertion, assert_spans

# concept -> wordings; "normal:" concepts state the absence of the concept after the colon
LEXICON: dict[str, str] = {
    "cardiomegaly": r"cardiomegaly|cardiac enlargement|enlarged (?:cardiac silhouette|heart)|"
    r"heart (?:size )?(?:is )?(?:mildly |moderately |markedly )?enlarged",
    "normal:cardiomegaly": r"(?:heart|cardiac|cardiomediastinal) (?:size|silhouette|contours?)"
    r"[^.;]{0,40}?\b(?:normal|within normal limits|unremarkable)|normal (?:heart size|cardiac "
    r"silhouette|cardiomediastinal silhouette)",
    "consolidation": r"consolidations?|air ?space (?:disease|opacit(?:y|ies))",
    "opacity": r"opacit(?:y|ies)|opacification|infiltrates?",
    "pleural effusion": r"(?:pleural )?effusions?",
    "pneumothorax": r"pneumothora(?:x|ces)",
    "edema": r"(?:pulmonary |interstitial )?edema|vascular congestion",
    "atelectasis": r"atelectasis|atelectatic",
    "nodule": r"nodules?|nodular (?:opacity|density)|(?:lung |pulmonary )?mass(?:es)?",
    "fracture": r"fractures?",
    "granuloma": r"(?:calcified )?granulomas?",
    "scarring": r"scarring|scars?|fibrosis|fibrotic",
    "emphysema": r"emphysema|emphysematous|hyperinflat\w*|hyperexpan\w*|copd",
    "pneumonia": r"pneumonia",
    "hernia": r"hiatal hernia|hernia",
    "degenerative change": r"degenerative (?:changes?|disease)|spondylosis|osteophytes?",
}
_PATTERNS = {c: re.compile(rf"\b(?:{p})\b", re.I) for c, p in LEXICON.items()}
_SIDE = re.compile(r"\b(left|right|bilateral|both)\b", re.I)
SIDES = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+|(?:^|\s)\d+\.\s")


@dataclass(frozen=True)
class Claim:
    concept: str
    assertion: str  # present, negated, uncertain (historical counts as present)
    side: str  # left, right, bilateral or ""
    start: int
    end: int


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and len(s.strip()) > 2]


def _side(sentence: str, start: int, end: int) -> str:
    """The side word nearest the mention, within its clause."""
    best, distance = "", 10**9
    for match in _SIDE.finditer(sentence):
        between = sentence[min(end, match.start()) : max(start, match.end())]
        if re.search(r"[;,]|\band\b", between) and len(between) > 25:
            continue
        gap = abs(match.start() - start)
        if gap < distance:
            best, distance = SIDES[match.group(1).lower()], gap
    return best


def claims(sentence: str, tagger: Any = None) -> list[Claim]:
    """The claims of one sentence, left to right."""
    spans: list[tuple[str, int, int]] = []
    for concept, pattern in _PATTERNS.items():
        for match in pattern.finditer(sentence):
            spans.append((concept, match.start(), match.end()))
    taken = [(s, e) for _, s, e in spans]
    if tagger is not None:
        for mention in tagger.tag(sentence, assertions=False):
            if mention.node_id and not any(s < mention.end and mention.start < e for s, e in taken):
                spans.append((mention.node_id, mention.start, mention.end))
    spans.sort(key=lambda x: (x[1], x[1] - x[2]))
    kept: list[tuple[str, int, int]] = []
    for span in spans:
        if not kept or span[1] >= kept[-1][2]:
            kept.append(span)
    assertions = assert_spans(sentence, [(s, e) for _, s, e in kept])
    out = []
    for (concept, start, end), assertion in zip(kept, assertions, strict=True):
        if concept.startswith("normal:"):
            concept, value = concept[len("normal:") :], "negated"
        else:
            value = {
                Assertion.NEGATED: "negated",
                Assertion.UNCERTAIN: "uncertain",
            }.get(assertion, "present")
        out.append(Claim(concept, value, _side(sentence, start, end), start, end))
    return out


def report_claims(sentences: Sequence[str], tagger: Any = None) -> list[list[Claim]]:
    return [claims(s, tagger) for s in sentences]
