"""The public data sets as the small model's chat data: IU X-ray report writing and VQA-RAD
questions with their images (``datasets`` reads the files; ``corpus.public`` holds the
training text and the held-out text)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from medxiaohe.datasets import vqa_rad as vqa
from medxiaohe.datasets.files import need

REPORT_PROMPT = "Write the findings and impression of this chest X-ray report.\nIndication: {}"


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


def vqa_rad(data: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, test) questions; the test split is the official one (phrase types
    test_freeform and test_para)."""
    (public,) = need(data, f"vqa_rad/{vqa.FILE}")
    rows = vqa.questions(public)
    return [r for r in rows if not vqa.is_test(r)], [r for r in rows if vqa.is_test(r)]


def vqa_messages(row: dict[str, Any], with_answer: bool = True) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}
    ]
    if with_answer:
        messages.append({"role": "assistant", "content": row["answer"]})
    return messages
