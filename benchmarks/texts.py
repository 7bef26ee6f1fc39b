"""Benchmark texts: public corpora from ../shared/data when present, else the sample notes."""

from __future__ import annotations

import itertools
from pathlib import Path

from medxiaohe.corpus.samples import NOTES
from medxiaohe.datasets import iu_xray
from medxiaohe.datasets.pubtator import pubtator_documents

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def abstracts(limit: int) -> list[str]:
    """PubMed titles+abstracts of the NCBI-disease train set (public domain)."""
    path = SHARED / "ncbi_disease" / "original-data_train_NCBItrainset_corpus.txt"
    if not path.is_file():
        return []
    return [d["text"] for d in itertools.islice(pubtator_documents(path), limit)]


def reports(limit: int) -> list[str]:
    """IU X-ray report sections (de-identified upstream; CC BY-NC-ND)."""
    if not (SHARED / "iu_xray" / iu_xray.FILE).is_file():
        return []
    rows = iu_xray.rows(SHARED / "iu_xray")[:limit]
    return [" ".join(r[k] for k in ("indication", "findings", "impression") if r[k]) for r in rows]


def bench_texts(limit: int) -> tuple[list[str], str]:
    """Texts and a description of where they came from."""
    texts = abstracts(limit // 2) + reports(limit // 2)
    if texts:
        return texts, "NCBI-disease train abstracts + IU X-ray reports (../shared/data)"
    notes = list(NOTES.values())
    return (notes * (limit // len(notes) + 1))[:limit], "sample notes (../shared/data absent)"
