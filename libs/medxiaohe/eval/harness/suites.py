"""The benchmark suites as items, read from the public files (each reader takes the path of the
suite's folder or file, so the full public releases can be pointed at). Item ids are the keys
MIRAGE uses for the four text suites, so its released predictions line up with ours."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.common.paths import file_in

LETTERS = "ABCDE"
CHOICE, CLOSED, OPEN, REPORT, RUBRIC = "choice", "closed", "open", "report", "rubric"
MMLU_SUBJECTS = (
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
)
PUBMEDQA_OPTIONS = {"A": "yes", "B": "no", "C": "maybe"}  # MIRAGE's letters


@dataclass(frozen=True)
class Item:
    suite: str
    id: str
    question: str
    answer: str  # a letter (choice), a short answer (closed, open) or a reference report
    kind: str
    options: dict[str, str] = field(default_factory=dict)
    image: str = ""  # a file path (VQA-RAD)
    extra: dict[str, Any] = field(default_factory=dict)  # HealthBench: the example

    def text(self) -> str:
        """What a training text could have copied: question, options and answer."""
        options = " ".join(self.options.values())
        answer = self.options.get(self.answer, self.answer)
        return f"{self.question} {options} {answer}"


def _file(path: Path, name: str) -> Path:
    """``path`` itself when it is a file, else ``name`` inside it (NotFound when absent)."""
    found = path if path.is_file() else path / name
    if not found.is_file():
        raise NotFound(f"{found} is missing (skip this suite or point --path at the file)")
    return found


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise InvalidInput(f"{path.name} line {number}: not JSON") from None
    return rows


def medqa(path: Path) -> list[Item]:
    """MedQA-USMLE, 4 options; ids are the line numbers ("0000"), as in MIRAGE."""
    rows = _jsonl(_file(path, "test_4options.jsonl"))
    return [
        Item("medqa", f"{i:04d}", r["question"], r["answer_idx"], CHOICE, dict(r["options"]))
        for i, r in enumerate(rows)
    ]


def medmcqa(path: Path) -> list[Item]:
    """MedMCQA dev; ids are MedMCQA's own."""
    items = []
    for r in _jsonl(_file(path, "dev.json")):
        options = {LETTERS[i]: str(r[f"op{c}"]) for i, c in enumerate("abcd")}
        items.append(
            Item("medmcqa", r["id"], r["question"], LETTERS[int(r["cop"]) - 1], CHOICE, options)
        )
    return items


def pubmedqa(path: Path) -> list[Item]:
    """PubMedQA PQA-L, the official 500 test questions (without their abstracts, MIRAGE's
    PubMedQA* setting); ids are PMIDs; options A yes, B no, C maybe."""
    test = json.loads(_file(path, "test_ground_truth.json").read_text(encoding="utf-8"))
    labelled = json.loads(_file(path, "ori_pqal.json").read_text(encoding="utf-8"))
    letter = {v: k for k, v in PUBMEDQA_OPTIONS.items()}
    missing = [pmid for pmid in test if pmid not in labelled]
    if missing:
        raise InvalidInput(f"{len(missing)} test ids are not in ori_pqal.json")
    return [
        Item(
            "pubmedqa",
            pmid,
            labelled[pmid]["QUESTION"],
            letter[label],
            CHOICE,
            dict(PUBMEDQA_OPTIONS),
        )
        for pmid, label in test.items()
    ]


def mmlu_med(path: Path) -> list[Item]:
    """The six MMLU medical subjects (test); ids are "<subject>-<row:03d>", as in MIRAGE."""
    items = []
    for subject in MMLU_SUBJECTS:
        with _file(path, f"{subject}_test.csv").open(encoding="utf-8", newline="") as fh:
            for i, row in enumerate(csv.reader(fh)):
                if len(row) != 6:
                    raise InvalidInput(f"{subject}_test.csv row {i}: 6 columns expected")
                options = dict(zip(LETTERS[:4], row[1:5], strict=True))
                items.append(
                    Item("mmlu_med", f"{subject}-{i:03d}", row[0], row[5].strip(), CHOICE, options)
                )
    return items


def _vqa_rad(path: Path, kind: str) -> list[Item]:
    """VQA-RAD's official test split (phrase types test_freeform, test_para)."""
    rows = json.loads(_file(path, "VQA_RAD Dataset Public.json").read_text(encoding="utf-8"))
    folder = (path if path.is_dir() else path.parent) / "images"
    items = []
    for r in rows:
        if str(r["phrase_type"]).startswith("test") and r["answer_type"].strip().lower() == kind:
            answer = str(r["answer"]).strip().lower()
            image = str(file_in(folder, str(r["image_name"])))
            items.append(
                Item(f"vqa_rad_{kind}", str(r["qid"]), r["question"], answer, kind, image=image)
            )
    return items


def vqa_rad_closed(path: Path) -> list[Item]:
    return _vqa_rad(path, CLOSED)


def vqa_rad_open(path: Path) -> list[Item]:
    return _vqa_rad(path, OPEN)


def iu_xray(path: Path) -> list[Item]:
    """IU X-ray reports of the R2Gen validation split (its test split is withheld here): the
    indication is the question, findings and impression the reference."""
    with _file(path, "reports_train_val.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split") == "val"]
    items = []
    for r in rows:
        report = " ".join(x for x in (r["findings"], r["impression"]) if x).strip()
        if report:
            indication = r.get("indication", "").strip() or "not given"
            items.append(Item("iu_xray", r["uid"], indication, report, REPORT))
    return items


def healthbench(path: Path) -> list[Item]:
    """HealthBench-format conversations with their physician rubrics."""
    from medxiaohe.rubric.rubrics import load_healthbench

    found = _file(path, "oss_eval_examples_1-30.jsonl")
    return [
        Item(
            "healthbench",
            e.prompt_id,
            e.conversation[-1]["content"],
            "",
            RUBRIC,
            extra={"example": e},
        )
        for e in load_healthbench(found)
    ]


_OPTION = re.compile(r"^([A-E])\. (.+)$")


def synth_qa(path: Path) -> list[Item]:
    """The platform's own synthesized questions (a split of ``synthesis/<name>``, such as its
    held-out ``heldout.jsonl``): the first user turn holds the stem, then "A. ..." lines; the
    row's ``answer`` is the letter. Ids are the row numbers."""
    items = []
    for i, row in enumerate(_jsonl(_file(path, "heldout.jsonl"))):
        lines = str(row["messages"][0]["content"]).splitlines()
        options = {m[1]: m[2] for m in map(_OPTION.match, lines) if m}
        stem = "\n".join(line for line in lines if not _OPTION.match(line))
        if len(options) < 2 or row.get("answer") not in options:
            raise InvalidInput(f"{path.name} row {i}: options and a letter answer expected")
        items.append(Item("synth_qa", f"{i:04d}", stem, row["answer"], CHOICE, options))
    return items


# suite -> (reader, its folder under the shared data)
SUITES: dict[str, tuple[Callable[[Path], list[Item]], str]] = {
    "medqa": (medqa, "medqa_us"),
    "medmcqa": (medmcqa, "medmcqa"),
    "pubmedqa": (pubmedqa, "pubmedqa"),
    "mmlu_med": (mmlu_med, "mmlu_med"),
    "vqa_rad_closed": (vqa_rad_closed, "vqa_rad"),
    "vqa_rad_open": (vqa_rad_open, "vqa_rad"),
    "iu_xray": (iu_xray, "iu_xray"),
    "healthbench": (healthbench, "healthbench"),
    "synth_qa": (synth_qa, "synth_qa"),  # not shared data: --path synth_qa=synthesis/<name>
}
TEXT_CHOICE = ("medqa", "medmcqa", "pubmedqa", "mmlu_med")


def load_suite(suite: str, path: Path) -> list[Item]:
    if suite not in SUITES:
        raise InvalidInput(f"unknown suite {suite!r}; one of {', '.join(SUITES)}")
    return SUITES[suite][0](path)


def suite_path(suite: str, data: Path, paths: dict[str, Path] | None = None) -> Path:
    """The suite's own path when given, else its folder under the shared data root."""
    return (paths or {}).get(suite) or data / SUITES[suite][1]
