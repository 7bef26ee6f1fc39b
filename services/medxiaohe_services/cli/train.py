"""`medxiaohe train ...`: submit a training stage locally or to Kubernetes; watch and cancel it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

app = typer.Typer(
    help="Training jobs: submit, pipeline, status, logs, cancel.", no_args_is_help=True
)

ValuesOption = Annotated[
    Path,
    typer.Option(
        help="Chart values (its training and store blocks) for Kubernetes runs, over the "
        "chart's defaults."
    ),
]
NamespaceOption = Annotated[str, typer.Option(help="Kubernetes namespace.")]
# the chart's defaults, shipped in the package (deploy/chart; not imported: it needs helm)
DEFAULT_VALUES = Path(__file__).resolve().parents[1] / "deploy" / "chart" / "values.yaml"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's config) as literal blocks."""


_BlockDumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def _launcher(namespace: str):  # type: ignore[no-untyped-def]
    from medxiaohe_services.deploy.training import KubernetesLauncher

    return KubernetesLauncher.from_kubeconfig(namespace)


def _values(values: Path, nodes: int, gpus_per_node: int) -> dict[str, Any]:
    """The values file with the run's shape on top (the chart's defaults under both)."""
    from medxiaohe_services.deploy.training import run_values

    chart_values = yaml.safe_load(values.read_text()) if values.is_file() else {}
    return run_values(chart_values or {}, nodes, gpus_per_node)


def _validated(objects: list[dict[str, Any]]) -> None:
    """Every object validates strictly against the Kubernetes schemas, or BadParameter."""
    from medxiaohe_services.deploy.manifests import validate_object

    for obj in objects:
        if errors := validate_object(obj):
            raise typer.BadParameter(f"{obj['kind']}: {'; '.join(errors)}")


@app.command()
def submit(
    stage: Annotated[str, typer.Argument(help="Stage: ner, cpt, sft, rft, rl or small.")],
    config: Annotated[
        Path | None, typer.Option(help="The stage's YAML config; the stage's defaults without.")
    ] = None,
    backend: Annotated[str, typer.Option(help="local or kubernetes.")] = "local",
    nodes: Annotated[int, typer.Option(min=1, help="Nodes (kubernetes).")] = 1,
    gpus_per_node: Annotated[int, typer.Option(min=0, help="GPUs per node.")] = 0,
    run_id: Annotated[str, typer.Option(help="Run id; a new one when empty.")] = "",
    values: ValuesOption = DEFAULT_VALUES,
    namespace: NamespaceOption = "medxiaohe",
    dry_run: Annotated[
        bool, typer.Option(help="Print the validated objects instead of submitting them.")
    ] = False,
) -> None:
    """Run a stage as a local process, or submit it as a Kubernetes Job."""
    from medxiaohe.training.config import load_config
    from medxiaohe.training.runs import launch_yaml, new_run_id
    from medxiaohe_training.cli import STAGES

    if stage not in STAGES:
        raise typer.BadParameter(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    if backend not in ("local", "kubernetes"):
        raise typer.BadParameter("backend must be local or kubernetes")
    resolved = load_config(STAGES[stage][0], config)  # fail here, not in a pod
    run_id = run_id or new_run_id(stage)
    if backend == "local":
        from medxiaohe_services.deploy.local import run_local

        if nodes > 1:
            raise typer.BadParameter("the local backend runs on this machine: --nodes 1")
        typer.echo(f"run {run_id}")
        raise typer.Exit(run_local(stage, config, run_id, max(1, gpus_per_node)))

    from medxiaohe_services.deploy.training import render_job

    chart_values = _values(values, nodes, gpus_per_node)
    config_yaml = launch_yaml(resolved)
    if dry_run:
        objects = render_job(stage, run_id, config_yaml, chart_values, namespace)
        _validated(objects)
        typer.echo(yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False))
        return
    for name in _launcher(namespace).submit(stage, run_id, config_yaml, chart_values):
        typer.echo(f"created {name}")
    typer.echo(f"run {run_id}")


@app.command()
def pipeline(
    config: Annotated[Path, typer.Option(help="The pipeline's YAML (its stages, in order).")],
    run_id: Annotated[
        str, typer.Option(help="Pipeline id; re-use it to resume at the stage that failed.")
    ] = "",
    backend: Annotated[str, typer.Option(help="local or kubernetes.")] = "local",
    gpus_per_node: Annotated[int, typer.Option(min=0, help="GPUs per node (per stage).")] = 0,
    values: ValuesOption = DEFAULT_VALUES,
    namespace: NamespaceOption = "medxiaohe",
    dry_run: Annotated[
        bool, typer.Option(help="Print every stage's validated Kubernetes objects; run nothing.")
    ] = False,
) -> None:
    """Run a curriculum: each stage starts from the model the one before published; locally
    as processes, or as one Kubernetes Job per stage submitted when the previous succeeded."""
    from medxiaohe.common.errors import MedxError
    from medxiaohe.common.settings import Settings
    from medxiaohe.training.pipeline import plan, run_pipeline
    from medxiaohe.training.runs import new_run_id
    from medxiaohe_training.cli import STAGES

    if backend not in ("local", "kubernetes"):
        raise typer.BadParameter("backend must be local or kubernetes")
    pipeline_id = run_id or new_run_id("pl")
    try:
        steps = plan(config, pipeline_id, {k: v[0] for k, v in STAGES.items()})
    except MedxError as exc:
        raise typer.BadParameter(str(exc)) from None
    if dry_run:
        from medxiaohe_services.deploy.training import render_job

        chart_values = _values(values, 1, gpus_per_node)
        objects = [
            o
            for s in steps
            for o in render_job(s.stage, s.run_id, s.config_yaml(), chart_values, namespace)
        ]
        _validated(objects)
        typer.echo(yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False))
        return
    settings = Settings.from_env()
    runner: Any
    if backend == "local":  # needs none of the deploy dependencies
        from medxiaohe_services.deploy.local import LocalRunner

        runner = LocalRunner(settings.store_uri, settings, max(1, gpus_per_node))
    else:
        from medxiaohe_services.deploy.training import KubernetesRunner

        runner = KubernetesRunner(_launcher(namespace), _values(values, 1, gpus_per_node))
    typer.echo(f"pipeline {pipeline_id}", err=True)
    try:
        done = run_pipeline(steps, runner, say=lambda line: typer.echo(line, err=True))
    except MedxError as exc:
        typer.echo(f"pipeline {pipeline_id}: {exc}; run it again with --run-id {pipeline_id}")
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"pipeline": pipeline_id, "stages": done}))


@app.command()
def status(run_id: str, namespace: NamespaceOption = "medxiaohe") -> None:
    """The run's Job state and its pods, as JSON."""
    typer.echo(json.dumps(asdict(_launcher(namespace).status(run_id))))


@app.command()
def logs(
    run_id: str,
    namespace: NamespaceOption = "medxiaohe",
    tail: Annotated[int | None, typer.Option(help="Last lines per pod.")] = None,
) -> None:
    """The training container's log of every pod of the run."""
    for pod, text in _launcher(namespace).logs(run_id, tail).items():
        typer.echo(f"==> {pod} <==\n{text}")


@app.command()
def cancel(run_id: str, namespace: NamespaceOption = "medxiaohe") -> None:
    """Delete the run's Job, its pods, Service and ConfigMap (checkpoints stay in the store)."""
    for name in _launcher(namespace).cancel(run_id):
        typer.echo(f"deleted {name}")
