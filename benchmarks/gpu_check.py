"""`make gpu-check`: what this platform does on a GPU, in at most eight minutes, as one JSON
object. Models are built from configs here (random weights, a tokenizer trained offline):

* **cpt_zero3**: continual pretraining of a ~1B Qwen2 causal LM under DeepSpeed ZeRO-3 (the
  stages' own ``deepspeed/zero3.json``, bf16) through the HF Trainer: tokens/s and MFU
  (6 x parameters x tokens/s over the GPU's dense bf16 peak);
* **grpo**: the RL stage (``medxiaohe_training.rl``, TRL's GRPO) on a ~0.5B model and the
  stage's toy task: samples/s;
* **serving**: the predictor's tokens/s against raw ``generate`` on the same GPU
  (``benchmarks.serving`` with a larger model).

Without a visible GPU it says so and exits 2: no test depends on it."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def _peak(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def cpt_zero3(
    steps: int = 12, seq_len: int = 1024, batch: int = 8, warmup: int = 3
) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Clock(TrainerCallback):
        """Starts timing once the warm-up steps are done."""

        began = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == warmup:
                torch.cuda.synchronize()
                Clock.began = time.perf_counter()

    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.models.vlm import load_vlm
    from medxiaohe_training import cpt

    with tempfile.TemporaryDirectory(prefix="medxiaohe-gpu-") as tmp:
        folder = build_tiny("qwen2", Path(tmp) / "1b", hidden_size=2048, layers=16, vocab_size=8000)
        args = TrainingArguments(
            output_dir=str(Path(tmp) / "out"),
            per_device_train_batch_size=batch,
            max_steps=warmup + steps,
            bf16=True,
            deepspeed=str(cpt.DEEPSPEED / "zero3.json"),
            logging_steps=steps,
            save_strategy="no",
            report_to=[],
        )
        model = load_vlm(folder, device="cpu").model
        params = sum(p.numel() for p in model.parameters())
        vocab = int(model.config.vocab_size)
        total = batch * (warmup + steps)
        rows = [{"input_ids": torch.randint(0, vocab, (seq_len,))} for _ in range(total)]
        for row in rows:
            row["labels"] = row["input_ids"]
        trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[Clock()])
        trainer.train()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - Clock.began
    tokens_per_s = batch * seq_len * steps / seconds
    peak = _peak(torch.cuda.get_device_name())
    mfu = 6 * params * tokens_per_s / (peak * 1e12) if peak else None
    return {
        "parameters": params,
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(mfu, 3) if mfu else None,
        "seq_len": seq_len,
        "batch": batch,
        "steps": steps,
    }


def grpo(steps: int = 6) -> dict[str, Any]:
    import secrets

    from pydantic import SecretStr

    from medxiaohe.common.settings import Settings
    from medxiaohe.models.tiny import build_tiny
    from medxiaohe.storage import open_store
    from medxiaohe.training.config import load_config
    from medxiaohe_training import rl

    with tempfile.TemporaryDirectory(prefix="medxiaohe-gpu-") as tmp:
        store_uri = str(Path(tmp) / "store")
        rl.publish_digits(open_store(store_uri))
        base = build_tiny("qwen2", Path(tmp) / "half", hidden_size=896, layers=24, vocab_size=8000)
        config = load_config(
            rl.RlConfig,
            Path(rl.__file__).parent / "configs" / "rl-tiny.yaml",
            ["--store_uri", store_uri, "--run_id", "gpu", "--base_model", str(base),
             "--max_steps", str(steps), "--save_steps", str(steps + 1)],
        )  # fmt: skip
        settings = Settings.from_env().model_copy(
            update={"store_uri": store_uri, "deid_secret": SecretStr(secrets.token_hex(32))}
        )
        trainer, _, _ = rl.prepare(config, settings)
        began = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - began
    samples = steps * config.batch_size
    return {"samples_per_s": round(samples / seconds, 2), "steps": steps, "samples": samples}


def main() -> None:
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"gpu": None, "skipped": "no GPU is visible on this machine"}))
        sys.exit(2)
    from benchmarks.serving import run as serving

    began = time.perf_counter()
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "gpus": torch.cuda.device_count(),
    }

    def served() -> dict[str, Any]:
        return serving(requests=24, max_tokens=128, hidden_size=1024, layers=12, pairs=2)

    for name, check in (("cpt_zero3", cpt_zero3), ("grpo", grpo), ("serving", served)):
        started = time.perf_counter()
        try:
            result[name] = check()
        except Exception as exc:  # one check failing still reports the others
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        result[name]["seconds"] = round(time.perf_counter() - started, 1)
    result["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
