"""Serving benchmark: the predictor over HTTP (its OpenAI route, through the model client)
against raw ``model.generate`` in this process, on the same model, prompt and greedy decoding,
one request of each side after the other;
the same requests constrained to a JSON schema (``response_format``) against free ones; then
the predictor under 8 concurrent clients."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import HttpModelClient
from medxiaohe.models.devices import inputs_on
from medxiaohe.models.tiny import build_tiny
from medxiaohe.models.vlm import load_vlm
from medxiaohe_services.model.process import model_server

QUESTION = [{"role": "user", "content": "Describe the chest radiograph findings in one paragraph."}]
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "findings": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 3},
        "impression": {"type": "string", "maxLength": 60},
    },
    "required": ["findings", "impression"],
    "additionalProperties": False,
}


def _stats(latencies_s: list[float], tokens: int, wall_s: float) -> dict[str, float]:
    ordered = sorted(latencies_s)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "tokens_per_s": round(tokens / wall_s, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "requests": len(ordered),
    }


def run(
    requests: int = 60,
    max_tokens: int = 64,
    hidden_size: int = 256,
    layers: int = 4,
    family: str = "qwen2_vl",
    vocab_size: int = 2000,
) -> dict[str, Any]:
    """Both sides on the device the model layer picks (the GPU when there is one)."""
    import torch

    with tempfile.TemporaryDirectory(prefix="medxiaohe-bench-") as tmp:
        folder = build_tiny(
            family, Path(tmp) / "model", hidden_size=hidden_size, layers=layers,
            vocab_size=vocab_size,
        )  # fmt: skip
        vlm = load_vlm(folder)
        prompt = vlm.processor.apply_chat_template(
            QUESTION, add_generation_prompt=True, tokenize=False
        )
        inputs = inputs_on(vlm.model, vlm.processor(text=[prompt], return_tensors="pt"))
        prompt_tokens = int(inputs["input_ids"].shape[1])
        # the model never stops early: both sides generate exactly max_tokens
        vlm.model.generation_config.eos_token_id = None

        def raw() -> int:
            with torch.inference_mode():
                out = vlm.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
            return int(out.shape[1]) - prompt_tokens

        raw()  # warm-up
        folder_for_server = Path(tmp) / "served"
        vlm.model.save_pretrained(folder_for_server)
        vlm.processor.save_pretrained(folder_for_server)
        vlm.tokenizer.save_pretrained(folder_for_server)
        with model_server(folder_for_server, "bench") as server:
            client = HttpModelClient(
                f"{server.url}/openai/v1", "bench", api_key=server.token, timeout_s=300
            )
            params = ChatParams(max_tokens=max_tokens)
            # the same budget, constrained; after the object closes only the end token is
            # allowed, so both sides still generate exactly max_tokens
            constrained = ChatParams(
                max_tokens=max_tokens, json_schema=json.dumps(REPORT_SCHEMA, sort_keys=True)
            )

            def served() -> int:
                return client.chat(QUESTION, params=params).usage.completion_tokens

            def structured() -> int:
                return client.chat(QUESTION, params=constrained).usage.completion_tokens

            served()  # warm-up
            structured()  # warm-up: compiles the schema once
            sides = {"raw": raw, "served": served, "structured": structured}
            runs = _interleaved(sides, requests)
            concurrent = _concurrent(served, requests, 8)
    raw_side, served_side = _stats(*runs["raw"]), _stats(*runs["served"])
    return {
        "model": {"family": family, "hidden_size": hidden_size, "layers": layers},
        "placement": vlm.placement.report(),
        "max_tokens": max_tokens,
        "prompt_tokens": prompt_tokens,
        "predictor": served_side,
        "raw_generate": raw_side,
        # the median over requests of raw generate's latency over the predictor's (the two
        # generate the same tokens, and ran back to back)
        "ratio": _ratio(runs["served"][0], runs["raw"][0]),
        "predictor_json_schema": _stats(*runs["structured"]),
        # constrained over free decoding through the predictor (1.0: it costs nothing)
        "json_schema_ratio": _ratio(runs["structured"][0], runs["served"][0]),
        "predictor_concurrency_8": concurrent,
        "concurrency_8_speedup": round(concurrent["tokens_per_s"] / served_side["tokens_per_s"], 3),
    }


def _interleaved(
    sides: dict[str, Callable[[], int]], requests: int
) -> dict[str, tuple[list[float], int, float]]:
    """Each side's latencies, tokens and time over ``requests`` rounds of one request per
    side, back to back, the order turned round each round: drift on a shared machine, and
    what one request leaves running (e.g. OpenMP threads spinning after their last work),
    hit every side alike."""
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    tokens = dict.fromkeys(sides, 0)
    for n in range(requests):
        for name in list(sides)[:: 1 if n % 2 == 0 else -1]:
            began = time.perf_counter()
            tokens[name] += sides[name]()
            latencies[name].append(time.perf_counter() - began)
    return {name: (latencies[name], tokens[name], sum(latencies[name])) for name in sides}


def _ratio(side_s: list[float], anchor_s: list[float]) -> float:
    """The median over request pairs of the anchor's latency over the side's."""
    return round(statistics.median(a / s for s, a in zip(side_s, anchor_s, strict=True)), 3)


def _concurrent(call: Callable[[], int], requests: int, workers: int) -> dict[str, float]:
    def one(_: int) -> tuple[float, int]:
        t = time.perf_counter()
        tokens = call()
        return time.perf_counter() - t, tokens

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return _stats([r[0] for r in results], sum(r[1] for r in results), wall)
