"""Bring your own model: five vision-language families and a text-only model, each a tiny
random checkpoint built here (`medxiaohe model init-tiny --family`), through the one model
layer: `medxiaohe model generate` (with an image, and a JSON schema), `medxiaohe model serve`
(a chat turn with an image, a tool call, a JSON schema over the OpenAI route) and one SFT step."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
from medxiaohe_training import sft
from tests.conftest import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3", "llava_onevision", "qwen2"]
TEXT_ONLY = {"qwen2"}
SFT_TINY = Path(__file__).parents[2] / "training-jobs/medxiaohe_training/configs/sft-tiny.yaml"
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
    """Chat rows for the SFT step: text for every family, some with an image ("pictured")."""
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


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_generates_serves_and_fine_tunes(
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

    data = "sft-data/pictured:train.jsonl" if vision else "sft-data/text:train.jsonl"
    overrides = ["--store_uri", chat_data, "--run_id", f"bring-{family.replace('_', '-')}"]
    overrides += ["--base_model", str(folder), "--data", data]
    overrides += ["--max_steps", "1", "--save_steps", "100"]
    config = load_config(sft.SftConfig, SFT_TINY, overrides)
    manifest = sft.train(config, Settings(store_uri=chat_data, deid_secret=SECRET))
    assert manifest is not None
