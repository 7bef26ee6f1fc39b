"""A model server in its own process on 127.0.0.1 ports (``medxiaohe model serve``), for the
demo and the serving benchmark: started, waited for until ready, stopped."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx

from medxiaohe.common.errors import Unavailable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Running(NamedTuple):
    url: str  # http://127.0.0.1:PORT (REST v1/v2 and the OpenAI route)
    grpc_port: int  # gRPC v2


@contextlib.contextmanager
def model_server(
    folder: Path, name: str, ready_s: float = 120.0, log: Path | None = None
) -> Iterator[Running]:
    """The running server's addresses; its output goes to ``log`` when given (and the log's
    end into the error when it does not get ready)."""
    http_port, grpc_port = _free_port(), _free_port()
    command = [sys.executable, "-m", "medxiaohe_services.cli", "model", "serve", str(folder)]
    command += ["--name", name, "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    # the child inherits this environment; a local folder needs no hub
    output = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + ready_s
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:] if log else ""
                raise Unavailable(f"the model server for {folder} did not get ready\n{tail}")
            try:
                if httpx.get(f"{base}/v2/models/{name}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield Running(base, grpc_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
