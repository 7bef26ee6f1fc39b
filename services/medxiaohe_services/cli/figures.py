"""`medxiaohe figures` (`make figures`): every CPU-sized figure the README and the model cards
quote, produced by the commands that own them, gathered into one JSON and one Markdown table
(``.medxiaohe/figures/``) and published to the store as ``figures/make``.

Each step runs its own command in a subprocess and keeps the JSON it prints (a model's figures
are its card's); a step whose data or model is missing is reported as skipped with the reason,
and the other steps still run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

CLI = [sys.executable, "-m", "medxiaohe_services.cli"]
TRAIN = [sys.executable, "-m", "medxiaohe_training"]
CONFIGS = Path("training-jobs/medxiaohe_training/configs")
MIRAGE = "mirage_predictions/medmcqa/cot"


def _last(outputs: list[Any]) -> Any:
    return outputs[-1]


@dataclass(frozen=True)
class Step:
    name: str
    commands: Callable[[Path], list[list[str]]]  # the last one prints the figures as JSON
    rows: Sequence[str]  # dotted paths of the headline figures in the Markdown table
    training: bool = False  # the commands but the last train a model (--skip-training)
    collect: Callable[[list[Any]], Any] = _last  # the figures, from each command's JSON


def _extraction(data: Path) -> list[list[str]]:
    """MIRAGE's released MedMCQA predictions re-scored with its extraction and with ours."""
    out = []
    for llm in ("gpt-4-32k", "gpt-35-turbo-16k"):
        for how in ("mirage", "ours"):
            out.append(
                [*CLI, "eval", "score-predictions", "--suite", "medmcqa", "--format", "mirage",
                 "--predictions", str(data / MIRAGE / llm), "--data", str(data / "medmcqa"),
                 "--extraction", how]
            )  # fmt: skip
    return out


def _trained(stage: str, config: str, model: str) -> Callable[[Path], list[list[str]]]:
    """Train a stage from its config, then print the published model's card."""
    return lambda data: [
        [*TRAIN, stage, "--config", str(CONFIGS / config)],
        [*CLI, "model", "show", model],
    ]


STEPS = (
    Step(
        "small",
        _trained("small", "small.yaml", "models/small"),
        (
            "figures.perplexity",
            "figures.synth_qa.accuracy",
            "figures.synth_qa.balanced_accuracy",
            "figures.synth_qa.top_answer_share",
            "figures.synth_qa.unparsed_rate",
            "figures.vqa_rad_closed",
        ),
        training=True,
    ),
    Step(
        "rl",
        _trained("rl", "rl-small.yaml", "models/rl"),
        (
            "figures.synth_qa_heldout.sft",
            "figures.synth_qa_heldout.rl",
            "figures.synth_qa_heldout.balanced_accuracy",
            "figures.synth_qa_heldout.top_answer_share",
            "figures.synth_qa_heldout.unparsed_rate",
            "figures.synth_qa_heldout.best_constant",
            "figures.rl_curves.first10.reward/total",
            "figures.rl_curves.last10.reward/total",
            "figures.rl_curves.entropy_below_floor_steps",
            "figures.rl_curves.safety_gate_zeroed",
            "figures.safety_gate_probe",
        ),
        training=True,
    ),
    Step(
        "decontamination",
        lambda data: [
            [
                *CLI,
                "decontaminate",
                "--name",
                "small",
                "--source",
                "raw:cpt",
                "--source",
                "dataset:small",
                "--source",
                "chat:synthesis/small:train.jsonl",
                "--source",
                "chat:sft-data/small:train.jsonl",
                "--data",
                str(data),
            ]
        ],
        ("contaminated", "by_kind.vqa_rad_closed", "by_kind.vqa_rad_open", "records_per_s"),
    ),
    Step(
        "paraphrase",
        lambda data: [[*CLI, "eval", "paraphrase", "--data", str(data / "vqa_rad")]],
        ("train", "test", "images"),
    ),
    Step(
        "mixture",
        lambda data: [[*CLI, "bench", "mixture", "--data", str(data)]],
        ("ratios", "sampler_overhead", "synthesis.accepted", "synthesis.rejected_by_rule.split"),
    ),
    Step(
        "rubric",
        lambda data: [[*CLI, "eval", "rubric", "--split", "heldout", "--level", "all"]],
        ("pairwise_accuracy", "coverage"),
    ),
    Step(
        "grounding",
        lambda data: [[*CLI, "eval", "grounding", "--split", "val", "--tune-split", "train"]],
        tuple(
            f"{who}.{kind}.recall"
            for who in ("verifier", "token_overlap")
            for kind in ("addition", "negation", "laterality", "location", "severity", "omission")
        )
        + tuple(
            f"{who}.{figure}"
            for who in ("verifier", "token_overlap")
            for figure in ("false_alarm_rate", "omission.spurious_pair_rate", "not_checked")
        ),
    ),
    Step(
        "extraction",
        _extraction,
        ("",),
        collect=lambda outs: {
            f"{llm}.{how}": out
            for (llm, how), out in zip(
                [(m, h) for m in ("gpt-4-32k", "gpt-35-turbo-16k") for h in ("mirage", "ours")],
                outs,
                strict=True,
            )
        },
    ),
)


def _last_json(text: str) -> Any:
    """What a command printed as JSON: its whole output (pretty-printed), else its last line
    that parses (libraries may log to stdout first)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def run_step(step: Step, data: Path, timeout: float, skip_training: bool) -> dict[str, Any]:
    started = time.perf_counter()
    commands = step.commands(data)
    if skip_training and step.training:
        commands = commands[-1:]
    outputs = []
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return {"skipped": reason[:300], "command": " ".join(command[2:])}
        outputs.append(_last_json(done.stdout))
    return {
        "figures": step.collect(outputs),
        "command": " ".join(commands[-1][2:]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}[{i}]")]
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return [(path, value)]
    return []


def _pick(figures: Any, dotted: str) -> Any:
    for part in filter(None, dotted.split(".")):
        if not isinstance(figures, dict) or part not in figures:
            return None
        figures = figures[part]
    return figures


def markdown(results: dict[str, Any]) -> str:
    lines = ["| step | figure | value |", "|---|---|---|"]
    for step in STEPS:  # in the order they run
        name, result = step.name, results["steps"].get(step.name)
        if result is None:
            continue
        if "skipped" in result:
            lines.append(f"| {name} | skipped | {result['skipped']} |")
            continue
        for dotted in step.rows:
            for path, value in _leaves(_pick(result["figures"], dotted), dotted):
                if isinstance(value, int | float):
                    lines.append(f"| {name} | {path} | {value} |")
        lines.append(f"| {name} | command | `{result['command']}` |")
    return "\n".join(lines) + "\n"


def figures(
    data: Annotated[Path, typer.Option(help="The shared data folder.")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="Where figures.json and figures.md go.")] = Path(
        ".medxiaohe/figures"
    ),
    skip_training: Annotated[
        bool, typer.Option(help="Read the published models' cards instead of training them.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Run these steps only (the others' figures stay).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per command, at most.")] = 3600,
) -> None:
    """Produce every CPU-sized figure (the small model, RL, decontamination and its paraphrase
    threshold, mixture, rubric, grounding, extraction) and write one JSON and one Markdown
    table."""
    from medxiaohe.common.settings import Settings
    from medxiaohe.storage import open_store, publish

    results: dict[str, Any] = {"steps": {}}
    if only and (out / "figures.json").is_file():  # the other steps' figures stay
        results = json.loads((out / "figures.json").read_text())
    started = time.perf_counter()
    for step in STEPS:
        if only and step.name not in only:
            continue
        results["steps"][step.name] = run_step(step, data, timeout, skip_training)
        typer.echo(f"{step.name}: {results['steps'][step.name].get('skipped', 'done')}", err=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    body = json.dumps(results, indent=2, sort_keys=True)
    table = markdown(results)
    (out / "figures.json").write_text(body)
    (out / "figures.md").write_text(table)
    store = open_store(Settings.from_env().store_uri)
    publish(store, "figures/make", {"figures.json": body.encode(), "figures.md": table.encode()})
    typer.echo(table)
