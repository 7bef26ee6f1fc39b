"""The `medxiaohe` command line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from medxiaohe.common.logs import setup_logging
from medxiaohe.common.settings import SERVICE_NAMES, ServiceName, Settings
from medxiaohe_services.cli import (
    bench,
    evaluate,
    figures,
    harness,
    index,
    ingest,
    met,
    mixture,
    model,
    rubric,
    synthesize,
    train,
    trajectories,
    verify,
)

app = typer.Typer(help="MedXIAOHE: medical vision-language platform.", no_args_is_help=True)
HOME = Path(".medxiaohe")


@app.command()
def certs(
    out: Annotated[Path, typer.Option(help="Folder for the PEM files.")] = HOME / "certs",
    client: Annotated[list[str] | None, typer.Option(help="Client identity (repeatable).")] = None,
    host: Annotated[list[str] | None, typer.Option(help="Extra server DNS name or IP.")] = None,
) -> None:
    """Write a development CA, a server certificate and client certificates."""
    from medxiaohe_services.runtime.certs import DEV_CLIENT, write_dev_pki

    pki = write_dev_pki(out, clients=client or [DEV_CLIENT], hosts=host)
    typer.echo(f"CA {pki.ca}\nserver {pki.server.cert}")
    for name, paths in pki.clients.items():
        typer.echo(f"client {name} {paths.cert}")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="gRPC port for all four services.")] = 50051,
    home: Annotated[Path, typer.Option(help="Certificates and the local store live here.")] = HOME,
    insecure: Annotated[
        bool, typer.Option(help="Plaintext on 127.0.0.1 (development only).")
    ] = False,
) -> None:
    """Run all four services in one process: mTLS, a local folder store, in-process tasks."""
    from medxiaohe_services.runtime.embedded import embedded_settings
    from medxiaohe_services.runtime.services import build_platform
    from medxiaohe_services.runtime.tracing import setup_tracing

    settings = embedded_settings(home, port, insecure=insecure)
    setup_logging(settings.log_level)
    setup_tracing(settings, "platform")
    asyncio.run(build_platform(settings, list(SERVICE_NAMES)).serve_until_signal())  # type: ignore[arg-type]


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICE_NAMES)}.")],
    insecure: Annotated[
        bool, typer.Option(help="Plaintext on 127.0.0.1 (development only).")
    ] = False,
) -> None:
    """Run one service from MEDXIAOHE_* settings, as its pod does."""
    from medxiaohe_services.runtime.services import build_platform
    from medxiaohe_services.runtime.tracing import setup_tracing

    if service not in SERVICE_NAMES:
        raise typer.BadParameter(
            f"unknown service {service!r}; choose from {', '.join(SERVICE_NAMES)}"
        )
    settings = Settings.from_env(
        **({"insecure": True, "grpc_host": "127.0.0.1"} if insecure else {})
    )
    setup_logging(settings.log_level)
    setup_tracing(settings, service)
    name: ServiceName = service  # type: ignore[assignment]
    asyncio.run(build_platform(settings, [name]).serve_until_signal())


@app.command()
def health(
    target: Annotated[str, typer.Argument(help="host:port of a service's health port.")],
    service: Annotated[
        str, typer.Option(help="The gRPC service to ask about; empty: the server as a whole.")
    ] = "",
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Ask a service's health port (plaintext, health only, as kubelet's probes do) whether it
    is SERVING; print one JSON line and exit 1 unless it is. `helm test` runs this."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            status = exc.code().name  # UNAVAILABLE (nothing listens), DEADLINE_EXCEEDED, ...
    typer.echo(json.dumps({"target": target, "service": service, "status": status}))
    raise typer.Exit(0 if status == "SERVING" else 1)


@app.command()
def demo(
    home: Annotated[
        Path, typer.Option(help="Where the demo keeps certificates and its store.")
    ] = HOME,
) -> None:
    """Start the embedded platform, exercise it over mTLS, and stop it."""
    from medxiaohe_services.demo import run_demo

    raise typer.Exit(run_demo(home))


app.command()(figures.figures)
app.add_typer(met.app, name="met")
app.add_typer(mixture.app, name="mixture")
app.add_typer(evaluate.app, name="eval")
app.add_typer(bench.app, name="bench")
app.add_typer(index.app, name="index")
app.add_typer(train.app, name="train")
app.add_typer(model.app, name="model")
app.add_typer(trajectories.app, name="trajectories")
app.add_typer(rubric.app, name="rubric")
app.command()(ingest.ingest)
app.command()(ingest.coverage)
app.command()(synthesize.synthesize)
app.command()(harness.decontaminate)
app.command()(verify.verify)
evaluate.app.command("suite")(harness.suite)
evaluate.app.command("score-predictions")(harness.score_predictions)

chart_app = typer.Typer(help="The Helm chart.", no_args_is_help=True)
app.add_typer(chart_app, name="chart")
store_app = typer.Typer(help="The object store.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("policies")
def store_policies(
    bucket: Annotated[str, typer.Option(help="The store's bucket.")],
    prefix: Annotated[str, typer.Option(help="The store's root under the bucket.")] = "",
) -> None:
    """Each component's IAM policy (MinIO or AWS) for a store at s3://BUCKET/PREFIX, as one JSON
    object: create one user per component with its policy and put its keys in the Secret that
    the chart's store.s3.credentials names for it."""
    from medxiaohe.storage.access import COMPONENTS, iam_policy

    policies = {name: iam_policy(name, bucket, prefix) for name in COMPONENTS}
    typer.echo(json.dumps(policies, indent=2))


@chart_app.command("check")
def chart_check() -> None:
    """Lint the chart, render it for default values and every profile, validate every object."""
    from medxiaohe_services.deploy.manifests import CHART, check_chart

    report = check_chart(sorted((CHART / "profiles").glob("*.yaml")))
    unchecked = report.pop("unchecked", [])
    for label, problems in report.items():
        typer.echo(f"{label}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            typer.echo(f"  {problem}")
    for line in unchecked:  # a notice, not a failure (a package without its CRD schemas)
        typer.echo(f"unchecked: {line}")
    raise typer.Exit(1 if any(report.values()) else 0)


def main() -> None:
    """The CLI; a platform error (bad input, nothing found, no cluster) is one line, exit 1."""
    from medxiaohe.common.errors import MedxError

    try:
        app()
    except MedxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
