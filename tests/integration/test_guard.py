"""`medxiaohe model guard`: the predictor's front door in front of a runtime that
authenticates nobody (KServe's Hugging Face runtime with vLLM, in the GPU profile). Here the
upstream is a plain HTTP server the test starts on loopback; the guard runs as its own process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from medxiaohe.common.ports import free_port

pytestmark = pytest.mark.integration
TOKENS = {"report": "report-token-0123456789", "limited": "limited-token-0123456789"}
ALLOW = {"report": ["ChatCompletions"], "limited": ["ModelInfer"]}


class Upstream(BaseHTTPRequestHandler):
    """Answers every request with what it saw: method, path, whether credentials came."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "authorization": self.headers.get("authorization"),
            "body": json.loads(body) if body else None,
        }
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    settings = tmp_path_factory.mktemp("guard-settings")
    for name, value in {"predictor_tokens": TOKENS, "predictor_allow": ALLOW}.items():
        (settings / f"medxiaohe_{name}").write_text(json.dumps(value))
    port = free_port()
    command = [sys.executable, "-m", "medxiaohe_services.cli", "model", "guard", "--upstream",
               f"http://127.0.0.1:{upstream.server_port}", "--http-port", str(port),
               "--insecure", "--secrets-dir", str(settings)]  # fmt: skip
    log = (settings / "guard.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                httpx.get(f"{base}/v2/health/ready", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert process.poll() is None, (settings / "guard.log").read_text()
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        upstream.shutdown()


def test_the_guard_lets_only_allowed_callers_through_and_keeps_their_credentials(
    guard: str,
) -> None:
    url = f"{guard}/openai/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "Findings?"}]}
    assert httpx.post(url, json=body).status_code == 401  # nobody
    wrong = {"authorization": "Bearer not-a-token"}
    assert httpx.post(url, json=body, headers=wrong).status_code == 401
    limited = {"authorization": f"Bearer {TOKENS['limited']}"}
    assert httpx.post(url, json=body, headers=limited).status_code == 403  # not on its list
    allowed = {"authorization": f"Bearer {TOKENS['report']}"}
    reply = httpx.post(f"{url}?x=1", json=body, headers=allowed)
    assert reply.status_code == 200, reply.text
    seen = reply.json()
    assert (seen["method"], seen["path"]) == ("POST", "/openai/v1/chat/completions?x=1")
    assert seen["body"] == body
    assert seen["authorization"] is None  # the caller's token stays at the door
    repository = f"{guard}/v2/repository/models/x/unload"
    assert httpx.post(repository, headers=allowed).status_code == 403  # nobody unloads
