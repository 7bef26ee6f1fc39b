"""A model server in its own process on 127.0.0.1 ports (``medxiaohe model serve``), for the
demo, the serving benchmark and the tests: started with a fresh bearer token (and mTLS when
given certificates), waited for until ready, stopped."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

from medxiaohe.common.errors import Unavailable
from medxiaohe.common.ports import free_port, free_ports
from medxiaohe.models.client import tls_verify

CALLER = "local"  # the token's caller name, allowed everything


class Tls(NamedTuple):
    ca: Path  # the platform CA: client certificates must chain to it
    cert: Path  # the server's certificate and key
    key: Path


class Running(NamedTuple):
    url: str  # http(s)://127.0.0.1:PORT (REST v1/v2 and the OpenAI route)
    grpc_port: int  # gRPC v2 (mTLS only; 0 without TLS)
    token: str  # a bearer token allowed everything
    verify: str | bool  # what a client verifies the server with (the CA's path, or False)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def _settings_dir(folder: Path, token: str, tls: Tls | None, extra: dict[str, object]) -> Path:
    """Settings files the server reads with --secrets-dir (as from a mounted Secret)."""
    allow = extra.get("predictor_allow") or {}
    values: dict[str, object] = {
        "drain_grace_s": 2,  # a local server has no callers to wait for when it stops
        **extra,
        "predictor_tokens": {CALLER: token},
        "predictor_allow": {CALLER: ["*"], **allow},  # type: ignore[dict-item]
    }
    if tls:
        values |= {"tls_client_ca": tls.ca, "tls_cert": tls.cert, "tls_key": tls.key}
        values |= {"grpc_host": "127.0.0.1"}
    for name, value in values.items():
        path = folder / f"medxiaohe_{name}"
        path.write_text(json.dumps(value) if isinstance(value, dict | list) else str(value))
        path.chmod(0o600)
    return folder


@contextlib.contextmanager
def model_server(
    folder: Path,
    name: str,
    ready_s: float = 120.0,
    log: Path | None = None,
    tls: Tls | None = None,
    settings: dict[str, object] | None = None,
) -> Iterator[Running]:
    """The running server's addresses and token; its output goes to ``log`` when given (and the
    log's end into the error when it does not get ready). ``settings`` adds settings (their
    names without the MEDXIAOHE_ prefix); ``predictor_allow`` there adds callers beside the
    token's."""
    http_port, grpc_port = free_ports(2) if tls else (free_port(), 0)
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="medxiaohe-predictor-") as tmp:
        folder_of_settings = _settings_dir(Path(tmp), token, tls, settings or {})
        command = [sys.executable, "-m", "medxiaohe_services.cli", "model", "serve", str(folder)]
        command += ["--name", name, "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
        command += ["--secrets-dir", str(folder_of_settings), *([] if tls else ["--insecure"])]
        # the child inherits this environment; a local folder needs no hub
        output = log.open("wb") if log else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        scheme = "https" if tls else "http"
        running = Running(
            f"{scheme}://127.0.0.1:{http_port}", grpc_port, token, str(tls.ca) if tls else False
        )
        try:
            _wait_ready(process, running, name, ready_s, log)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(
    process: subprocess.Popen[bytes], running: Running, name: str, ready_s: float, log: Path | None
) -> None:
    deadline = time.monotonic() + ready_s
    url = f"{running.url}/v2/models/{name}/ready"
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise Unavailable(f"the model server did not get ready\n{tail}")
        try:
            answer = httpx.get(
                url, headers=running.headers, verify=tls_verify(running.verify), timeout=2
            )
            if answer.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
