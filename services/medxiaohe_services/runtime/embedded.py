"""Embedded defaults: everything in one process on one port, for a laptop or a demo.

A local folder is the object store, tasks run in-process, the report and rubric services use a
model loaded in the process, and a development PKI under the home folder provides mTLS (client
``medxiaohe-dev`` may call every RPC unless MEDXIAOHE_*__ALLOW says
otherwise).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from medxiaohe.common.secrets import home_secret
from medxiaohe.common.settings import SERVICE_NAMES, ServiceSettings, Settings
from medxiaohe.report.review import REVIEW
from medxiaohe.storage.artifacts import LATEST
from medxiaohe.training.runs import models_prefix
from medxiaohe_services.runtime.certs import DEV_CLIENT, DevPki, load_dev_pki, write_dev_pki

NER_MODELS = models_prefix("ner")
SMALL_MODEL = models_prefix("small")


def trained_ner(home: Path) -> bool:
    """Whether the home's local store holds a NER model (`make train-ner` publishes one)."""
    return (home / "store" / NER_MODELS / LATEST).is_file()


def tiny_model(home: Path) -> Path:
    """The tiny vision-language model (random weights), built into the home on first use, and
    again when the folder there is partial or of an earlier recipe. It takes its name only
    once whole."""
    from medxiaohe.models.tiny import build_tiny, is_current

    folder = home / "models" / "tiny-vlm"
    if is_current(folder):
        return folder
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tiny-vlm-") as work:
        built = build_tiny("qwen2_vl", Path(work) / "model")
        if folder.exists():
            folder.rename(Path(work) / "old")  # removed with the work folder
        built.rename(folder)
    return folder


def local_model(home: Path) -> str:
    """The in-process model of the report and rubric services: the platform-trained small
    model when the home's store has one, else the tiny one."""
    if (home / "store" / SMALL_MODEL / LATEST).is_file():
        return SMALL_MODEL
    return str(tiny_model(home))


def ensure_dev_pki(home: Path) -> DevPki:
    """The development PKI under home/certs, written on first use."""
    certs = home / "certs"
    return load_dev_pki(certs) or write_dev_pki(certs, clients=[DEV_CLIENT])


def embedded_settings(home: Path, port: int, *, insecure: bool = False) -> Settings:
    """Settings for `medxiaohe up`: the environment where it speaks, embedded defaults elsewhere;
    the command-line port and --insecure always win."""
    pki = ensure_dev_pki(home)
    env = Settings.from_env()
    defaults: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "store_uri": str(home / "store"),
        "broker_url": "",
        "met_build_if_missing": True,
        "model_cache_dir": home / "cache",
        "tls_cert": pki.server.cert,
        "tls_key": pki.server.key,
        "tls_client_ca": pki.ca,
        "deid_secret": SecretStr(home_secret(home)),
    }
    if "local_model_uri" not in env.model_fields_set:
        defaults["local_model_uri"] = local_model(home)
    if trained_ner(home):
        defaults["ner_model_uri"] = NER_MODELS
    for name in SERVICE_NAMES:
        defaults[name] = ServiceSettings(allow={DEV_CLIENT: ["*"]}, indexes={DEV_CLIENT: ["*"]})
    # the developer reviews the reports too: the review app on the next port
    defaults["report"] = ServiceSettings(
        allow={DEV_CLIENT: ["*", REVIEW]}, indexes={DEV_CLIENT: ["*"]}
    )
    defaults["review_port"] = port + 1 if port else 0
    update = {k: v for k, v in defaults.items() if k not in env.model_fields_set}
    if insecure:
        update["grpc_host"] = "127.0.0.1"
    return env.model_copy(update={**update, "grpc_port": port, "insecure": insecure})
