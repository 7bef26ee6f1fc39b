"""IU X-ray reports as R2Gen splits them (``reports_train_val.csv``: uid, split, indication,
findings, impression, MeSH; the test split is withheld here). A row's ``report`` is its
findings and impression."""

from __future__ import annotations

import csv
from pathlib import Path

from medxiaohe.datasets.files import file_or_inside

FILE = "reports_train_val.csv"


def rows(path: Path) -> list[dict[str, str]]:
    """Every row of the file (``path`` is the file or its folder), with ``report`` added."""
    with file_or_inside(path, FILE).open(encoding="utf-8") as fh:
        found = list(csv.DictReader(fh))
    for row in found:
        parts = (row.get("findings", ""), row.get("impression", ""))
        row["report"] = " ".join(x for x in parts if x).strip()
    return found


def reports(path: Path, split: str) -> list[dict[str, str]]:
    """The rows of one split (train or val) that have a report."""
    return [r for r in rows(path) if r.get("split") == split and r["report"]]
