"""BEIR-format retrieval sets (SciFact): ``corpus.jsonl[.gz]``, ``queries*.jsonl`` and
``qrels/<split>.tsv``."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets.files import lines


def read_corpus(folder: Path) -> list[dict[str, str]]:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return [json.loads(line) for line in lines(folder / name) if line.strip()]
    raise InvalidInput(f"no corpus.jsonl[.gz] in {folder}")


def read_queries(folder: Path, split: str) -> dict[str, str]:
    candidates = [folder / f"queries_{split}.jsonl", folder / "queries.jsonl"]
    for path in candidates:
        if path.is_file():
            return {row["_id"]: row["text"] for row in map(json.loads, lines(path)) if row}
    raise InvalidInput(f"no queries_{split}.jsonl or queries.jsonl in {folder}")


def read_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise InvalidInput(f"no qrels/{split}.tsv in {folder}")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return qrels


def scifact_documents(path: Path) -> Iterator[dict[str, str]]:
    """SciFact's corpus file as documents (title and abstract)."""
    for line in lines(path):
        row = json.loads(line)
        yield {
            "id": f"scifact-{row['_id']}",
            "source": "scifact",
            "text": f"{row['title']} {row['text']}",
        }
