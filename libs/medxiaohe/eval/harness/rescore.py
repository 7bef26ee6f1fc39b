"""`medxiaohe eval score-predictions`: recorded outputs re-scored against a suite's gold
answers, from this harness's predictions (JSONL rows with ``id`` and ``output``) or from
MIRAGE's released per-question files (``<split>_<id>.json``, a list of raw outputs of which
MIRAGE scores the first; split "dev" for MedMCQA, else "test")."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.datasets.mirage import predictions
from medxiaohe.eval.harness.extract import mirage_choice
from medxiaohe.eval.harness.suites import TEXT_CHOICE, Item
from medxiaohe.rubric.answers import extract_option

MAX_FILE = 64 * 1024 * 1024


def _read(path: Path) -> str:
    if path.stat().st_size > MAX_FILE:
        raise InvalidInput(f"{path.name} is larger than {MAX_FILE // 2**20} MiB")
    return path.read_text(encoding="utf-8")


def read_ours(path: Path) -> dict[str, str]:
    """id -> raw output, from a predictions JSONL file."""
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    outputs = {}
    for number, line in enumerate(_read(path).splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                outputs[str(row["id"])] = str(row["output"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InvalidInput(f"{path.name} line {number}: needs id and output") from None
    return outputs


def read_mirage(folder: Path, suite: str, items: Sequence[Item]) -> dict[str, str]:
    """id -> MIRAGE's first raw output for each item (missing ones are counted wrong)."""
    return predictions(folder, suite, (item.id for item in items))


def rescore(
    items: Sequence[Item], outputs: Mapping[str, str], extraction: str = "ours"
) -> dict[str, float | int]:
    """Accuracy over every gold item (an item without an output counts wrong and unparsed).
    ``extraction`` "mirage" applies MIRAGE's own (its fall-back "A" counts as unparsed)."""
    if not items or items[0].suite not in TEXT_CHOICE:
        raise InvalidInput(f"score-predictions takes one of {', '.join(TEXT_CHOICE)}")
    if extraction not in ("ours", "mirage"):
        raise InvalidInput("extraction is ours or mirage")
    correct = unparsed = 0
    for item in items:
        output = outputs.get(item.id)
        if output is None:
            unparsed += 1
            continue
        if extraction == "mirage":
            letter, parsed = mirage_choice(output)
        else:
            found = extract_option(output, item.options)
            letter, parsed = found or "", found is not None
        unparsed += not parsed
        correct += letter == item.answer
    return {"accuracy": round(correct / len(items), 4), "n": len(items), "unparsed": unparsed}
