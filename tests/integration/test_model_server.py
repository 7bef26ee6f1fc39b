"""The predictor as a real KServe ModelServer on 127.0.0.1 (its own process, as the pod runs
it): the OpenAI chat route (text, an image, streaming), REST v2 and gRPC v2, and 400s."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc
from PIL import Image

from medxiaohe.models.process import model_server
from medxiaohe.models.tiny import build_tiny

pytestmark = pytest.mark.integration

NAME = "tiny-vlm"
BROKEN_IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    folder = build_tiny("qwen2-vl", tmp_path_factory.mktemp("vlm") / "model", seed=2)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with model_server(folder, NAME, ready_s=90, log=log) as running:
        yield running.url, running.grpc_port


def chat(base: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base}/openai/v1/chat/completions", json=body, timeout=60)


def image_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 90, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_openai_chat_text_and_image(server: tuple[str, int]) -> None:
    base, _ = server
    text_only = chat(
        base, model=NAME, messages=[{"role": "user", "content": "Findings?"}], max_tokens=4
    )
    assert text_only.status_code == 200
    body = text_only.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == NAME
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["completion_tokens"] <= 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    parts = [
        {"type": "text", "text": "Findings?"},
        {"type": "image_url", "image_url": {"url": image_uri()}},
    ]
    with_image = chat(base, messages=[{"role": "user", "content": parts}], max_tokens=4).json()
    assert with_image["usage"]["prompt_tokens"] > usage["prompt_tokens"]  # the image's tokens


def test_openai_streaming_matches_the_whole_answer(server: tuple[str, int]) -> None:
    base, _ = server
    request = {
        "messages": [{"role": "user", "content": "Describe the study."}],
        "max_tokens": 6,
        "temperature": 0.9,
        "seed": 4,
    }
    whole = chat(base, **request).json()
    events = []
    with httpx.stream(
        "POST", f"{base}/openai/v1/chat/completions", json={**request, "stream": True}, timeout=60
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_open_inference_protocol_rest_and_grpc(server: tuple[str, int]) -> None:
    base, grpc_port = server
    rest = httpx.post(
        f"{base}/v2/models/{NAME}/infer",
        json={
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Findings?"]}],
            "parameters": {"max_tokens": 3},
        },
        timeout=60,
    )
    assert rest.status_code == 200
    out = rest.json()
    assert out["outputs"][0]["name"] == "text"
    assert out["parameters"]["completion_tokens"] <= 3
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
    messages = json.dumps([{"role": "user", "content": "Findings?"}]).encode()
    request = v2.ModelInferRequest(
        model_name=NAME,
        inputs=[
            v2.ModelInferRequest.InferInputTensor(
                name="messages",
                datatype="BYTES",
                shape=[1],
                contents=v2.InferTensorContents(bytes_contents=[messages]),
            )
        ],
        parameters={"max_tokens": v2.InferParameter(int64_param=3)},
    )
    reply = stub.ModelInfer(request, timeout=60)
    assert reply.outputs[0].name == "text"
    assert reply.parameters["completion_tokens"].int64_param <= 3
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(v2.ModelInferRequest(model_name=NAME), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages must not be empty"),
        ({"max_tokens": 5}, "messages must be a list"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "context"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "number"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}, "unknown model"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": "data:image/png;base64,AAAA"},
                            }
                        ],
                    }
                ]
            },
            "decodable image",
        ),
    ],
)
def test_bad_requests_get_400_with_the_reason(
    server: tuple[str, int], body: dict[str, object], message: str
) -> None:
    base, _ = server
    for stream in (False, True):
        reply = chat(base, **body, stream=stream)
        assert reply.status_code == 400
        assert message in reply.json()["error"]["message"]


class FlakyProxy:
    """A real HTTP hop in front of the model server that answers 503 to the first ``fail``
    requests (as an overloaded predictor would), then forwards."""

    def __init__(self, upstream: str, fail: int) -> None:
        import http.server
        import threading

        proxy = self
        self.seen = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                proxy.seen += 1
                if proxy.seen <= fail:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                reply = httpx.post(
                    upstream + self.path,
                    content=body,
                    timeout=60,
                    headers={"content-type": "application/json"},
                )
                self.send_response(reply.status_code)
                self.send_header("content-type", reply.headers["content-type"])
                self.send_header("content-length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def test_http_client_retries_a_503_then_gives_up_clearly(server: tuple[str, int]) -> None:
    from medxiaohe.common.errors import InvalidInput, Unavailable
    from medxiaohe.models.chat import ChatParams
    from medxiaohe.models.client import HttpModelClient

    base, _ = server
    question = [{"role": "user", "content": "Findings?"}]
    png = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 0, 0)).save(png, "PNG")
    flaky = FlakyProxy(base, fail=1)
    client = HttpModelClient(f"{flaky.url}/openai/v1", NAME, retries=2, backoff_s=0.01)
    reply = client.chat(question, [png.getvalue()], ChatParams(max_tokens=3))
    assert flaky.seen == 2  # one 503, then the answer
    assert reply.usage.completion_tokens <= 3
    sampled = ChatParams(max_tokens=3, temperature=0.9, seed=1)
    pieces = list(client.stream(question, params=sampled))
    whole = client.chat(question, params=sampled)
    assert pieces[-1] == whole
    assert reply.usage.prompt_tokens > whole.usage.prompt_tokens  # the image went along
    with pytest.raises(InvalidInput, match="messages must not be empty"):
        client.chat([])  # a 400 is not retried

    down = FlakyProxy(base, fail=10)
    stubborn = HttpModelClient(f"{down.url}/openai/v1", retries=2, backoff_s=0.01)
    with pytest.raises(Unavailable, match=r"failed 3 times \(last: HTTP 503\); giving up"):
        stubborn.chat(question)
    assert down.seen == 3
