"""`medxiaohe eval suite`, `medxiaohe eval score-predictions` and `medxiaohe decontaminate`:
the benchmark harness and the overlap check between training data and benchmarks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from medxiaohe_services.cli.met import StoreOption

if TYPE_CHECKING:
    from medxiaohe.common.settings import Settings
    from medxiaohe.models.client import ModelClient

DATA = Path("../shared/data")
DEFAULT_SUITES = "medqa,medmcqa,pubmedqa,mmlu_med,vqa_rad_closed,vqa_rad_open,iu_xray,healthbench"
DataOption = Annotated[Path, typer.Option(help="The shared data root (each suite's folder).")]
SuitesOption = Annotated[str, typer.Option(help="Comma-separated suites.")]
PathOption = Annotated[
    list[str] | None,
    typer.Option(
        "--path",
        help="SUITE=PATH: a suite's own file or folder, or a store prefix such as "
        "synthesis/<name> (repeatable).",
    ),
]


def _paths(values: list[str] | None, settings: Settings | None = None) -> dict[str, Path]:
    """Suite -> its path; a path that is not on disk is a store artifact, fetched (verified)."""
    out = {}
    for value in values or []:
        suite, sep, path = value.partition("=")
        if not sep or not path:
            raise typer.BadParameter(f"--path takes SUITE=PATH, not {value!r}")
        out[suite] = Path(path)
        if settings is not None and not out[suite].exists():
            from medxiaohe.storage import fetch, open_store

            store = open_store(settings.store_uri, settings)
            out[suite] = fetch(store, path.strip("/"), settings.model_cache_dir)
    return out


def _client(
    settings: Settings, model: str, endpoint: str, model_name: str, api_key_file: Path | None
) -> tuple[ModelClient, str]:
    """The client and the model's name with its version, as predictions record it."""
    from medxiaohe.models.client import LocalModelClient

    if endpoint:
        from medxiaohe_services.runtime.models import http_endpoint

        key = api_key_file.read_text().strip() if api_key_file else ""
        name = model_name or "default"
        return http_endpoint(settings, endpoint, name, key).client, f"{name}@{endpoint}"
    from medxiaohe.models.folders import model_folder

    folder = model_folder(model, settings)
    return LocalModelClient.from_folder(folder), f"{model}@{folder.name}"


def suite(
    run: Annotated[str, typer.Option(help="Run name: a re-run of it resumes.")],
    model: Annotated[
        str, typer.Option(help="In-process model: a folder, s3:// URI or store prefix.")
    ] = "models/small",
    endpoint: Annotated[
        str, typer.Option(help="An OpenAI-compatible URL up to /v1 instead (KServe, vLLM).")
    ] = "",
    model_name: Annotated[str, typer.Option(help="The endpoint's model name.")] = "",
    api_key_file: Annotated[
        Path | None, typer.Option(help="A file holding the endpoint's bearer token.")
    ] = None,
    suites: SuitesOption = DEFAULT_SUITES,
    data: DataOption = DATA,
    path: PathOption = None,
    limit: Annotated[int, typer.Option(min=0, help="First N items of each suite; 0: all.")] = 0,
    mode: Annotated[str, typer.Option(help="zero-shot or thinking.")] = "zero-shot",
    constrain: Annotated[
        bool, typer.Option(help="Hold answers to their JSON schema (response_format).")
    ] = True,
    decontamination: Annotated[
        str, typer.Option(help="decontamination/<NAME> whose items the clean scores leave out.")
    ] = "",
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests at once.")] = 4,
    grader: Annotated[
        str, typer.Option(help="HealthBench grader: deterministic, model or composite.")
    ] = ("deterministic"),
    judge: Annotated[str, typer.Option(help="The judge's OpenAI-compatible URL up to /v1.")] = "",
    judge_model: Annotated[str, typer.Option(help="The judge's model name.")] = "",
    out: Annotated[
        Path | None, typer.Option(help="Also write results.json, .md and .png to this folder.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Score one model on the medical suites: per-suite scores with bootstrap 95 % intervals,
    the unparsed rate, clean-subset scores, a macro average; published as eval/<run>."""
    from rich.progress import Progress

    from medxiaohe.common.settings import Settings
    from medxiaohe.eval.harness.evaluate import evaluate, load_items, publish_results
    from medxiaohe.eval.harness.run import EvalConfig, check_run
    from medxiaohe.eval.harness.scoring import chart, markdown
    from medxiaohe.eval.harness.suites import RUBRIC
    from medxiaohe.storage import open_store
    from medxiaohe_services.cli.evaluate import make_grader

    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    items, skipped = load_items(
        [s for s in suites.split(",") if s], data, _paths(path, settings), limit
    )
    for name, why in skipped.items():
        typer.echo(f"skipping {name}: {why}", err=True)
    if not items:
        raise typer.BadParameter("no suite could be read")
    check_run(run)
    client, model_id = _client(settings, model, endpoint, model_name, api_key_file)
    rubric = any(i.kind == RUBRIC for found in items.values() for i in found)
    chosen = make_grader(grader, settings, judge, judge_model, concurrency) if rubric else None
    named = grader if grader == "deterministic" else f"{grader}:{judge_model or judge}"
    config = EvalConfig(model_id, mode, constrain, grader=named)
    artifacts = open_store(settings.store_uri, settings)
    total = sum(len(v) for v in items.values())
    with Progress(transient=True) as progress:
        task = progress.add_task(f"eval {run}", total=total)
        result = evaluate(
            artifacts, client, config, items,
            run=run, grader=chosen, decontamination=decontamination,
            concurrency=concurrency, on_answer=lambda _: progress.advance(task),
        )  # fmt: skip
    body = {k: v for k, v in result.items() if k != "predictions"}
    body["artifact"] = publish_results(artifacts, result)
    body["skipped"] = skipped
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(body, indent=2, sort_keys=True))
        (out / "results.md").write_text(markdown(body))
        (out / "results.png").write_bytes(chart(body))
    typer.echo(json.dumps(body))


def score_predictions(
    suite: Annotated[str, typer.Option(help="medqa, medmcqa, pubmedqa or mmlu_med.")],
    predictions: Annotated[
        Path,
        typer.Option(help="ours: a predictions JSONL; mirage: a folder of per-question files."),
    ],
    data: Annotated[Path, typer.Option(help="The suite's data file or folder.")],
    format: Annotated[str, typer.Option("--format", help="ours or mirage.")] = "ours",
    extraction: Annotated[
        str, typer.Option(help="ours, or mirage (MIRAGE's locate_answer, to reproduce it).")
    ] = "ours",
) -> None:
    """Re-score recorded outputs against the suite's gold answers; prints accuracy (a
    fraction), n and the unparsed count."""
    from medxiaohe.eval.harness.rescore import read_mirage, read_ours, rescore
    from medxiaohe.eval.harness.suites import TEXT_CHOICE, load_suite

    if suite not in TEXT_CHOICE:
        raise typer.BadParameter(f"--suite is one of {', '.join(TEXT_CHOICE)}")
    if format not in ("ours", "mirage"):
        raise typer.BadParameter("--format is ours or mirage")
    items = load_suite(suite, data)
    outputs = read_ours(predictions) if format == "ours" else read_mirage(predictions, suite, items)
    typer.echo(json.dumps(rescore(items, outputs, extraction)))


def decontaminate(
    source: Annotated[
        list[str],
        typer.Option(
            help="Training data: raw:cpt (before de-identification), dataset:NAME, "
            "mixture:NAME, chat:PREFIX:FILE or a .jsonl file (repeatable)."
        ),
    ],
    name: Annotated[str, typer.Option(help="Publish as decontamination/<NAME>.")] = "default",
    suites: SuitesOption = DEFAULT_SUITES,
    data: DataOption = DATA,
    path: PathOption = None,
    store: StoreOption = None,
) -> None:
    """Find benchmark items (13-gram or exact-question overlap) in training data; per suite
    and per source; published for the harness's clean-subset scores."""
    from medxiaohe.common.settings import Settings
    from medxiaohe.eval.harness.contamination import decontaminate as scan
    from medxiaohe.eval.harness.contamination import publish_report
    from medxiaohe.eval.harness.evaluate import load_items
    from medxiaohe.storage import open_store

    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    items, skipped = load_items([s for s in suites.split(",") if s], data, _paths(path), 0)
    for suite_name, why in skipped.items():
        typer.echo(f"skipping {suite_name}: {why}", err=True)
    artifacts = open_store(settings.store_uri, settings)
    report = scan(artifacts, [i for v in items.values() for i in v], source, data)
    summary = {k: v for k, v in report.items() if k != "ids"}
    summary["artifact"] = publish_report(artifacts, name, report)
    typer.echo(json.dumps(summary))
