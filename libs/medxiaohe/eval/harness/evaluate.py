"""`medxiaohe eval suite`: the suites' items asked of one model (resumably), scored, and
published as ``eval/<run>``: per-item predictions, the scores as JSON, a Markdown table and a
PNG chart."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import NotFound
from medxiaohe.eval.harness import prompts
from medxiaohe.eval.harness.contamination import contaminated_ids
from medxiaohe.eval.harness.run import EvalConfig, run_items
from medxiaohe.eval.harness.scoring import chart, markdown, score_suite, summarize
from medxiaohe.eval.harness.suites import Item, load_suite, suite_path
from medxiaohe.models.client import ModelClient
from medxiaohe.rubric.scoring import Grader
from medxiaohe.storage import ArtifactStore, publish

RESULTS = "eval"


def load_items(
    suites: Sequence[str], data: Path, paths: Mapping[str, Path], limit: int
) -> tuple[dict[str, list[Item]], dict[str, str]]:
    """Each suite's items (its first ``limit`` when given), and why a suite was skipped."""
    loaded, skipped = {}, {}
    for suite in suites:
        try:
            items = load_suite(suite, suite_path(suite, data, dict(paths)))
        except NotFound as exc:
            skipped[suite] = str(exc)
            continue
        loaded[suite] = items[:limit] if limit else items
    return loaded, skipped


def evaluate(
    store: ArtifactStore,
    client: ModelClient,
    config: EvalConfig,
    items: Mapping[str, list[Item]],
    *,
    run: str,
    grader: Grader | None = None,
    decontamination: str = "",
    concurrency: int = 4,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Ask, score, and return the result (``decontamination`` names the report whose
    contaminated items the clean scores leave out)."""
    everything = [i for suite_items in items.values() for i in suite_items]
    records = run_items(
        store, run, everything, client, config,
        grader=grader, concurrency=concurrency, on_answer=on_answer,
    )  # fmt: skip
    contaminated = contaminated_ids(store, decontamination) if decontamination else None
    by_id = {(r["suite"], r["id"]): r for r in records}
    rows = {
        suite: score_suite(
            suite_items,
            [by_id[(suite, i.id)] for i in suite_items],
            None if contaminated is None else contaminated.get(suite, set()),
        )
        for suite, suite_items in items.items()
        if suite_items
    }
    return {
        "run": run,
        "model": config.model,
        "mode": config.mode,
        "prompt_version": prompts.version(config.mode),
        "grader": config.grader,
        "decontamination": decontamination,
        "suites": rows,
        **summarize(rows),
        "predictions": records,
    }


def publish_results(store: ArtifactStore, result: Mapping[str, Any]) -> str:
    """``eval/<run>``: predictions per suite (JSONL), results.json, results.md, results.png."""
    body = {k: v for k, v in result.items() if k != "predictions"}
    files: dict[str, bytes] = {
        "results.json": json.dumps(body, indent=2, sort_keys=True).encode(),
        "results.md": markdown(body).encode(),
        "results.png": chart(body),
    }
    for suite in body["suites"]:
        lines = [
            json.dumps(r, sort_keys=True) for r in result["predictions"] if r["suite"] == suite
        ]
        files[f"predictions/{suite}.jsonl"] = ("\n".join(lines) + "\n").encode()
    manifest = publish(
        store, f"{RESULTS}/{result['run']}", files, metadata={"model": body["model"]}
    )
    return f"{manifest.prefix}/{manifest.version}"
