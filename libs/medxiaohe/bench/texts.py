"""Benchmark texts: public corpora from ../shared/data when present, else the sample notes."""

from __future__ import annotations

import csv
from pathlib import Path

from medxiaohe.corpus.samples import NOTES

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


def abstracts(limit: int) -> list[str]:
    """PubMed titles+abstracts of the NCBI-disease train set (public domain)."""
    path = SHARED / "ncbi_disease" / "original-data_train_NCBItrainset_corpus.txt"
    if not path.is_file():
        return []
    texts, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if "|t|" in line or "|a|" in line:
            current.append(line.split("|", 2)[2])
        elif not line.strip() and current:
            texts.append(" ".join(current))
            current = []
    return texts[:limit]


def reports(limit: int) -> list[str]:
    """IU X-ray report sections (de-identified upstream; CC BY-NC-ND)."""
    path = SHARED / "iu_xray" / "reports_train_val.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:limit]
    return [" ".join(r[k] for k in ("indication", "findings", "impression") if r[k]) for r in rows]


def bench_texts(limit: int) -> tuple[list[str], str]:
    """Texts and a description of where they came from."""
    texts = abstracts(limit // 2) + reports(limit // 2)
    if texts:
        return texts, "NCBI-disease train abstracts + IU X-ray reports (../shared/data)"
    notes = list(NOTES.values())
    return (notes * (limit // len(notes) + 1))[:limit], "sample notes (../shared/data absent)"
