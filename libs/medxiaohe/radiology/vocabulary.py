"""The radiology vocabulary (``vocabulary.yaml``, versioned data): concepts (observations,
devices, groups a normal statement denies), the anatomy normal statements speak of, and the
words that give a finding its side, location, severity and change. Text is matched on
normalized words (lower case, singular), longest phrase first."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from medxiaohe.common.errors import InvalidInput

OBSERVATION, DEVICE, GROUP = "observation", "device", "group"
ABNORMAL = "abnormal "  # the group a normal statement about an anatomy denies: "abnormal lungs"
AXES = ("laterality", "predominance", "zone", "depth", "plane", "severity", "change")

# plural -> singular where dropping an "s" is wrong
_IRREGULAR = {
    "apices": "apex",
    "pneumothoraces": "pneumothorax",
    "hemithoraces": "hemithorax",
    "vertebrae": "vertebra",
    "bullae": "bulla",
    "sequelae": "sequela",
    "scapulae": "scapula",
    "hila": "hilum",
    "bronchi": "bronchus",
    "diagnoses": "diagnosis",
    "metastases": "metastasis",
    "granulomata": "granuloma",
    "masses": "mass",
    "oedema": "edema",
    "haemothorax": "hemothorax",
    "tumour": "tumor",
    "xray": "x ray",
    "foci": "focus",
}
_KEEP = ("ss", "us", "is", "ous", "sis", "xis", "ics")
_TOKEN = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?|[,;:()]")


def singular(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    return word[:-1]


@dataclass(frozen=True)
class Token:
    text: str  # normalized
    start: int
    end: int


def tokens(text: str, offset: int = 0) -> list[Token]:
    """Words (normalized), numbers and clause punctuation, with their offsets in ``text``."""
    out = []
    for match in _TOKEN.finditer(text):
        word = match.group(0).lower()
        normal = singular(word)
        for part in normal.split(" "):  # "xray" -> "x ray"
            out.append(Token(part, match.start() + offset, match.end() + offset))
    return out


def _words(phrase: str) -> tuple[str, ...]:
    return tuple(t.text for t in tokens(phrase))


@dataclass(frozen=True)
class Concept:
    name: str
    kind: str  # observation, device or group
    broader: frozenset[str] = frozenset()
    related: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset()  # a group's: what its normal statement denies
    acute: bool = False


@dataclass(frozen=True)
class Role:
    """What a phrase is: a concept's term (with attributes of its own), an anatomy, a normal
    or abnormal word, or an attribute value."""

    kind: str  # concept, anatomy, normal, abnormal, or an axis (laterality, zone, ...)
    value: str  # the concept, the anatomy, the abnormal word's anatomy, the axis value; a
    # normal word's polarity: "normal", or "abnormal" for a word that says any anatomy is not
    attributes: tuple[tuple[str, str], ...] = ()  # a term's own: (("laterality", "right"),);
    # an abnormal word's: the concept it asserts of its anatomy (("concept", "cardiomegaly"),)


@dataclass(frozen=True)
class Match:
    start: int  # token index
    end: int  # token index, exclusive
    roles: tuple[Role, ...]


@dataclass
class Vocabulary:
    version: str
    concepts: dict[str, Concept]
    phrases: dict[tuple[str, ...], list[Role]]
    units: dict[str, float]
    report_words: frozenset[str]
    longest: int = 1
    _ancestors: dict[str, frozenset[str]] = field(default_factory=dict)

    def match(self, words: list[str]) -> Iterator[Match]:
        """Longest phrases left to right; words no phrase covers are skipped."""
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                roles = self.phrases.get(tuple(words[i : i + n]))
                if roles:
                    yield Match(i, i + n, tuple(roles))
                    i += n
                    break
            else:
                i += 1

    def ancestors(self, name: str) -> frozenset[str]:
        """The concept and every concept broader than it."""
        if name not in self._ancestors:
            seen, todo = {name}, [name]
            while todo:
                concept = self.concepts.get(todo.pop())
                for parent in concept.broader if concept else ():
                    if parent not in seen:
                        seen.add(parent)
                        todo.append(parent)
            self._ancestors[name] = frozenset(seen)
        return self._ancestors[name]

    def kin(self, a: str, b: str) -> bool:
        """One names the other, more or less specifically, or they are related: mentioning one
        is not leaving out the other."""
        if a == b or a in self.ancestors(b) or b in self.ancestors(a):
            return True
        ca, cb = self.concepts.get(a), self.concepts.get(b)
        return bool((ca and b in ca.related) or (cb and a in cb.related))

    def known(self, word: str) -> bool:
        """A word of report language or of the vocabulary: it names nothing new by itself."""
        return word in self.report_words or (word,) in self.phrases


def _terms(entry: dict[str, Any]) -> Iterable[tuple[str, tuple[tuple[str, str], ...]]]:
    for term in entry.get("terms", ()):
        if isinstance(term, dict):
            attributes = tuple((k, str(v)) for k, v in term.items() if k != "term")
            yield term["term"], attributes
        else:
            yield str(term), ()


def build(data: dict[str, Any]) -> Vocabulary:
    phrases: dict[tuple[str, ...], list[Role]] = {}
    concepts: dict[str, Concept] = {}

    def add(phrase: str, role: Role) -> None:
        words = _words(phrase)
        if not words:
            raise InvalidInput(f"the radiology vocabulary has an empty phrase for {role.value}")
        roles = phrases.setdefault(words, [])
        if role not in roles:
            roles.append(role)

    for kind, section in ((OBSERVATION, "observations"), (DEVICE, "devices")):
        for name, entry in data[section].items():
            concepts[name] = Concept(
                name,
                kind,
                frozenset(entry.get("broader", ())),
                frozenset(entry.get("related", ())),
                acute=bool(entry.get("acute")),
            )
            for term, attributes in _terms(entry):
                add(term, Role("concept", name, attributes))
    for name, entry in data["groups"].items():
        concepts[name] = Concept(name, GROUP, members=frozenset(entry["members"]))
        for term, attributes in _terms(entry):
            add(term, Role("concept", name, attributes))
    for anatomy, entry in data["normal"].items():
        group = ABNORMAL + anatomy
        concepts[group] = Concept(group, GROUP, members=frozenset(entry["denies"]))
        for term, _ in _terms(entry):
            add(term, Role("anatomy", anatomy))
    for phrase in data["normal_words"]:
        add(phrase, Role("normal", "normal"))
    for phrase in data["not_normal_words"]:
        add(phrase, Role("normal", "abnormal"))
    for entry in data["abnormal_words"]:
        for phrase in entry["words"]:
            add(phrase, Role("abnormal", entry["anatomy"], (("concept", entry["concept"]),)))
    for value, words in data["laterality"].items():
        for phrase in words:
            add(phrase, Role("laterality", value))
    for axis, values in data["location"].items():
        for value, words in values.items():
            for phrase in words:
                add(phrase, Role(axis, value))
    for axis in ("predominance", "severity", "change"):
        for value, words in data[axis].items():
            for phrase in words:
                add(phrase, Role(axis, value))
    for name, concept in concepts.items():
        unknown = (concept.broader | concept.related | concept.members) - concepts.keys()
        if unknown:
            raise InvalidInput(f"{name} names unknown concepts: {sorted(unknown)}")
    report_words = frozenset(
        w
        for phrase in (*data["report_words"], *data["function_words"])
        for w in _words(str(phrase))
    )
    return Vocabulary(
        version=str(data["version"]),
        concepts=concepts,
        phrases=phrases,
        units={singular(k): float(v) for k, v in data["measurement_units"].items()},
        report_words=report_words,
        longest=max(len(p) for p in phrases),
    )


@cache
def vocabulary() -> Vocabulary:
    """The vocabulary shipped with this package."""
    text = resources.files("medxiaohe.radiology").joinpath("vocabulary.yaml").read_text()
    return build(yaml.safe_load(text))
