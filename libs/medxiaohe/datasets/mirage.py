"""The four text suites of MIRAGE (MedQA-USMLE, MedMCQA, PubMedQA*, the six MMLU medical
subjects) read from their public files, with the ids MIRAGE uses, so its released predictions
(``mirage_predictions``) line up; and those predictions."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.datasets.files import file_or_inside, jsonl

LETTERS = "ABCDE"
MMLU_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}  # MIRAGE's letters
MAX_FILE = 64 << 20  # a prediction file

Question = dict[str, Any]  # id, question, options (letter -> text), answer (a letter)


def medqa(path: Path) -> list[Question]:
    """MedQA-USMLE, 4 options; ids are the line numbers ("0000"), as in MIRAGE."""
    rows = jsonl(file_or_inside(path, "test_4options.jsonl"))
    return [
        {
            "id": f"{i:04d}",
            "question": r["question"],
            "options": dict(r["options"]),
            "answer": r["answer_idx"],
        }
        for i, r in enumerate(rows)
    ]


def medmcqa(path: Path) -> list[Question]:
    """MedMCQA dev; ids are MedMCQA's own."""
    return [
        {
            "id": r["id"],
            "question": r["question"],
            "options": {LETTERS[i]: str(r[f"op{c}"]) for i, c in enumerate("abcd")},
            "answer": LETTERS[int(r["cop"]) - 1],
        }
        for r in jsonl(file_or_inside(path, "dev.json"))
    ]


def pubmedqa(path: Path) -> list[Question]:
    """PubMedQA PQA-L, the official 500 test questions (without their abstracts, MIRAGE's
    PubMedQA* setting); ids are PMIDs; options A yes, B no, C maybe."""
    test = json.loads(file_or_inside(path, "test_ground_truth.json").read_text(encoding="utf-8"))
    labelled = json.loads(file_or_inside(path, "ori_pqal.json").read_text(encoding="utf-8"))
    letter = {v: k for k, v in PUBMEDQA_OPTIONS.items()}
    missing = [pmid for pmid in test if pmid not in labelled]
    if missing:
        raise InvalidInput(f"{len(missing)} test ids are not in ori_pqal.json")
    return [
        {
            "id": pmid,
            "question": labelled[pmid]["QUESTION"],
            "options": dict(PUBMEDQA_OPTIONS),
            "answer": letter[label],
        }
        for pmid, label in test.items()
    ]


def mmlu_med(path: Path) -> list[Question]:
    """The six MMLU medical subjects (test); ids are "<subject>-<row:03d>", as in MIRAGE."""
    found = []
    for subject in MMLU_SUBJECTS:
        name = f"{subject}_test.csv"
        with file_or_inside(path, name).open(encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if len(row) != 6:
                    raise InvalidInput(f"{name} row {i}: 6 columns expected")
                found.append(
                    {
                        "id": f"{subject}-{i:03d}",
                        "question": row[0],
                        "options": dict(zip(LETTERS[:4], row[1:5], strict=True)),
                        "answer": row[5].strip(),
                    }
                )
    return found


def _read(path: Path) -> str:
    if path.stat().st_size > MAX_FILE:
        raise InvalidInput(f"{path.name} is larger than {MAX_FILE // 2**20} MiB")
    return path.read_text(encoding="utf-8")


def predictions(folder: Path, suite: str, ids: Iterable[str]) -> dict[str, str]:
    """id -> the first raw output of each id's MIRAGE file (absent files and empty lists are
    left out: a scorer counts those items wrong)."""
    if not folder.is_dir():
        raise NotFound(f"{folder} is not a folder of MIRAGE predictions")
    split = "dev" if suite == "medmcqa" else "test"
    outputs = {}
    for item_id in ids:
        path = folder / f"{split}_{item_id}.json"
        if path.is_file():
            try:
                answers = json.loads(_read(path))
            except json.JSONDecodeError:
                raise InvalidInput(f"{path.name}: not JSON") from None
            if not isinstance(answers, list):
                raise InvalidInput(f"{path.name}: a list of outputs expected")
            if answers:  # an empty list (27 GPT-3.5 MedMCQA files) is wrong, as MIRAGE counts it
                outputs[item_id] = str(answers[0])
    return outputs
