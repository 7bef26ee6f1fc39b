"""The public data sets as training text: what the small model's continual pretraining reads
(training splits only) and the held-out text its perplexity is measured on. The file readers
are in ``datasets``; this is which files, and which splits, go where."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medxiaohe.datasets import iu_xray
from medxiaohe.datasets.beir import scifact_documents
from medxiaohe.datasets.conll import iob_documents
from medxiaohe.datasets.files import need
from medxiaohe.datasets.pubtator import pubtator_documents
from medxiaohe.entities.tree import EntityTree

NCBI_TRAIN = "ncbi_disease/original-data_train_NCBItrainset_corpus.txt"
NCBI_DEVEL = "ncbi_disease/original-data_devel_NCBIdevelopset_corpus.txt"
IU_XRAY = f"iu_xray/{iu_xray.FILE}"


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
    ncbi, bc5cdr, scifact, iu = need(
        data, NCBI_TRAIN, "bc5cdr/BC5CDR-IOB_train.tsv", "scifact/corpus.jsonl.gz", IU_XRAY
    )
    yield from pubtator_documents(ncbi)
    yield from iob_documents(bc5cdr)
    yield from scifact_documents(scifact)
    for row in iu_xray.reports(iu, "train"):
        yield {"id": f"iu-{row['uid']}", "source": "iu-xray", "text": row["report"]}
    for i, text in enumerate(vocabulary_texts(tree)):
        yield {"id": f"vocabulary-{i}", "source": "vocabulary", "text": text}


def heldout_texts(data: Path) -> dict[str, list[str]]:
    """Held-out text for perplexity: IU X-ray validation reports, NCBI-disease devel abstracts."""
    devel, iu = need(data, NCBI_DEVEL, IU_XRAY)
    return {
        "iu_xray_val": [r["report"] for r in iu_xray.reports(iu, "val")],
        "ncbi_devel": [d["text"] for d in pubtator_documents(devel)],
    }
