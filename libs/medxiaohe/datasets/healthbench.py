"""HealthBench JSON lines (``prompt``, ``rubrics``, ``example_tags``,
``ideal_completions_data``), as OpenAI's simple-evals publishes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import InvalidInput

FILE = "oss_eval_examples_1-30.jsonl"


def examples(path: Path) -> list[dict[str, Any]]:
    """Each example as ``prompt_id``, ``conversation`` (role and content of each message),
    ``rubrics`` (as published), ``example_tags`` and ``ideal_completion`` ("" when none)."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ideal = (row.get("ideal_completions_data") or {}).get("ideal_completion") or ""
            found.append(
                {
                    "prompt_id": str(row["prompt_id"]),
                    "conversation": [
                        {"role": str(m["role"]), "content": str(m["content"])}
                        for m in row["prompt"]
                    ],
                    "rubrics": list(row["rubrics"]),
                    "example_tags": list(row.get("example_tags") or ()),
                    "ideal_completion": str(ideal),
                }
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"{path.name} line {number}: not a HealthBench example") from exc
    return found
