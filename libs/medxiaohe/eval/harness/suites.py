"""The benchmark suites as items, read from the public files (each reader takes the path of the
suite's folder or file, so the full public releases can be pointed at). Item ids are the keys
MIRAGE uses for the four text suites, so its released predictions line up with ours."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.datasets import iu_xray as iu
from medxiaohe.datasets import mirage, vqa_rad
from medxiaohe.datasets.files import file_or_inside, jsonl
from medxiaohe.datasets.healthbench import FILE as HEALTHBENCH_FILE
from medxiaohe.rubric.rubrics import load_healthbench

CHOICE, CLOSED, OPEN, REPORT, RUBRIC = "choice", "closed", "open", "report", "rubric"


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


def _choices(
    suite: str, read: Callable[[Path], list[mirage.Question]]
) -> Callable[[Path], list[Item]]:
    """A MIRAGE suite's questions as choice items."""

    def items(path: Path) -> list[Item]:
        return [
            Item(suite, q["id"], q["question"], q["answer"], CHOICE, q["options"])
            for q in read(path)
        ]

    return items


def _vqa_rad(path: Path, kind: str) -> list[Item]:
    """VQA-RAD's official test split, the questions whose answer type is ``kind``."""
    return [
        Item(
            f"vqa_rad_{kind}",
            str(r["qid"]),
            r["question"],
            r["answer"],
            kind,
            image=r["image_path"],
        )
        for r in vqa_rad.questions(path)
        if vqa_rad.is_test(r) and r["answer_type"].strip().lower() == kind
    ]


def vqa_rad_closed(path: Path) -> list[Item]:
    return _vqa_rad(path, CLOSED)


def vqa_rad_open(path: Path) -> list[Item]:
    return _vqa_rad(path, OPEN)


def iu_xray(path: Path) -> list[Item]:
    """IU X-ray reports of the R2Gen validation split (its test split is withheld here): the
    indication is the question, findings and impression the reference."""
    return [
        Item(
            "iu_xray", r["uid"], r.get("indication", "").strip() or "not given", r["report"], REPORT
        )
        for r in iu.reports(path, "val")
    ]


def healthbench(path: Path) -> list[Item]:
    """HealthBench-format conversations with their physician rubrics."""
    found = file_or_inside(path, HEALTHBENCH_FILE)
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
    for i, row in enumerate(jsonl(file_or_inside(path, "heldout.jsonl"))):
        lines = str(row["messages"][0]["content"]).splitlines()
        options = {m[1]: m[2] for m in map(_OPTION.match, lines) if m}
        stem = "\n".join(line for line in lines if not _OPTION.match(line))
        if len(options) < 2 or row.get("answer") not in options:
            raise InvalidInput(f"{path.name} row {i}: options and a letter answer expected")
        items.append(Item("synth_qa", f"{i:04d}", stem, row["answer"], CHOICE, options))
    return items


# suite -> (reader, its folder under the shared data)
SUITES: dict[str, tuple[Callable[[Path], list[Item]], str]] = {
    "medqa": (_choices("medqa", mirage.medqa), "medqa_us"),
    "medmcqa": (_choices("medmcqa", mirage.medmcqa), "medmcqa"),
    "pubmedqa": (_choices("pubmedqa", mirage.pubmedqa), "pubmedqa"),
    "mmlu_med": (_choices("mmlu_med", mirage.mmlu_med), "mmlu_med"),
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
