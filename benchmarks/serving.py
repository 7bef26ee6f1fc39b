"""Serving benchmark: the predictor over HTTP (its OpenAI route, through the model client)
against raw ``model.generate``, on the same model folder, prompt and greedy decoding, one
request of each side after the other. Also the per-request fixed cost (one token on each
side), the same requests constrained to a JSON schema (``response_format``) against free ones,
the predictor under 8 concurrent clients, and a null comparison: raw ``generate`` against
itself in a second process, measured the same way, which would read 1.0 on a quiet machine;
how far it lands from 1.0 is the noise the ratio carries in the same run.

Each side runs in a process of its own, started the same way and loading the same folder, and
the comparison is repeated over several such pairs of processes: on a shared machine, two
processes running the same ``generate`` on the same model can differ in speed by several
percent, and keep that difference for their lives. An anchor in the benchmark's own process
drew that lot once for the whole run. The null comparison's second raw process is started
with each pair.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
Side = Callable[[], tuple[float, int]]  # one request: its seconds and generated tokens
# each comparison's two sides (the anchor first) run interleaved by themselves: with a third
# side between them, the first would follow itself every other round and the second never
COMPARISONS = {
    "generate": ("raw", "served"),
    "overhead": ("raw_1", "served_1"),
    "json_schema": ("served", "structured"),
    "null": ("raw", "raw_twin"),
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
    requests: int = 80,
    max_tokens: int = 64,
    hidden_size: int = 256,
    layers: int = 4,
    family: str = "qwen2_vl",
    vocab_size: int = 2000,
    pairs: int = 4,
) -> dict[str, Any]:
    """``requests`` per side over ``pairs`` pairs of processes, both on the device the model
    layer picks (the GPU when there is one)."""
    rounds = max(1, requests // pairs)
    latencies: dict[tuple[str, str], list[float]] = {}
    tokens: dict[tuple[str, str], int] = {}
    per_pair: dict[str, list[float]] = {"generate": [], "null": []}
    with tempfile.TemporaryDirectory(prefix="medxiaohe-bench-") as tmp:
        folder = _never_stopping(family, Path(tmp), hidden_size, layers, vocab_size)
        for pair in range(pairs):
            with (
                _anchor(folder) as anchor,
                _anchor(folder) as twin,
                model_server(folder, "bench") as server,
            ):
                client = HttpModelClient(
                    f"{server.url}/openai/v1", "bench", api_key=server.token, timeout_s=300
                )
                sides = _sides(anchor, twin, client, max_tokens)
                for side in sides.values():
                    side()  # warm-up (the structured one compiles the schema once)
                for comparison, names in COMPARISONS.items():
                    runs = _interleaved({name: sides[name] for name in names}, rounds)
                    for name, (seconds, generated) in runs.items():
                        latencies.setdefault((comparison, name), []).extend(seconds)
                        tokens[comparison, name] = tokens.get((comparison, name), 0) + generated
                    if comparison in per_pair:
                        anchor_s, side_s = (runs[name][0] for name in names)
                        per_pair[comparison].append(_ratio(side_s, anchor_s))
                if pair == pairs - 1:
                    concurrent = _concurrent(sides["served"], requests, 8)

    def stats(comparison: str, name: str) -> dict[str, float]:
        seconds = latencies[comparison, name]  # one request after another: their sum is the wall
        return _stats(seconds, tokens[comparison, name], sum(seconds))

    served = stats("generate", "served")
    one = zip(latencies["overhead", "served_1"], latencies["overhead", "raw_1"], strict=True)
    return {
        "model": {"family": family, "hidden_size": hidden_size, "layers": layers},
        "placement": anchor.placement,
        "max_tokens": max_tokens,
        "prompt_tokens": anchor.prompt_tokens,
        "process_pairs": pairs,
        "predictor": served,
        "raw_generate": stats("generate", "raw"),
        # the median over request pairs of raw generate's latency over the predictor's (the
        # two generate the same tokens, and ran back to back), over every pair of processes
        "ratio": _ratio(latencies["generate", "served"], latencies["generate", "raw"]),
        "ratio_per_process_pair": per_pair["generate"],
        # raw generate in a second process over the first, the same way: 1.0 but for this
        # machine's noise (the speed each process draws, drift), which the ratio carries too
        "null_ratio": _ratio(latencies["null", "raw_twin"], latencies["null", "raw"]),
        "null_ratio_per_process_pair": per_pair["null"],
        # what a request costs beyond its generation: the median difference of one-token
        # requests (HTTP, authentication, the chat template, tokenizing, decoding)
        "overhead_ms": round(statistics.median(s - r for s, r in one) * 1000, 2),
        "predictor_json_schema": stats("json_schema", "structured"),
        # constrained over free decoding through the predictor (1.0: it costs nothing)
        "json_schema_ratio": _ratio(
            latencies["json_schema", "structured"], latencies["json_schema", "served"]
        ),
        "predictor_concurrency_8": concurrent,
        "concurrency_8_speedup": round(concurrent["tokens_per_s"] / served["tokens_per_s"], 3),
    }


def _never_stopping(family: str, tmp: Path, hidden_size: int, layers: int, vocab_size: int) -> Path:
    """The tiny model, saved without an end token: both sides generate exactly max_tokens."""
    vlm = load_vlm(
        build_tiny(family, tmp / "built", hidden_size=hidden_size, layers=layers,
                   vocab_size=vocab_size)
    )  # fmt: skip
    vlm.model.generation_config.eos_token_id = None
    folder = tmp / "model"
    for part in (vlm.model, vlm.processor, vlm.tokenizer):
        part.save_pretrained(folder)
    return folder


def _sides(
    anchor: _Anchor, twin: _Anchor, client: HttpModelClient, max_tokens: int
) -> dict[str, Side]:
    free = ChatParams(max_tokens=max_tokens)
    # the same budget, constrained; after the object closes only the end token is allowed, so
    # both sides still generate exactly max_tokens
    schema = json.dumps(REPORT_SCHEMA, sort_keys=True)
    constrained = ChatParams(max_tokens=max_tokens, json_schema=schema)
    return {
        "raw": functools.partial(anchor.generate, max_tokens),
        "raw_twin": functools.partial(twin.generate, max_tokens),
        "served": functools.partial(_timed, client, free),
        "structured": functools.partial(_timed, client, constrained),
        "raw_1": functools.partial(anchor.generate, 1),
        "served_1": functools.partial(_timed, client, ChatParams(max_tokens=1)),
    }


def _timed(client: HttpModelClient, params: ChatParams) -> tuple[float, int]:
    began = time.perf_counter()
    generated = client.chat(QUESTION, params=params).usage.completion_tokens
    return time.perf_counter() - began, generated


class _Anchor:
    """Raw ``generate`` in a process of its own (``python -m benchmarks.serving``): one
    request per line; the seconds are timed inside that process, around ``generate`` alone."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        ready = self._answer()
        self.placement: dict[str, Any] = ready["placement"]
        self.prompt_tokens: int = ready["prompt_tokens"]

    def generate(self, max_tokens: int) -> tuple[float, int]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"max_tokens": max_tokens}) + "\n")
        self.process.stdin.flush()
        answer = self._answer()
        return answer["seconds"], answer["tokens"]

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "" once the process has ended
        if not line:
            raise RuntimeError(f"the anchor process ended (exit code {self.process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.contextmanager
def _anchor(folder: Path) -> Iterator[_Anchor]:
    command = [sys.executable, "-m", "benchmarks.serving", str(folder)]
    checkout = Path(__file__).resolve().parents[1]  # where ``benchmarks`` imports from
    with subprocess.Popen(
        command, cwd=checkout, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as p:
        try:
            yield _Anchor(p)
        finally:
            p.kill()


def _anchor_main(folder: Path) -> None:
    import torch

    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever else prints goes to stderr, not between the answers
    vlm = load_vlm(folder)
    prompt = vlm.processor.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    inputs = inputs_on(vlm.model, vlm.processor(text=[prompt], return_tensors="pt"))
    prompt_tokens = int(inputs["input_ids"].shape[1])
    print(
        json.dumps({"placement": vlm.placement.report(), "prompt_tokens": prompt_tokens}),
        file=answers,
    )
    answers.flush()
    for line in sys.stdin:
        began = time.perf_counter()
        with torch.inference_mode():
            out = vlm.model.generate(
                **inputs, max_new_tokens=json.loads(line)["max_tokens"], do_sample=False
            )
        seconds = time.perf_counter() - began
        print(
            json.dumps({"seconds": seconds, "tokens": int(out.shape[1]) - prompt_tokens}),
            file=answers,
        )
        answers.flush()


def _interleaved(sides: dict[str, Side], rounds: int) -> dict[str, tuple[list[float], int]]:
    """Each side's latencies and tokens over ``rounds`` rounds of one request per side, back
    to back, the order turned round each round: drift on a shared machine, and what one
    request leaves running (the other process's OpenMP threads spin a while after its last
    work), hit both sides alike; each follows itself half the time."""
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    tokens = dict.fromkeys(sides, 0)
    for n in range(rounds):
        for name in list(sides)[:: 1 if n % 2 == 0 else -1]:
            seconds, generated = sides[name]()
            latencies[name].append(seconds)
            tokens[name] += generated
    return {name: (latencies[name], tokens[name]) for name in sides}


def _ratio(side_s: list[float], anchor_s: list[float]) -> float:
    """The median over request pairs of the anchor's latency over the side's."""
    return round(statistics.median(a / s for s, a in zip(side_s, anchor_s, strict=True)), 3)


def _concurrent(call: Side, requests: int, workers: int) -> dict[str, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda _: call(), range(requests)))
    wall = time.perf_counter() - started
    return _stats([r[0] for r in results], sum(r[1] for r in results), wall)


if __name__ == "__main__":  # the anchor's process
    _anchor_main(Path(sys.argv[1]))
