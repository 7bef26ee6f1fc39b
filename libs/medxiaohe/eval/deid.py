"""A synthetic PHI test set (generated here, seeded) and per-type recall and precision.

Notes are built from clinical templates with identifiers slotted in and their spans recorded.
Half of the person names come from US census lists, half are invented syllable names that no
list contains, so the rules around names are measured and not only the name dictionary.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medxiaohe.corpus.deid import Phi, PhiSpan

CENSUS_FIRST = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "Linda",
    "Michael",
    "Barbara",
    "David",
    "Susan",
    "Joseph",
    "Karen",
    "Thomas",
    "Nancy",
    "Daniel",
    "Lisa",
    "Paul",
]
CENSUS_LAST = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Taylor",
]
SYLLABLES = ["ka", "ve", "lo", "du", "ya", "mi", "ro", "sen", "tal", "bo", "ri", "na", "zu", "fe"]
STREETS = ["Oak", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Pine"]
SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Blvd", "St"]
CITIES = [("Boston", "MA"), ("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX")]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# {slot} is replaced by a generated identifier of the slot's type; other text is clinical filler.
TEMPLATES = [
    "Patient: {NAME}\nMRN: {ID}\nDate of service: {DATE}\n{AGE}-year-old with type 2 diabetes "
    "mellitus presents with chest pain. Denies fever.",
    "Discharge summary for {NAME}, admitted {DATE} and discharged {DATE}. Follow up with "
    "Dr. {NAME} at {PHONE}. Pneumonia resolved on antibiotics.",
    "{NAME} is a {AGE} y/o woman seen on {DATE} for COPD exacerbation. Address: {ADDRESS}, "
    "{ADDRESS}. Contact: {NAME}, phone {PHONE}.",
    "Radiology report. Accession #: {ID}. Exam date {DATE}. Referring: {NAME}. "
    "Findings: patchy right lower lobe opacity. Impression: possible pneumonia.",
    "Message from {EMAIL} regarding {NAME} (account number {ID}): results posted at {URL} "
    "on {DATE}. Workstation {IP}.",
    "Mrs. {NAME} reports her mother had breast cancer. SSN {ID}. Lives at {ADDRESS}. "
    "Seen on {DATE}, aged {AGE}.",
    "Signed by: {NAME}, MD on {DATE}. cc: {NAME}. Callback {PHONE}. History of seizures, "
    "no recurrence since {DATE}.",
]


@dataclass(frozen=True)
class PhiNote:
    text: str
    spans: tuple[PhiSpan, ...]
    patient_name: str


def _syllable_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _value(kind: str, rng: random.Random, name: str) -> str:
    if kind == "NAME":
        return name if rng.random() < 0.5 else _person(rng)
    if kind == "ID":
        return rng.choice(
            [
                str(rng.randint(10**6, 10**9)),
                f"MRN-{rng.randint(10**5, 10**7)}",
                f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
            ]
        )
    if kind == "DATE":
        y, m, d = rng.randint(1990, 2025), rng.randint(1, 12), rng.randint(1, 28)
        return rng.choice(
            [
                f"{m:02d}/{d:02d}/{y}",
                f"{y}-{m:02d}-{d:02d}",
                f"{MONTHS[m - 1]} {d}, {y}",
                f"{d} {MONTHS[m - 1][:3]} {y}",
                f"{m}/{d}/{y % 100:02d}",
            ]
        )
    if kind == "AGE":
        return str(rng.randint(90, 104))
    if kind == "PHONE":
        a, b, c = rng.randint(200, 999), rng.randint(200, 999), rng.randint(1000, 9999)
        return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}"])
    if kind == "EMAIL":
        return f"{_syllable_name(rng).lower()}.{rng.randint(1, 99)}@example.org"
    if kind == "URL":
        return f"https://portal.example.org/r/{rng.randint(1000, 99999)}"
    if kind == "IP":
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    if kind == "ADDRESS":
        if rng.random() < 0.5:
            return f"{rng.randint(1, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"
        city, state = rng.choice(CITIES)
        return f"{city}, {state} {rng.randint(10000, 99999)}"
    raise ValueError(kind)


def _person(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{rng.choice(CENSUS_FIRST)} {rng.choice(CENSUS_LAST)}"
    return f"{_syllable_name(rng)} {_syllable_name(rng)}"


def generate_notes(count: int = 240, seed: int = 7) -> list[PhiNote]:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    notes = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        patient = _person(rng)
        text, spans = "", []
        for piece in template.replace("}", "{").split("{"):
            if piece in Phi.__members__:
                value = _value(piece, rng, patient)
                spans.append(PhiSpan(len(text), len(text) + len(value), Phi[piece]))
                text += value
            else:
                text += piece
        notes.append(PhiNote(text, tuple(spans), patient))
    return notes


def score(
    notes: Sequence[PhiNote], find: Callable[[PhiNote], Sequence[PhiSpan]]
) -> dict[str, dict[str, float]]:
    """Per type: recall (gold spans fully covered by a found span of the same type) and
    precision (found spans that overlap a gold span of the same type)."""
    counts: dict[str, Counter[str]] = {}
    for note in notes:
        found = list(find(note))
        for gold in note.spans:
            c = counts.setdefault(gold.type.value, Counter())
            c["gold"] += 1
            c["hit"] += any(
                f.type is gold.type and f.start <= gold.start and gold.end <= f.end for f in found
            )
        for f in found:
            c = counts.setdefault(f.type.value, Counter())
            c["found"] += 1
            c["correct"] += any(
                f.type is g.type and f.start < g.end and g.start < f.end for g in note.spans
            )
    result = {}
    for kind, c in sorted(counts.items()):
        result[kind] = {
            "recall": round(c["hit"] / c["gold"], 4) if c["gold"] else 0.0,
            "precision": round(c["correct"] / c["found"], 4) if c["found"] else 0.0,
            "support": c["gold"],
        }
    total = sum(counts.values(), Counter())
    result["all"] = {
        "recall": round(total["hit"] / total["gold"], 4),
        "precision": round(total["correct"] / total["found"], 4),
        "support": total["gold"],
    }
    return result
