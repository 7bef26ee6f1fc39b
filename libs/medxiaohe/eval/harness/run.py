"""Asking a model every item of a suite, resumably: each answered item is written at once to
the store as its own object (prompt, raw output, extracted answer, correctness, model and
prompt versions), and a re-run of the same run skips what is there. A run's settings are
fixed when it starts; re-running it with other settings is a conflict, not a mix."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound
from medxiaohe.eval.harness import prompts
from medxiaohe.eval.harness.extract import extract_short
from medxiaohe.eval.harness.suites import CHOICE, REPORT, RUBRIC, Item
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import ModelClient
from medxiaohe.rubric.answers import extraction
from medxiaohe.rubric.scoring import Grader, score_example
from medxiaohe.storage import ArtifactStore

RUNS = "eval-runs"
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class EvalConfig:
    model: str  # the model's name and version, as the predictions record it
    mode: str = "zero-shot"
    constrain: bool = True  # send the answer's JSON schema (response_format)
    grader: str = "deterministic"  # the rubric grader's name (HealthBench)

    def __post_init__(self) -> None:
        if self.mode not in prompts.MODES:
            raise InvalidInput(f"unknown mode {self.mode!r}; one of {', '.join(prompts.MODES)}")


def check_run(run: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", run):
        raise InvalidInput("a run name has lower-case letters, digits, '.', '_' or '-'")
    return run


def item_digest(item: Item) -> str:
    """What the item asks and expects: a resumed run must be asking the same items."""
    image = Path(item.image).name if item.image else ""
    body = json.dumps([item.question, item.options, item.answer, image], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def item_key(run: str, item: Item) -> str:
    """The item's object; ids that are not plain file names are hashed."""
    name = item.id if SAFE_ID.match(item.id) else hashlib.sha256(item.id.encode()).hexdigest()[:32]
    return f"{RUNS}/{run}/items/{item.suite}/{name}.json"


def start_run(store: ArtifactStore, run: str, config: EvalConfig) -> None:
    """Record the run's settings, or check them against those it started with."""
    key = f"{RUNS}/{check_run(run)}/run.json"
    wanted = {**asdict(config), "prompt_version": prompts.version(config.mode)}
    try:
        started = json.loads(store.get_bytes(key))
    except NotFound:
        store.put_bytes(key, json.dumps(wanted, sort_keys=True).encode())
        return
    if started != wanted:
        raise Conflict(f"run {run} started with other settings ({started}); name a new run")


def finished(store: ArtifactStore, run: str, suite: str) -> dict[str, dict[str, Any]]:
    """The items of a suite this run has answered, by item id."""
    done = {}
    for info in store.list(f"{RUNS}/{run}/items/{suite}/"):
        record = json.loads(store.get_bytes(info.key))
        done[record["id"]] = record
    return done


def judge(item: Item, output: str, grader: Grader | None) -> dict[str, Any]:
    """The extracted answer and its correctness (a rubric item's score, a report's nothing:
    reports are scored as a set)."""
    if item.kind == CHOICE:
        read = extraction(output, item.options)
        return {"extracted": read.letter, "how": read.how, "correct": read.letter == item.answer}
    if item.kind in ("closed", "open"):
        short = extract_short(output)
        return {"extracted": short, "correct": short == item.answer}
    if item.kind == RUBRIC:
        if grader is None:
            raise InvalidInput("rubric suites need a grader")
        example = item.extra["example"]
        verdicts = grader.grade(example.conversation, output, example.rubric)
        scored = score_example(example.rubric, verdicts, example.example_tags)
        return {
            "extracted": None,
            "score": scored.raw,
            "score_min": scored.raw_min,
            "score_max": scored.raw_max,
            "coverage": round(scored.coverage, 4),
        }
    return {"extracted": None}


def ask(
    client: ModelClient, item: Item, config: EvalConfig, grader: Grader | None
) -> dict[str, Any]:
    messages = prompts.messages(item, config.mode)
    schema = prompts.schema(item, config.mode) if config.constrain else None
    params = ChatParams(max_tokens=prompts.max_tokens(item, config.mode), json_schema=schema)
    images = [Path(item.image).read_bytes()] if item.image else []
    reply = client.chat(messages, images, params)
    return {
        "suite": item.suite,
        "id": item.id,
        "item": item_digest(item),
        "prompt": messages[-1]["content"],
        "output": reply.text,
        **judge(item, reply.text, grader),
        "gold": item.answer if item.kind not in (REPORT, RUBRIC) else None,
        "model": config.model,
        "prompt_version": prompts.version(config.mode),
        "finish_reason": reply.finish_reason,
    }


def run_items(
    store: ArtifactStore,
    run: str,
    items: Sequence[Item],
    client: ModelClient,
    config: EvalConfig,
    *,
    grader: Grader | None = None,
    concurrency: int = 4,
    on_answer: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every item's prediction, in the items' order: finished ones from the store, the rest
    asked (``concurrency`` at once) and written as each comes back (``on_answer`` hears of
    each, e.g. for a progress bar)."""
    start_run(store, run, config)
    done: dict[str, dict[str, Any]] = {}
    for suite in dict.fromkeys(i.suite for i in items):
        done |= {f"{suite}/{k}": v for k, v in finished(store, run, suite).items()}
    for item in items:
        record = done.get(f"{item.suite}/{item.id}")
        if record and record.get("item") != item_digest(item):
            raise Conflict(f"{item.suite} item {item.id} is not the one run {run} answered")
    todo = [i for i in items if f"{i.suite}/{i.id}" not in done]
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = {pool.submit(ask, client, item, config, grader): item for item in todo}
        for future in as_completed(futures):
            item, record = futures[future], future.result()
            store.put_bytes(item_key(run, item), json.dumps(record, sort_keys=True).encode())
            done[f"{item.suite}/{item.id}"] = record
            if on_answer:
                on_answer(record)
    finally:  # a failed item stops the run: nothing queued is asked for nothing
        pool.shutdown(cancel_futures=True)
    return [done[f"{i.suite}/{i.id}"] for i in items]
