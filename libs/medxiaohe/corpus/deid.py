"""De-identification of free text for the HIPAA Safe Harbor identifiers.

Names, dates (shifted by a per-patient offset, so intervals survive), record and account numbers,
phones, e-mails, URLs, IP addresses, street addresses and ages over 89. Pattern rules, the labels
and titles around names, US census first names, and the names the source itself gives (HL7 PID,
FHIR Patient) as a deny list. Presidio was considered: offline it runs only with regex
recognizers plus custom ones for exactly these cases, at a fraction of the speed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

from medxiaohe.common.secrets import pseudonym
from medxiaohe.corpus.dicom import KEEP as DICOM_KEEP


class Phi(StrEnum):
    NAME = "NAME"
    DATE = "DATE"
    ID = "ID"
    PHONE = "PHONE"
    EMAIL = "EMAIL"
    URL = "URL"
    IP = "IP"
    ADDRESS = "ADDRESS"
    AGE = "AGE"


@dataclass(frozen=True)
class PhiSpan:
    start: int
    end: int
    type: Phi


_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_NAME = r"[A-Z][a-z]+(?:[-'][A-Z]?[a-z]+)?"
_RULES: list[tuple[Phi, re.Pattern[str], int]] = [
    # Linear time: a local part starts only where the run of its characters starts, and every
    # part is bounded (RFC 5321), so no position is rescanned.
    (
        Phi.EMAIL,
        re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}\b"),
        0,
    ),
    (Phi.URL, re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+", re.I), 0),
    (Phi.IP, re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), 0),
    (Phi.ID, re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), 0),  # SSN
    (
        Phi.PHONE,
        re.compile(
            r"(?<![\w-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}\b(?:\s?(?:x|ext\.?)\s?\d{1,5})?"
        ),
        0,
    ),
    (
        Phi.ID,
        re.compile(
            r"\b(?:MRN|MR#|medical record(?: number| no\.?)?|record(?: number| no\.?| #)|"
            r"acct\.?|account(?: number| no\.?)?|"
            r"(?:patient|member|policy|insurance|subscriber|encounter|visit|accession|order|specimen|lab|"
            r"license|device|serial|plan)\s?(?:id|#|number|no\.?)|id|ssn|health plan(?: number)?)"
            r"\b(?:\s*(?:is|:|#|no\.?)\s*|\s+)([A-Z0-9][A-Z0-9-]{3,})\b",
            re.I,
        ),
        1,
    ),
    (Phi.ID, re.compile(r"\b[A-Z]{1,4}-?\d{5,}\b|\b\d{7,}\b"), 0),
    (
        Phi.DATE,
        re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}[/-]\d{1,2}[/-](?:\d{4}|\d{2})\b"),
        0,
    ),
    (
        Phi.DATE,
        re.compile(
            rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?(?:,?\s+\d{{4}})?\b"
            rf"|\b(?:{_MONTHS})\.?,?\s+\d{{4}}\b",
            re.I,
        ),
        0,
    ),
    (
        Phi.AGE,
        re.compile(
            r"\b(?:9\d|1[0-4]\d)(?=\s*-?\s*(?:years?|yrs?|y/?o\b|y\.o\.|year-old))"
            r"|(?<=\bage )(?:9\d|1[0-4]\d)\b|(?<=\baged )(?:9\d|1[0-4]\d)\b",
            re.I,
        ),
        0,
    ),
    (
        Phi.ADDRESS,
        re.compile(
            rf"\b\d{{1,5}}\s+(?:{_NAME}\s+){{1,3}}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|"
            rf"Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Circle|Highway|Hwy)\b\.?(?:,?\s+(?:Apt|Suite|Unit)\.?\s*\w+)?"
        ),
        0,
    ),
    (
        Phi.ADDRESS,
        re.compile(rf"\b(?:{_NAME}\s){{0,3}}{_NAME},\s[A-Z]{{2}}\s\d{{5}}(?:-\d{{4}})?\b"),
        0,
    ),
    (Phi.ADDRESS, re.compile(r"(?<=\bzip )\d{5}\b|(?<=\bzip code )\d{5}\b", re.I), 0),
    (Phi.NAME, re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+((?:{_NAME}\s)?{_NAME})"), 1),
    (
        Phi.NAME,
        re.compile(
            rf"\b(?:[Pp]atient|[Pp]t|[Nn]ame|[Pp]atient [Nn]ame|[Aa]ttending|[Pp]hysician|"
            rf"[Ss]igned by|[Dd]ictated by|[Ss]een by|[Rr]eferred by|[Rr]eferring|[Cc]ontact|"
            rf"[Nn]urse|[Ss]pouse|[Gg]uardian|[Ee]mergency contact|[Pp]rovider|PCP|cc)\s*:\s*"
            rf"({_NAME}(?:\s[A-Z]\.)?(?:\s{_NAME})?)"
        ),
        1,
    ),
    (
        Phi.NAME,
        re.compile(rf"\b({_NAME}(?:\s[A-Z]\.)?\s{_NAME}),?\s(?:MD|DO|RN|NP|PA-C|PA|PhD|MBBS)\b"),
        1,
    ),
    (  # a full name right after a label, without a colon: "Patient Ada Lovelace", "seen by ..."
        Phi.NAME,
        re.compile(
            rf"\b(?:[Pp]atient|[Pp]t\.?|[Rr]eferred by|[Ss]een by|[Ss]igned by|[Dd]ictated by|"
            rf"[Rr]eviewed with|[Rr]eviewed by|[Ee]xamined by)\s+({_NAME}(?:\s[A-Z]\.)?\s{_NAME})"
        ),
        1,
    ),
    (Phi.NAME, re.compile(rf"\b({_NAME}),\s({_NAME})(?=\s+(?:is|was|presents|DOB|MRN|\())"), 0),
]
_REPLACEMENT = {t: f"[{t.value}]" for t in Phi} | {Phi.AGE: "90+"}


@cache
def _first_names() -> frozenset[str]:
    """US census first names (first_names.txt), frequent enough to be safe as a signal."""
    lines = (Path(__file__).parent / "first_names.txt").read_text().splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#")) - _NOT_NAMES


# Census first names that are also everyday or clinical words in notes.
_NOT_NAMES = frozenset(
    """
    May June April August Will Mark Grant Chance Hope Faith Joy Page Rose Ivy Sage Dawn Summer
    Patient Major Guy Young Long Said Lane Case Chase Hunter Miles Bill Son Else Ward
    """.split()  # noqa: SIM905
)
_CAPITAL_PAIR = re.compile(rf"\b({_NAME})\s({_NAME})\b")


def find_phi(text: str, known: Sequence[str] = ()) -> list[PhiSpan]:
    """PHI spans, non-overlapping, longest first where rules disagree."""
    spans: list[PhiSpan] = []
    for kind, pattern, group in _RULES:
        for match in pattern.finditer(text):
            for g in range(group, (match.lastindex or 0) + 1) if group else [0]:
                if match.group(g):
                    spans.append(PhiSpan(match.start(g), match.end(g), kind))
    first = _first_names()
    for match in _CAPITAL_PAIR.finditer(text):
        if match.group(1) in first:
            spans.append(PhiSpan(match.start(), match.end(), Phi.NAME))
    for name in {n for full in known for n in [full, *full.split()] if len(n) > 2}:
        for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I):
            spans.append(PhiSpan(match.start(), match.end(), Phi.NAME))
    spans.sort(key=lambda s: (s.start, s.start - s.end))
    kept: list[PhiSpan] = []
    for span in spans:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return kept


def record_pseudonym(secret: str, record_id: str) -> str:
    """What a record's source id is stored as."""
    return pseudonym(secret, f"record:{record_id}")


def patient_pseudonym(secret: str, patient: str) -> str:
    """What a source's patient identifier (MRN, FHIR reference, PID-3) is stored as."""
    return pseudonym(secret, f"patient:{patient}")


def date_shift_days(patient_key: str, secret: str) -> int:
    """The same 1..365-day backward shift for every date of one patient (keyed by the secret)."""
    digest = pseudonym(secret, f"date-shift:{patient_key}")
    return 1 + int(digest[:8], 16) % 365


_NUMERIC_DATES = (
    (re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})$"), "ymd", "{y:04d}-{m:02d}-{d:02d}"),
    (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})$"), "mdy", "{m:02d}/{d:02d}/{y:04d}"),
    (re.compile(r"(\d{1,2})/(\d{1,2})/(\d{2})$"), "mdy2", "{m:02d}/{d:02d}/{yy:02d}"),
)


def shift_date(value: str, days: int) -> str:
    """The date shifted back by ``days`` in its own format, or "[DATE]" when it is not parsed."""
    for pattern, order, out in _NUMERIC_DATES:
        match = pattern.match(value)
        if not match:
            continue
        a, b, c = (int(x) for x in match.groups())
        try:
            if order == "ymd":
                date = dt.date(a, b, c)
            else:
                date = dt.date(c + (2000 if c < 50 else 1900) if order == "mdy2" else c, a, b)
        except ValueError:
            return _REPLACEMENT[Phi.DATE]
        shifted = date - dt.timedelta(days=days)
        return out.format(y=shifted.year, m=shifted.month, d=shifted.day, yy=shifted.year % 100)
    cleaned = re.sub(r"(?<=\d)(st|nd|rd|th)\b|,|\.|\bof\b", " ", value)
    cleaned = " ".join(cleaned.split())
    for fmt in _WORD_DATE_FORMATS:
        has_year = "%Y" in fmt  # without one, a leap year keeps Feb 29 valid
        try:
            date = dt.datetime.strptime(
                cleaned if has_year else f"{cleaned} 2000", fmt if has_year else f"{fmt} %Y"
            )
        except ValueError:
            continue
        shifted = date - dt.timedelta(days=days)
        return shifted.strftime(fmt).replace(" 0", " ").lstrip("0")
    return _REPLACEMENT[Phi.DATE]


_WORD_DATE_FORMATS = (
    "%B %d %Y",
    "%b %d %Y",
    "%d %B %Y",
    "%d %b %Y",
    "%B %Y",
    "%b %Y",
    "%B %d",
    "%b %d",
    "%d %B",
    "%d %b",
)


def deidentify(
    text: str, secret: str, patient_key: str = "", known: Sequence[str] = ()
) -> tuple[str, list[PhiSpan]]:
    """Text with PHI replaced (dates shifted per patient), and the spans found in the input."""
    spans = find_phi(text, known)
    days = date_shift_days(patient_key or "unknown", secret)
    pieces, position = [], 0
    for span in spans:
        pieces.append(text[position : span.start])
        value = text[span.start : span.end]
        pieces.append(shift_date(value, days) if span.type is Phi.DATE else _REPLACEMENT[span.type])
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces), spans


# Metadata that may be stored beside a record; every other key (caller-supplied metadata, extra
# JSONL columns, header fields) is dropped, and the values of these go through deidentify().
METADATA_KEYS = frozenset(
    {"fhir_type", "hl7_type", "document_type", "specialty", "section", "language", *DICOM_KEEP}
)
MAX_METADATA_VALUE = 256


def clean_metadata(
    metadata: dict[str, str], secret: str, patient_key: str = "", known: Sequence[str] = ()
) -> dict[str, str]:
    """The allow-listed keys, their values de-identified and cut to a bounded length."""
    return {
        key: deidentify(str(value)[:MAX_METADATA_VALUE], secret, patient_key, known)[0]
        for key, value in metadata.items()
        if key in METADATA_KEYS
    }


# Labels a record's source may carry as they are: the readers' kinds and generic corpus kinds.
SOURCE_LABELS = frozenset(
    {
        *("text", "jsonl", "fhir", "hl7", "dicom", "image", "unknown"),
        *("literature", "pubmed", "abstracts", "textbook", "guideline", "web", "forum"),
        *("notes", "reports", "radiology", "pathology", "discharge", "synthetic", "public"),
    }
)
# Licences a record may carry as they are (SPDX identifiers, and the hospital's own data).
LICENCES = frozenset(
    {
        *("CC0-1.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0"),
        *("PDDL-1.0", "ODC-By-1.0", "ODbL-1.0", "MIT", "Apache-2.0", "proprietary"),
    }
)


def stored_label(value: str, secret: str, kind: str) -> str:
    """A caller's ``source`` or ``licence`` as it is stored (shards, coverage): an
    allow-listed label as it is, anything else (a file or clinic name, an MRN) as a keyed
    pseudonym, the same for the same label, so coverage by source still works."""
    allowed = SOURCE_LABELS if kind == "source" else LICENCES
    if not value or value in allowed:
        return value
    return f"{kind}-{pseudonym(secret, f'{kind}:{value}')}"
