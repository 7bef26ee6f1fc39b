"""`medxiaohe trajectories collect` and `medxiaohe trajectories export-reports`: tool-augmented
agent trajectories, filtered by whether the tools helped, and the report service's traces, as
chat data for SFT and RL (``trajectories/<name>``)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from medxiaohe_services.cli.met import StoreOption

app = typer.Typer(help="Tool-augmented agent trajectories.", no_args_is_help=True)
NameOption = Annotated[str, typer.Option(help="Publish as trajectories/<NAME>.")]


@app.command()
def collect(
    name: NameOption,
    questions: Annotated[
        str, typer.Option(help="Chat data with gold answers (PREFIX:FILE), e.g. synthesis/x:...")
    ],
    model: Annotated[str, typer.Option(help="Folder, s3:// URI or store prefix.")] = "models/sft",
    limit: Annotated[int, typer.Option(min=1, help="The first N questions.")] = 100,
    max_steps: Annotated[int, typer.Option(min=1, max=16, help="Tool turns per run.")] = 3,
    index: Annotated[str, typer.Option(help="Evidence index for search_evidence.")] = "",
    store: StoreOption = None,
) -> None:
    """Answer each question without tools, then with them; keep the runs the tools made right
    and publish them; prints the filter's counts as JSON."""
    from medxiaohe.agents.filtering import publish_trajectories, two_level_filter
    from medxiaohe.agents.tool_agent import Question, Toolbox, pair
    from medxiaohe.common.settings import Settings
    from medxiaohe.entities.tagger import DictionaryTagger
    from medxiaohe.entities.tree import EntityTree
    from medxiaohe.evidence.index import EvidenceIndex
    from medxiaohe.models.client import LocalModelClient
    from medxiaohe.models.folders import model_folder
    from medxiaohe.report.images import StudyImage
    from medxiaohe.storage import open_store
    from medxiaohe.training.chat_data import read_chat

    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    artifacts = open_store(settings.store_uri, settings)
    rows = [r for r in read_chat(artifacts, questions) if r.get("answer")][:limit]
    if not rows:
        raise typer.BadParameter(f"{questions} holds no rows with an 'answer'")
    asked = [
        Question(
            f"{i:05d}",
            str(next(m["content"] for m in r["messages"] if m["role"] == "user")),
            r["answer"],
            tuple(StudyImage(f"image-{k}", im) for k, im in enumerate(r["images"])),
        )
        for i, r in enumerate(rows)
    ]
    tree = EntityTree.load(artifacts)
    toolbox = Toolbox(
        tree, DictionaryTagger(tree), EvidenceIndex.load(artifacts, index) if index else None, index
    )
    folder = model_folder(model, settings)
    started = time.perf_counter()
    filtered = two_level_filter(
        pair(LocalModelClient.from_folder(folder), asked, toolbox, max_steps)
    )
    provenance = {
        "source": "agent",
        "model": f"{model}@{folder.name}",
        "questions": questions,
        "entity_tree_version": tree.version,
        "index": index,
    }
    body: dict[str, object] = {"filter": filtered.counts}
    if filtered.kept:
        manifest = publish_trajectories(artifacts, name, filtered, provenance)
        body["artifact"] = f"{manifest.prefix}/{manifest.version}"
    body["seconds"] = round(time.perf_counter() - started, 1)
    typer.echo(json.dumps(body))


@app.command("export-reports")
def export_reports(
    name: NameOption,
    report: Annotated[list[str] | None, typer.Option(help="Report ids (r-...) to export.")] = None,
    caller: Annotated[
        str, typer.Option(help="Or every report this caller (certificate name) generated.")
    ] = "",
    store: StoreOption = None,
) -> None:
    """The reasoning agent's trajectories of stored reports (tool calls, results, impression)
    as chat data, ``trajectories/<NAME>`` train.jsonl: ids as keyed pseudonyms, every string
    de-identified as ingestion does it. Name the reports, or the one caller whose reports go."""
    from medxiaohe.agents.filtering import from_report_trace
    from medxiaohe.common.secrets import required_secret
    from medxiaohe.common.settings import Settings
    from medxiaohe.report.store import ReportKeys, load_report, report_ids, report_owner
    from medxiaohe.storage import open_store
    from medxiaohe.training.chat_data import publish_chat

    if bool(report) == bool(caller):
        raise typer.BadParameter("name the reports (--report) or one caller (--caller), not both")
    settings = Settings.from_env(**({"store_uri": store} if store else {}))
    secret = required_secret(settings)
    artifacts = open_store(settings.store_uri, settings)
    if caller:
        owner = ReportKeys(secret.encode()).owner(caller)
        report = [i for i in report_ids(artifacts) if report_owner(artifacts, i) == owner]
    rows = [from_report_trace(*load_report(artifacts, i), secret) for i in report or []]
    rows = [r for r in rows if any(m.get("tool_calls") for m in r["messages"])]
    if not rows:
        raise typer.BadParameter("no such report has a reasoning trajectory with tool calls")
    meta = {"source": "report-trace", "reports": len(rows)}
    manifest = publish_chat(artifacts, f"trajectories/{name}", {"train": rows}, {}, meta)
    typer.echo(
        json.dumps({"reports": len(rows), "artifact": f"{manifest.prefix}/{manifest.version}"})
    )
