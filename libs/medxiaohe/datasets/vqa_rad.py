"""VQA-RAD (``VQA_RAD Dataset Public.json`` and its ``images/`` folder): questions on
radiology images; the official test split is the phrase types test_freeform and test_para."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medxiaohe.common.paths import file_in
from medxiaohe.datasets.files import file_or_inside

FILE = "VQA_RAD Dataset Public.json"


def questions(path: Path) -> list[dict[str, Any]]:
    """Every question (``path`` is the file or its folder), its answer stripped and lower-cased,
    its image as ``image_path`` inside the data set's images folder."""
    found = file_or_inside(path, FILE)
    rows: list[dict[str, Any]] = json.loads(found.read_text(encoding="utf-8"))
    for row in rows:
        row["answer"] = str(row["answer"]).strip().lower()
        row["image_path"] = str(file_in(found.parent / "images", str(row["image_name"])))
    return rows


def is_test(row: dict[str, Any]) -> bool:
    return str(row["phrase_type"]).startswith("test")
