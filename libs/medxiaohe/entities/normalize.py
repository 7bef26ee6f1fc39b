"""One normalization for vocabulary terms and for the text they are matched against.

Text is normalized *length-preserving*: lower case, and every character that is not a letter or
a digit becomes a space. Offsets into the normalized text are therefore offsets into the
original, and hyphen/space/punctuation variants ("type-2", "type 2", "type/2") all read
"type 2". Terms get the same treatment plus whitespace collapsing; plural variants are added as
extra keys rather than stemming the text, so matching stays a single pass in C.
"""

from __future__ import annotations

import re
import unicodedata

_KEEP = re.compile(r"[^0-9a-z]+")
_SPACES = re.compile(r" +")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# ASCII fast path: lower case letters, keep digits, everything else becomes a space.
_TABLE: dict[int, str] = {c: " " for c in range(128) if not chr(c).isalnum()}
_TABLE.update({c: chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


def normalize_text(text: str) -> str:
    """Lower-cased text of the same length with non-alphanumerics replaced by spaces."""
    out = text.translate(_TABLE)
    if out.isascii():
        return out
    # Non-ASCII characters one by one (a note in ASCII but for a name pays for that name only),
    # each kept one character wide: lower case may change a length (U+0130)
    return _NON_ASCII.sub(_fold, out)


def _fold(match: re.Match[str]) -> str:
    """One non-ASCII character as a key character: accents folded the way normalize_term
    folds them ("ö" -> "o"), other letters "x", anything else a space."""
    ch = match.group(0)
    if not ch.isalnum():
        return " "
    base = unicodedata.normalize("NFKD", ch)[0].lower()
    return base if base.isascii() and base.isalnum() else "x"


def normalize_term(term: str) -> str:
    """A vocabulary term as a key: accents folded, lower case, single spaces between tokens."""
    folded = unicodedata.normalize("NFKD", term).encode("ascii", "ignore").decode()
    return _SPACES.sub(" ", _KEEP.sub(" ", folded.lower())).strip()


def plural_variants(form: str) -> list[str]:
    """English plural (or singular) of the last token, for forms that end in a word."""
    head, _, last = form.rpartition(" ")
    if len(last) < 3 or not last.isalpha():
        return []
    prefix = f"{head} " if head else ""
    if last.endswith("ies") and len(last) > 4:
        return [prefix + last[:-3] + "y"]
    if last.endswith(("sses", "uses", "xes", "ches", "shes")):  # abscesses, viruses
        return [prefix + last[:-2]]
    if last.endswith(("us", "is", "ss")):
        return [prefix + last + "es"]
    if last.endswith("s"):
        return [prefix + last[:-1]]
    if last.endswith("y") and last[-2] not in "aeiou":
        return [prefix + last[:-1] + "ies"]
    if last.endswith(("x", "ch", "sh")):
        return [prefix + last + "es"]
    return [prefix + last + "s"]


def uninvert(term: str) -> str | None:
    """'Diabetes mellitus, type 2' -> 'type 2 Diabetes mellitus' (vocabularies list terms
    inverted); None when the term has no single inverting comma."""
    parts = [p.strip() for p in term.split(",")]
    if len(parts) != 2 or not all(parts):
        return None
    return f"{parts[1]} {parts[0]}"
