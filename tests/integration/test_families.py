"""Bring your own model: five vision-language families and a text-only model, each a tiny
random checkpoint built here (`medxiaohe model init-tiny --family`), through the one model
layer: `medxiaohe model generate` (with an image, and a JSON schema), `medxiaohe model serve`
(its model list with the device, a chat turn with an image, a tool call, a JSON schema over the
OpenAI route, a stream) and the in-process engine's batching, streaming and cancellation, and
one step of every training stage (CPT, SFT in full and with LoRA, RFT, RL)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from typer.testing import CliRunner

from medxiaohe.common.settings import Settings
from medxiaohe.storage import open_store
from medxiaohe.training.chat_data import publish_chat
from medxiaohe.training.config import load_config
from medxiaohe_services.cli import app
from medxiaohe_services.model.process import Running, model_server
from medxiaohe_training import cpt, rft, rl, sft
from tests.conftest import SECRET
from tests.integration.test_cpt import with_mixture

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3", "llava_onevision", "qwen2"]
TEXT_ONLY = {"qwen2"}
CONFIGS = Path(__file__).parents[2] / "training-jobs/medxiaohe_training/configs"
SCHEMA = {
    "type": "object",
    "properties": {"finding": {"type": "string", "maxLength": 12}},
    "required": ["finding"],
}
TOOL = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "Zoom into the image.",
        "parameters": {
            "type": "object",
            "properties": {"side": {"type": "string", "enum": ["left", "right"]}},
            "required": ["side"],
            "additionalProperties": False,
        },
    },
}


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (60, 44), (180, 20, 20)).save(out, format="PNG")
    return out.getvalue()


def question(vision: bool) -> list[dict[str, object]]:
    if not vision:
        return [{"role": "user", "content": "Findings?"}]
    url = "data:image/png;base64," + base64.b64encode(png()).decode()
    parts = [
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "Findings?"},
    ]
    return [{"role": "user", "content": parts}]


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the stages read: chat rows for SFT (text for every family, some with an image,
    "pictured"), the toy task for RFT and GRPO, a mixture with image-text records for CPT."""
    store_uri = str(tmp_path_factory.mktemp("families") / "store")
    rows = [
        {"messages": [{"role": "user", "content": f"What is {i} plus 1?"},
                      {"role": "assistant", "content": f"It is {i + 1}."}]}
        for i in range(8)
    ]  # fmt: skip
    pictured = [r | {"images": ["red.png"]} for r in rows[:4]] + rows[4:]
    store = open_store(store_uri)
    publish_chat(store, "sft-data/text", {"train": rows})
    publish_chat(store, "sft-data/pictured", {"train": pictured}, {"red.png": png()})
    rl.publish_digits(store)
    with_mixture(store_uri)
    return store_uri


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, Running]]]:
    """Each family built by `medxiaohe model init-tiny` and served by `medxiaohe model serve`,
    the six servers started side by side (their start is mostly imports)."""
    root = tmp_path_factory.mktemp("families")
    for family in FAMILIES:
        init = ["model", "init-tiny", "--family", family, "--out", str(root / family)]
        built = CliRunner().invoke(app, init)
        assert built.exit_code == 0, built.output
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(FAMILIES)) as pool:
        started = {
            family: pool.submit(
                stack.enter_context,
                model_server(root / family, family, log=root / f"{family}.log"),
            )
            for family in FAMILIES
        }
        yield {family: (root / family, running.result()) for family, running in started.items()}


def engine_batches_streams_and_cancels(folder: Path, vision: bool) -> None:
    """The in-process engine on this family: requests batched together answer as they do
    alone (left padding, the family's position ids), a stream joins up to the whole answer,
    a request whose client is gone stops at its first token. A text prompt skips a vision
    model's processor and gets the tensors the processor would have made."""
    import threading

    import torch

    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.prompts import PromptEncoder
    from medxiaohe.models.vlm import load_vlm

    vlm = load_vlm(folder)
    encode = PromptEncoder(vlm.processor, vlm.tokenizer)
    assert encode.fast == vision  # a text model's processor is its tokenizer already
    prompt = vlm.processor.apply_chat_template(
        question(False), add_generation_prompt=True, tokenize=False
    )
    mine, theirs = encode(prompt), vlm.processor(text=[prompt], return_tensors="pt")
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    model = ChatModel(vlm)
    params = ChatParams(max_tokens=6)
    asks = [[{"role": "user", "content": f"Question {'x' * i}?"}] for i in range(6)]
    asks[2] = question(vision)
    alone = [model.chat(q, params) for q in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda q: model.chat(q, params), asks))
    assert [(r.text, r.usage) for r in together] == [(r.text, r.usage) for r in alone]
    *pieces, whole = model.stream(asks[2], params)
    assert "".join(pieces) == whole.text == alone[2].text  # type: ignore[union-attr]
    gone = threading.Event()
    gone.set()
    assert model.chat(asks[0], ChatParams(max_tokens=200), gone).usage.completion_tokens == 1
    model.stop()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_generates_serves_and_trains_in_every_stage(
    family: str,
    tmp_path: Path,
    chat_data: str,
    served: dict[str, tuple[Path, Running]],
) -> None:
    vision = family not in TEXT_ONLY
    folder, server = served[family]
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    (tmp_path / "red.png").write_bytes(png())
    args = ["model", "generate", str(folder), "--prompt", "Findings?", "--max-tokens", "48"]
    args += ["--json-schema", str(tmp_path / "schema.json")]
    args += ["--image", str(tmp_path / "red.png")] if vision else []
    generated = CliRunner().invoke(app, args)
    assert generated.exit_code == 0, generated.output
    answer = json.loads(generated.stdout.strip().splitlines()[-1])
    assert (answer["family"], answer["device"], answer["dtype"]) == (family, "cpu", "float32")
    assert answer["prompt_tokens"] > 3
    jsonschema.validate(json.loads(answer["text"]), SCHEMA)

    url = f"{server.url}/openai/v1/chat/completions"
    with httpx.Client(headers=server.headers, timeout=120) as client:
        (listed,) = client.get(f"{server.url}/openai/v1/models").json()["data"]
        assert (listed["family"], listed["device"], listed["dtype"]) == (family, "cpu", "float32")
        turn = client.post(url, json={"messages": question(vision), "max_tokens": 8})
        assert turn.status_code == 200, turn.text
        assert turn.json()["usage"]["prompt_tokens"] > 3
        call = client.post(
            url,
            json={"messages": question(vision), "tools": [TOOL], "tool_choice": "required",
                  "max_tokens": 64},
        )  # fmt: skip
        assert call.status_code == 200, call.text
        (made,) = call.json()["choices"][0]["message"]["tool_calls"]
        arguments = json.loads(made["function"]["arguments"])
        jsonschema.validate(arguments, TOOL["function"]["parameters"])  # type: ignore[index]
        shaped = client.post(
            url,
            json={"messages": question(vision), "max_tokens": 48,
                  "response_format": {"type": "json_schema",
                                      "json_schema": {"name": "f", "schema": SCHEMA}}},
        )  # fmt: skip
        assert shaped.status_code == 200, shaped.text
        text = shaped.json()["choices"][0]["message"]["content"]
        jsonschema.validate(json.loads(text), SCHEMA)

        streamed = client.post(url, json={"messages": question(vision), "max_tokens": 8,
                                          "stream": True})  # fmt: skip
        events = [x[6:] for x in streamed.text.splitlines() if x.startswith("data: ")]
        assert events[-1] == "[DONE]"
        pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
        assert "".join(pieces) == turn.json()["choices"][0]["message"]["content"]

    engine_batches_streams_and_cancels(folder, vision)

    # one step of every stage from this family's folder: CPT on the mixture (its image-text
    # records for a vision model), SFT in full and with LoRA (rows with images for a vision
    # model), RFT and GRPO on the toy task
    data = "sft-data/pictured:train.jsonl" if vision else "sft-data/text:train.jsonl"
    settings = Settings(store_uri=chat_data, deid_secret=SECRET)
    steps: list[tuple[Any, Any, list[str]]] = [
        (cpt, cpt.CptConfig, []),
        (sft, sft.SftConfig, ["--data", data]),
        (sft, sft.SftConfig, ["--data", data, "--lora_r", "4"]),
        (rft, rft.RftConfig, ["--samples", "2", "--verify", "regex:."]),
        (rl, rl.RlConfig, []),
    ]
    for n, (stage, kind, extra) in enumerate(steps):
        overrides = ["--store_uri", chat_data, "--run_id", f"{family.replace('_', '-')}-{n}"]
        overrides += ["--base_model", str(folder), "--max_steps", "1", "--save_steps", "100"]
        tiny = CONFIGS / f"{stage.__name__.rpartition('.')[2]}-tiny.yaml"
        assert stage.train(load_config(kind, tiny, [*overrides, *extra]), settings) is not None
