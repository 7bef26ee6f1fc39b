"""`medxiaohe model ...`: build a tiny model of a family, generate with a model folder, show
what a published model says of itself, serve a model, deploy it to KServe."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from medxiaohe.common.settings import Settings

app = typer.Typer(help="Vision-language and language models.", no_args_is_help=True)
# the model server's and the guard's settings folder
SecretsDir = Annotated[
    Path | None,
    typer.Option(help="A folder of settings files (a mounted Secret): one file per setting."),
]


@app.command("init-tiny")
def init_tiny(
    out: Annotated[str, typer.Option(help="s3://bucket/prefix (a new version) or a new folder.")],
    family: Annotated[
        str,
        typer.Option(
            help="Hugging Face model_type: qwen2_vl, qwen2_5_vl, gemma3, idefics3, "
            "llava_onevision or qwen2 (text only)."
        ),
    ] = "qwen2_vl",
    text: Annotated[
        list[Path] | None,
        typer.Option(help="Text files to train the tokenizer on (repeatable); built-in if none."),
    ] = None,
    vocab_size: Annotated[int, typer.Option(min=300, help="BPE vocabulary size, at most.")] = 2000,
    hidden_size: Annotated[int, typer.Option(min=16, help="Width of the language model.")] = 64,
    layers: Annotated[int, typer.Option(min=1, help="Layers of each tower.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build a tiny Hugging Face model of FAMILY from a config (random weights, a tokenizer
    trained here) and save it to OUT."""
    from medxiaohe.common.settings import Settings
    from medxiaohe.models.folders import save_model_folder
    from medxiaohe.models.tiny import build_tiny

    for path in text or []:
        if not path.is_file():
            raise typer.BadParameter(f"{path} does not exist")
    lines = [line for path in text or [] for line in path.read_text().splitlines()]
    with tempfile.TemporaryDirectory(prefix="medxiaohe-tiny-") as tmp:
        folder = build_tiny(
            family,
            Path(tmp) / "model",
            lines,
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            layers=layers,
            seed=seed,
        )
        typer.echo(save_model_folder(folder, out, Settings.from_env()))


@app.command()
def generate(
    folder: Annotated[Path, typer.Argument(help="A Hugging Face model folder.")],
    prompt: Annotated[str, typer.Option(help="The user's message.")],
    image: Annotated[Path | None, typer.Option(help="An image file shown with it.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Tokens to generate.")] = 64,
    json_schema: Annotated[
        Path | None, typer.Option(help="A JSON schema file the answer must validate against.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda if any).")] = None,
) -> None:
    """One chat turn through the serving engine; prints one JSON object: the text, the
    model's family, where it ran and the token counts."""
    import base64
    import json
    import mimetypes

    from medxiaohe.common.errors import MedxError
    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.vlm import load_vlm

    try:
        schema = json.dumps(json.loads(json_schema.read_text())) if json_schema else None
        content: object = prompt
        if image is not None:
            kind = mimetypes.guess_type(image.name)[0] or "image/png"
            url = f"data:{kind};base64," + base64.b64encode(image.read_bytes()).decode()
            content = [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": prompt},
            ]
        vlm = load_vlm(folder, device=device)
        params = ChatParams(max_tokens=max_tokens, json_schema=schema)
        result = ChatModel(vlm).chat([{"role": "user", "content": content}], params)
    except (MedxError, OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    where = vlm.placement.report()
    typer.echo(
        json.dumps(
            {
                "text": result.text,
                "family": vlm.family,
                "device": where["device"],
                "dtype": where["dtype"],
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
            }
        )
    )


@app.command()
def show(
    uri: Annotated[
        str,
        typer.Argument(help="Model: a folder, s3://bucket/prefix or a store prefix (models/sft)."),
    ],
) -> None:
    """Print a published model's provenance and figures as one JSON object."""
    import json

    from medxiaohe.common.errors import MedxError
    from medxiaohe.common.settings import Settings
    from medxiaohe.models.folders import model_card

    try:
        card = model_card(uri, Settings.from_env())
    except MedxError as exc:
        typer.echo(f"medxiaohe model show: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(card, indent=2, sort_keys=True))


@app.command()
def serve(
    uri: Annotated[
        str, typer.Argument(help="Model: a folder, s3://bucket/prefix or a store prefix.")
    ],
    name: Annotated[
        str, typer.Option(help="Model name in routes and responses.")
    ] = "medxiaohe-vlm",
    http_port: Annotated[int, typer.Option(help="REST (v1/v2 and OpenAI) port.")] = 8080,
    grpc_port: Annotated[int, typer.Option(help="gRPC v2 port (mTLS only); 0 disables.")] = 8081,
    insecure: Annotated[
        bool, typer.Option(help="Plaintext on 127.0.0.1, bearer tokens only, no gRPC v2.")
    ] = False,
    secrets_dir: SecretsDir = None,
) -> None:
    """Serve a vision-language model with the predictor the cluster runs: mTLS with the
    platform CA, or bearer tokens (MEDXIAOHE_PREDICTOR_TOKENS); callers need an allow entry."""
    from medxiaohe_services.model.server import serve as run

    run(uri, name, http_port, grpc_port, _door_settings(insecure, secrets_dir))


@app.command()
def guard(
    upstream: Annotated[
        str, typer.Option(help="The runtime it guards, on loopback: http://127.0.0.1:PORT.")
    ],
    http_port: Annotated[int, typer.Option(help="The port callers reach.")] = 8080,
    insecure: Annotated[
        bool, typer.Option(help="Plaintext on 127.0.0.1, bearer tokens only.")
    ] = False,
    secrets_dir: SecretsDir = None,
) -> None:
    """The predictor's front door alone, in front of a runtime that authenticates nobody
    (KServe's Hugging Face runtime with vLLM) in the same pod: mTLS or bearer tokens, the same
    allow-list and bounds; what passes is forwarded to UPSTREAM."""
    from urllib.parse import urlparse

    from medxiaohe_services.model.server import serve_guard

    if urlparse(upstream).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise typer.BadParameter("the upstream must be on loopback, in the guard's own pod")
    serve_guard(upstream, http_port, _door_settings(insecure, secrets_dir))


def _door_settings(insecure: bool, secrets_dir: Path | None) -> Settings:
    """The settings of the predictor's door (and the guard's): a mounted folder of settings
    files when given; plaintext bound to 127.0.0.1 only with --insecure."""
    from medxiaohe.common.settings import Settings

    overrides: dict[str, object] = {"_secrets_dir": secrets_dir} if secrets_dir else {}
    if insecure:
        overrides |= {"insecure": True, "grpc_host": "127.0.0.1"}
    return Settings.from_env(**overrides)


@app.command()
def deploy(
    uri: Annotated[str, typer.Argument(help="storageUri of the model (s3://..., hf://...).")],
    name: Annotated[str, typer.Option(help="InferenceService name.")] = "medxiaohe-vlm",
    runtime: Annotated[str, typer.Option(help="predictor or huggingface.")] = "predictor",
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per replica.")] = 0,
    values: Annotated[
        list[Path] | None, typer.Option(help="Chart values files (repeatable).")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "medxiaohe",
    dry_run: Annotated[bool, typer.Option(help="Print the validated object only.")] = False,
    pin: Annotated[
        bool,
        typer.Option(
            help="Deploy the version an s3:// model prefix names now (its _LATEST), read with "
            "this machine's MEDXIAOHE_S3_* settings; --no-pin deploys the prefix as it is."
        ),
    ] = True,
) -> None:
    """Render the InferenceService for a model (validated against KServe's CRD) and create or
    update it on the cluster."""
    import yaml

    from medxiaohe.common.errors import MedxError
    from medxiaohe.common.settings import Settings
    from medxiaohe.models.folders import pinned_uri
    from medxiaohe_services.deploy.model import deploy as apply
    from medxiaohe_services.deploy.model import render_inference_service
    from medxiaohe_services.deploy.training import KubernetesLauncher

    if pin:
        try:
            uri = pinned_uri(uri, Settings.from_env())
        except MedxError as exc:  # no store here, or none reachable
            if not dry_run:
                raise type(exc)(f"{exc}; pass --no-pin to deploy {uri} as it is") from None
            typer.echo(f"not pinned to a version: {exc}", err=True)
    isvc = render_inference_service(uri, name, values or [], runtime=runtime, gpus=gpus)
    if dry_run:
        typer.echo(yaml.safe_dump(isvc, sort_keys=False))
        return
    outcome = apply(KubernetesLauncher.from_kubeconfig(namespace), isvc)
    typer.echo(f"{outcome} InferenceService/{name} in {namespace}")
