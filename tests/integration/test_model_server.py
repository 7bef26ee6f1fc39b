"""The predictor as a real KServe ModelServer on 127.0.0.1 (its own process, as the pod runs
it), with mTLS from the platform CA and bearer tokens: the OpenAI chat route (text, an image,
streaming), REST v2 and gRPC v2, 400s, and the controls at its door (who may call what, the
repository routes, body, image and token bounds, the queue, client disconnects)."""

from __future__ import annotations

import base64
import io
import json
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as v2_grpc
from PIL import Image

from medxiaohe.models.tiny import build_tiny
from medxiaohe_services.model.process import Running, Tls, model_server
from medxiaohe_services.runtime.certs import DevPki
from tests.conftest import ALLOWED, LIMITED
from tests.servers import Weed

pytestmark = pytest.mark.integration

NAME = "tiny-vlm"
BROKEN_IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
LIMITS = {
    "predictor_max_body_mb": 1,
    "predictor_max_images": 2,
    "predictor_max_image_pixels": 100_000,
    "predictor_max_tokens": 2000,
    "predictor_max_pending": 1,
    "predictor_allow": {ALLOWED: ["ChatCompletions", "ModelInfer"], LIMITED: ["ModelInfer"]},
}


@dataclass
class Server:
    running: Running
    pki: DevPki
    log: Path

    @property
    def base(self) -> str:
        return self.running.url

    def http(self, caller: str | None = None) -> httpx.Client:
        """A client with the token, or with a caller's certificate instead."""
        if caller is None:
            return httpx.Client(
                verify=tls_context(self.pki), headers=self.running.headers, timeout=60
            )
        return httpx.Client(verify=tls_context(self.pki, self.pki, caller), timeout=60)


def tls_context(server: DevPki, client: DevPki | None = None, caller: str = "") -> ssl.SSLContext:
    """Trusts the server's CA; presents ``client``'s certificate for ``caller`` when given."""
    context = ssl.create_default_context(cafile=str(server.ca))
    if client is not None:
        paths = client.clients[caller]
        context.load_cert_chain(str(paths.cert), str(paths.key))
    return context


def no_eos(folder: Path) -> Path:
    """Generation runs to max_tokens, so a long one really is long."""
    config = folder / "generation_config.json"
    values = json.loads(config.read_text())
    values["eos_token_id"] = None
    config.write_text(json.dumps(values))
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[Server]:
    model = tmp_path_factory.mktemp("vlm") / "model"  # the bench's size: a long answer takes s
    folder = no_eos(build_tiny("qwen2_vl", model, hidden_size=256, layers=4, seed=2))
    log = tmp_path_factory.mktemp("logs") / "server.log"
    tls = Tls(pki.ca, pki.server.cert, pki.server.key)
    with model_server(folder, NAME, ready_s=90, log=log, tls=tls, settings=LIMITS) as running:
        yield Server(running, pki, log)


def chat(server: Server, **body: object) -> httpx.Response:
    with server.http() as http:
        return http.post(f"{server.base}/openai/v1/chat/completions", json=body)


def image_uri(width: int = 96, height: int = 64) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 90, 200)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_openai_chat_text_and_image(server: Server) -> None:
    text_only = chat(
        server, model=NAME, messages=[{"role": "user", "content": "Findings?"}], max_tokens=4
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
    with_image = chat(server, messages=[{"role": "user", "content": parts}], max_tokens=4).json()
    assert with_image["usage"]["prompt_tokens"] > usage["prompt_tokens"]  # the image's tokens


def test_openai_streaming_matches_the_whole_answer(server: Server) -> None:
    request = {
        "messages": [{"role": "user", "content": "Describe the study."}],
        "max_tokens": 6,
        "temperature": 0.9,
        "seed": 4,
    }
    whole = chat(server, **request).json()
    events = []
    with (
        server.http() as http,
        http.stream(
            "POST", f"{server.base}/openai/v1/chat/completions", json={**request, "stream": True}
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == whole["usage"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def v2_stub(server: Server, caller: str) -> v2_grpc.GRPCInferenceServiceStub:
    paths = server.pki.clients[caller]
    credentials = grpc.ssl_channel_credentials(
        server.pki.ca.read_bytes(), paths.key.read_bytes(), paths.cert.read_bytes()
    )
    channel = grpc.secure_channel(f"127.0.0.1:{server.running.grpc_port}", credentials)
    return v2_grpc.GRPCInferenceServiceStub(channel)


def test_open_inference_protocol_rest_and_grpc(server: Server) -> None:
    with server.http(LIMITED) as http:  # a certificate allowed ModelInfer alone
        rest = http.post(
            f"{server.base}/v2/models/{NAME}/infer",
            json={
                "inputs": [
                    {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Findings?"]}
                ],
                "parameters": {"max_tokens": 3},
            },
        )
    assert rest.status_code == 200
    out = rest.json()
    assert out["outputs"][0]["name"] == "text"
    assert out["parameters"]["completion_tokens"] <= 3
    stub = v2_stub(server, LIMITED)
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
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "at most 2000"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "number"),
        ({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}, "unknown model"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"x": 1}]}]},
            "are not OpenAI tool calls",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "user": "u1", "logprobs": True},
            "unsupported request fields: logprobs, user",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
            "response_format.type",
        ),
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
    server: Server, body: dict[str, object], message: str
) -> None:
    for stream in (False, True):
        reply = chat(server, **body, stream=stream)
        assert reply.status_code == 400
        assert message in reply.json()["error"]["message"]


class FlakyProxy:
    """A real HTTP hop in front of the model server that answers 503 to the first ``fail``
    requests (as an overloaded predictor would), then forwards."""

    def __init__(self, upstream: Server, fail: int) -> None:
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
                with upstream.http() as http:  # the hop authenticates with its own token
                    reply = http.post(
                        upstream.base + self.path,
                        content=body,
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


def test_http_client_retries_a_503_then_gives_up_clearly(server: Server) -> None:
    from medxiaohe.common.errors import InvalidInput, Unavailable
    from medxiaohe.models.chat import ChatParams
    from medxiaohe.models.client import HttpModelClient

    question = [{"role": "user", "content": "Findings?"}]
    png = io.BytesIO()
    Image.new("RGB", (40, 40), (0, 0, 0)).save(png, "PNG")
    flaky = FlakyProxy(server, fail=1)
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

    down = FlakyProxy(server, fail=10)
    stubborn = HttpModelClient(f"{down.url}/openai/v1", retries=2, backoff_s=0.01)
    with pytest.raises(Unavailable, match=r"failed 3 times \(last: HTTP 503\); giving up"):
        stubborn.chat(question)
    assert down.seen == 3


def test_callers_must_authenticate(server: Server, foreign_pki: DevPki) -> None:
    url = f"{server.base}/openai/v1/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with httpx.Client(verify=tls_context(server.pki), timeout=30) as anonymous:
        assert anonymous.post(url, json=body).status_code == 401
        assert anonymous.get(f"{server.base}/v2/models/{NAME}/ready").status_code == 401
        wrong = {"authorization": "Bearer not-the-token"}
        assert anonymous.post(url, json=body, headers=wrong).status_code == 401
    foreign = tls_context(server.pki, foreign_pki, ALLOWED)  # the right name, another CA
    with httpx.Client(verify=foreign, timeout=30) as other, pytest.raises(httpx.HTTPError):
        other.post(url, json=body)
    with pytest.raises(httpx.HTTPError):  # no plaintext on the TLS port
        httpx.post(url.replace("https://", "http://"), json=body, timeout=10)


def test_the_allow_list_decides_per_certificate(server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    url = f"{server.base}/openai/v1/chat/completions"
    with server.http(ALLOWED) as allowed, server.http(LIMITED) as limited:
        assert allowed.post(url, json=body).status_code == 200
        denied = limited.post(url, json=body)
        assert denied.status_code == 403
        assert "ChatCompletions" in denied.json()["error"]["message"]
        assert limited.get(f"{server.base}/v2/models/{NAME}").status_code == 200  # metadata
    with pytest.raises(grpc.RpcError) as error:  # gRPC v2 follows the same list
        v2_stub(server, ALLOWED).RepositoryModelUnload(
            v2.RepositoryModelUnloadRequest(model_name=NAME), timeout=10
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_services_authenticate_with_a_client_certificate(server: Server) -> None:
    """The report and rubric services reach the predictor with their own certificate (the
    chart mounts it): the model client presents it, and the allow list decides."""
    from medxiaohe.common.errors import Unavailable
    from medxiaohe.common.settings import Settings
    from medxiaohe.models.chat import ChatParams
    from medxiaohe_services.runtime.models import http_endpoint

    def endpoint(caller: str) -> object:
        paths = server.pki.clients[caller]
        settings = Settings(  # type: ignore[call-arg]
            tls_client_ca=server.pki.ca, model_client_cert=paths.cert, model_client_key=paths.key
        )
        return http_endpoint(settings, f"{server.base}/openai/v1", NAME, api_key="").client

    question = [{"role": "user", "content": "Findings?"}]
    reply = endpoint(ALLOWED).chat(question, params=ChatParams(max_tokens=2))  # type: ignore[attr-defined]
    assert reply.usage.completion_tokens <= 2
    with pytest.raises(Unavailable, match="403"):  # LIMITED may not call ChatCompletions
        endpoint(LIMITED).chat(question, params=ChatParams(max_tokens=2))  # type: ignore[attr-defined]


def test_the_repository_routes_cannot_unload_the_model(server: Server) -> None:
    with server.http() as http:  # even the token allowed everything
        for action in ("unload", "load"):
            reply = http.post(f"{server.base}/v2/repository/models/{NAME}/{action}")
            assert reply.status_code == 403
        assert http.get(f"{server.base}/v2/models/{NAME}/ready").status_code == 200


def test_request_sizes_are_bounded(server: Server) -> None:
    ask = {"role": "user", "content": "Findings?"}
    with server.http() as http:
        big = http.post(
            f"{server.base}/openai/v1/chat/completions",
            content=b'{"messages": [], "pad": "' + b"x" * (2 << 20) + b'"}',
            headers={"content-type": "application/json"},
        )
    assert big.status_code == 413
    three = [{"type": "image_url", "image_url": {"url": image_uri()}}] * 3
    reply = chat(server, messages=[{"role": "user", "content": three}], max_tokens=1)
    assert "at most 2 images" in reply.json()["error"]["message"]
    wide = [{"type": "image_url", "image_url": {"url": image_uri(400, 400)}}]
    reply = chat(server, messages=[{"role": "user", "content": wide}], max_tokens=1)
    assert "larger than 100,000 pixels" in reply.json()["error"]["message"]
    reply = chat(server, messages=[ask], max_completion_tokens=3)  # OpenAI's newer name
    assert reply.json()["usage"]["completion_tokens"] == 3
    reply = chat(server, messages=[ask], max_completion_tokens=3, max_tokens=4)
    assert reply.status_code == 400


def test_a_full_queue_answers_429_and_a_gone_client_stops_its_generation(server: Server) -> None:
    """One generation may run (predictor_max_pending=1): of requests sent together, those that
    find it busy get 429 with Retry-After. A client that goes away, mid-stream or while it
    waits for a whole answer, has its generation cancelled (counted in the metrics), and the
    next request is served once it has stopped."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    ask = [{"role": "user", "content": "Describe."}]
    start = Barrier(3)

    def together(_: int) -> httpx.Response:
        start.wait()
        return chat(server, messages=ask, max_tokens=400)

    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(together, range(3)))
    codes = sorted(r.status_code for r in replies)
    assert codes[0] == 200
    assert codes[-1] == 429
    assert all(r.headers["retry-after"] == "1" for r in replies if r.status_code == 429)
    url = f"{server.base}/openai/v1/chat/completions"
    long = {"messages": ask, "max_tokens": 1900}
    with server.http() as http:
        with http.stream("POST", url, json=long | {"stream": True}) as streamed:
            assert next(streamed.iter_lines())  # then the client goes away
        assert _cancelled(http, server, "true")
        with pytest.raises(httpx.ReadTimeout):  # httpx closes the connection
            http.post(url, json=long, timeout=httpx.Timeout(30, read=1.0))
        assert _cancelled(http, server, "false")
        assert _served_soon(server, messages=ask, max_tokens=1)
        metrics = http.get(f"{server.base}/metrics").text
        answered = re.search(
            r'medxiaohe_predictor_chat_seconds_count\{stream="false"\} (\S+)', metrics
        )
        assert answered is not None
        assert float(answered.group(1)) >= 2  # the 200s above; 429s are not answers


def _served_soon(server: Server, **body: object) -> bool:
    """Whether the request gets a 200 within 30 s: a cancelled generation holds the one place
    (429) until its current token is done."""
    deadline = time.monotonic() + 30
    while (code := chat(server, **body).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.1)
    return code == 200


def _cancelled(http: httpx.Client, server: Server, stream: str) -> bool:
    """Whether the predictor counts one cancelled generation of this kind (within 120 s:
    the generation it cancelled would take minutes)."""
    pattern = rf'medxiaohe_predictor_cancelled_total\{{stream="{stream}"\}} (\S+)'
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(pattern, http.get(f"{server.base}/metrics").text)
        if found and float(found.group(1)) == 1:
            return True
        time.sleep(0.2)
    return False


def test_the_predictor_logs_through_the_project_formatter(server: Server) -> None:
    """KServe and uvicorn format values into their messages: their lines carry no text."""
    chat(server, messages=[{"role": "user", "content": "Jane Roe, MRN 4417"}], max_tokens=1)
    lines = [json.loads(x) for x in server.log.read_text().splitlines() if x.startswith("{")]
    assert {x["logger"] for x in lines} >= {"medxiaohe.predictor"}
    assert all("msg" not in x for x in lines if not x["logger"].startswith("medxiaohe"))
    assert "Jane Roe" not in server.log.read_text()


def test_s3_images_only_under_the_configured_prefix(weed: Weed, tmp_path: Path) -> None:
    """A foreign key, a missing key and an oversized object get the same generic answer."""
    from medxiaohe.common.errors import InvalidInput
    from medxiaohe.common.settings import Settings
    from medxiaohe.storage import open_store
    from medxiaohe_services.model.predictor import VlmPredictor
    from tests.conftest import s3_settings

    values = s3_settings(weed.endpoint, "images")
    settings = Settings(
        **values,  # type: ignore[arg-type]
        predictor_image_prefix="s3://images/medxiaohe/corpus/",
        predictor_max_body_mb=1,
    )
    store = open_store(str(values["store_uri"]), settings)
    store.put_bytes("corpus/a.png", b"png bytes")
    store.put_bytes("corpus/big.png", b"x" * (2 << 20))
    store.put_bytes("uploads/callers/ris/raw.png", b"raw")
    fetch = VlmPredictor(NAME, "unused", settings)._fetch
    assert fetch("s3://images/medxiaohe/corpus/a.png") == b"png bytes"
    for uri in (
        "s3://images/medxiaohe/uploads/callers/ris/raw.png",
        "s3://images/medxiaohe/corpus/absent.png",
        "s3://images/medxiaohe/corpus/big.png",
        "s3://images/medxiaohe/corpus/../uploads/callers/ris/raw.png",
        "s3://other/medxiaohe/corpus/a.png",
    ):
        with pytest.raises(InvalidInput, match=r"^image_url cannot be read$"):
            fetch(uri)


def test_response_format_json_schema_over_http_and_the_model_grader(server: Server) -> None:
    """Random weights, constrained output: every answer validates, streamed or not, and the
    model grader's verdicts parse."""
    import jsonschema

    from medxiaohe.models.client import HttpModelClient
    from medxiaohe.rubric.model_grader import MAX_TOKENS, VERDICT_SCHEMA, ModelGrader
    from medxiaohe.rubric.rubrics import Criterion, Rubric

    ask = [{"role": "user", "content": "Grade it."}]
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "v", "schema": VERDICT_SCHEMA},
    }
    for seed in range(3):
        reply = chat(
            server,
            messages=ask,
            max_tokens=MAX_TOKENS,
            temperature=1.0,
            seed=seed,
            response_format=response_format,
        )
        jsonschema.validate(
            json.loads(reply.json()["choices"][0]["message"]["content"]), VERDICT_SCHEMA
        )
    client = HttpModelClient(
        f"{server.base}/openai/v1", NAME, api_key=server.running.token, verify=str(server.pki.ca)
    )
    grader = ModelGrader(client, NAME, concurrency=1)  # this server runs one generation at once
    rubric = Rubric((Criterion("Advises rest", 5), Criterion("Recommends aspirin", -5)))
    verdicts = grader.grade(ask, "Rest and drink fluids.", rubric)
    assert all(v.met in (True, False) and v.grader == "model" for v in verdicts)
    assert grader.grade(ask, "Rest and drink fluids.", rubric) == verdicts  # from the cache


def test_the_model_grader_retries_then_fails_clearly(server: Server) -> None:
    from medxiaohe.common.errors import Unavailable
    from medxiaohe.models.client import HttpModelClient
    from medxiaohe.rubric.model_grader import ModelGrader
    from medxiaohe.rubric.rubrics import Criterion, Rubric

    rubric = Rubric((Criterion("Advises rest", 5),))
    ask = [{"role": "user", "content": "Grade it."}]
    flaky = FlakyProxy(server, fail=1)
    client = HttpModelClient(f"{flaky.url}/openai/v1", NAME, backoff_s=0.01)
    grader = ModelGrader(client, NAME, concurrency=1)
    assert grader.grade(ask, "Rest.", rubric)[0].met in (True, False)  # after one 503
    down = FlakyProxy(server, fail=10)
    stubborn = ModelGrader(
        HttpModelClient(f"{down.url}/openai/v1", NAME, retries=2, backoff_s=0.01), NAME
    )
    with pytest.raises(Unavailable, match="giving up"):
        stubborn.grade(ask, "Rest.", rubric)


def test_tools_answer_with_calls_that_validate(server: Server) -> None:
    import jsonschema

    zoom = {
        "type": "function",
        "function": {
            "name": "zoom",
            "parameters": {
                "type": "object",
                "properties": {
                    "box": {"type": "array", "items": {"type": "integer"}, "maxItems": 4}
                },
                "required": ["box"],
                "additionalProperties": False,
            },
        },
    }
    ask = [{"role": "user", "content": "Zoom into the opacity."}]
    reply = chat(server, messages=ask, tools=[zoom], tool_choice="required", max_tokens=400)
    body = reply.json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "zoom"
    jsonschema.validate(json.loads(call["function"]["arguments"]), zoom["function"]["parameters"])
    follow = [
        *ask,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "a 64x64 view"},
    ]
    assert chat(server, messages=follow, max_tokens=3).status_code == 200  # the result goes back
    with (
        server.http() as http,
        http.stream(
            "POST",
            f"{server.base}/openai/v1/chat/completions",
            json={
                "messages": ask,
                "tools": [zoom],
                "tool_choice": "required",
                "max_tokens": 120,
                "stream": True,
            },
        ) as streamed,
    ):
        events = [json.loads(x[6:]) for x in streamed.iter_lines() if x.startswith("data: {")]
    from medxiaohe.models.client import HttpModelClient

    client = HttpModelClient(
        f"{server.base}/openai/v1", NAME, api_key=server.running.token, verify=str(server.pki.ca)
    )
    through_client = client.call_tools(ask, [zoom], "required")
    assert [c.name for c in through_client.tool_calls] == ["zoom"]
    deltas = [e["choices"][0]["delta"] for e in events]
    assert any("tool_calls" in d for d in deltas)
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    for bad, message in [
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        (
            {"tools": [zoom], "tool_choice": {"type": "function", "function": {"name": "rotate"}}},
            "not in tools",
        ),
        ({"tools": [zoom], "response_format": {"type": "json_object"}}, "cannot be used together"),
    ]:
        refused = chat(server, messages=ask, **bad)
        assert refused.status_code == 400
        assert message in refused.json()["error"]["message"]
