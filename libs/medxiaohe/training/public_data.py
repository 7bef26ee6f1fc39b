"""The public data sets under ``../shared/data`` as the small model's training and held-out
data: training documents for CPT (no validation, devel or test text), chat rows for SFT (IU
X-ray report writing, VQA-RAD questions with their images), and the held-out texts and
questions the figures are measured on. Readers name what is missing (NotFound)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medxiaohe.bench.mixture import iob_documents, pubtator_documents, scifact_documents
from medxiaohe.common.errors import NotFound
from medxiaohe.common.paths import file_in
from medxiaohe.entities.tree import EntityTree

IU_XRAY = "iu_xray/reports_train_val.csv"
NCBI_TRAIN = "ncbi_disease/original-data_train_NCBItrainset_corpus.txt"
NCBI_DEVEL = "ncbi_disease/original-data_devel_NCBIdevelopset_corpus.txt"
VQA_RAD = "vqa_rad/VQA_RAD Dataset Public.json"
REPORT_PROMPT = "Write the findings and impression of this chest X-ray report.\nIndication: {}"


def _need(data: Path, *names: str) -> list[Path]:
    paths = [data / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise NotFound(f"missing from the shared data: {', '.join(missing)}")
    return paths


def iu_xray(data: Path, split: str) -> list[dict[str, str]]:
    """IU X-ray rows of one split (train or val) with a report (findings and impression)."""
    (path,) = _need(data, IU_XRAY)
    with path.open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    for row in rows:
        row["report"] = " ".join(x for x in (row["findings"], row["impression"]) if x).strip()
    return [r for r in rows if r["report"]]


def report_messages(row: dict[str, str], with_answer: bool = True) -> list[dict[str, str]]:
    indication = row.get("indication", "").strip() or "not given"
    messages = [{"role": "user", "content": REPORT_PROMPT.format(indication)}]
    if with_answer:
        messages.append({"role": "assistant", "content": row["report"]})
    return messages


def normal_baseline(rows: list[dict[str, str]]) -> str:
    """The most frequent report among normal studies (MeSH "normal") of the given rows."""
    normal = Counter(r["report"] for r in rows if r.get("MeSH", "").strip() == "normal")
    return (normal or Counter(r["report"] for r in rows)).most_common(1)[0][0]


def vocabulary_texts(tree: EntityTree) -> Iterator[str]:
    """The built-in vocabularies as text: each defined entity with its synonyms."""
    columns = tree.columns
    for name, definition, synonyms in zip(
        columns["name"], columns["definition"], columns["synonyms"], strict=True
    ):
        if definition:
            also = f" Also called {', '.join(synonyms[:3])}." if synonyms else ""
            yield f"{name}: {definition}{also}"


def cpt_documents(data: Path, tree: EntityTree) -> Iterator[dict[str, str]]:
    """Training text only: NCBI-disease train abstracts, BC5CDR train, the SciFact corpus,
    IU X-ray train reports, and the vocabularies (NCBI devel and IU X-ray val are held out)."""
    ncbi, bc5cdr, scifact = _need(
        data, NCBI_TRAIN, "bc5cdr/BC5CDR-IOB_train.tsv", "scifact/corpus.jsonl.gz"
    )
    yield from pubtator_documents(ncbi)
    yield from iob_documents(bc5cdr)
    yield from scifact_documents(scifact)
    for row in iu_xray(data, "train"):
        yield {"id": f"iu-{row['uid']}", "source": "iu-xray", "text": row["report"]}
    for i, text in enumerate(vocabulary_texts(tree)):
        yield {"id": f"vocabulary-{i}", "source": "vocabulary", "text": text}


def heldout_texts(data: Path) -> dict[str, list[str]]:
    """Held-out text for perplexity: IU X-ray validation reports, NCBI-disease devel abstracts."""
    (devel,) = _need(data, NCBI_DEVEL)
    return {
        "iu_xray_val": [r["report"] for r in iu_xray(data, "val")],
        "ncbi_devel": [d["text"] for d in pubtator_documents(devel)],
    }


def vqa_rad(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) questions; the test split is the official one (phrase types
    test_freeform and test_para)."""
    (public,) = _need(data, VQA_RAD)
    rows = json.loads(public.read_text(encoding="utf-8"))
    for row in rows:
        row["answer"] = str(row["answer"]).strip().lower()
        row["image_path"] = str(file_in(data / "vqa_rad/images", str(row["image_name"])))
    test = [r for r in rows if str(r["phrase_type"]).startswith("test")]
    train = [r for r in rows if not str(r["phrase_type"]).startswith("test")]
    return train, test


def vqa_messages(row: dict[str, Any], with_answer: bool = True) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}
    ]
    if with_answer:
        messages.append({"role": "assistant", "content": row["answer"]})
    return messages
