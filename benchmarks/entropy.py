"""How the RL stage acts when the policy's entropy falls below its floor: the entropy bonus
(TRL's adaptive entropy term) against a sampling-temperature rise, beside no action, on the
same verifiable toy task (the tiny model learning to write a digit, fast enough to collapse
its entropy in a few dozen steps), the same seeds and the same steps.

The floor is set from the run without action: ``FLOOR_SHARE`` of its median entropy over the
first ten steps (the random-weight model starts near the uniform entropy and learning the
task takes a fifth of it away).
Per action: the reward of the first and last ten steps, the entropy of the last ten, the
share of the second half of the run spent below the floor, and the wall time."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from medxiaohe.common.settings import Settings
from medxiaohe.storage import open_store
from medxiaohe.training.config import load_config
from medxiaohe_training import rl

CONFIG = Path(rl.__file__).parent / "configs" / "rl-tiny.yaml"
FLOOR_SHARE = 0.85


def _run(store_uri: str, secret: str, run_id: str, steps: int, extra: list[str]) -> dict[str, Any]:
    overrides = ["--store_uri", store_uri, "--run_id", run_id, "--max_steps", str(steps)]
    overrides += ["--save_steps", str(steps + 1), *extra]
    config = load_config(rl.RlConfig, CONFIG, overrides)
    settings = Settings.from_env().model_copy(
        update={"store_uri": store_uri, "deid_secret": SecretStr(secret)}
    )
    trainer, run, _ = rl.prepare(config, settings)
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    run.flush()
    logged = [m for m in run.metrics() if "reward" in m]
    return {"logs": logged, "wall_s": wall}


def _summary(logs: list[dict[str, Any]], floor: float, wall: float) -> dict[str, float]:
    rewards = [m["reward"] for m in logs]
    entropy = [m["entropy"] for m in logs]
    half = entropy[len(entropy) // 2 :]
    return {
        "reward_first10": round(statistics.mean(rewards[:10]), 3),
        "reward_last10": round(statistics.mean(rewards[-10:]), 3),
        "entropy_first10": round(statistics.mean(entropy[:10]), 3),
        "entropy_last10": round(statistics.mean(entropy[-10:]), 3),
        "below_floor_second_half": round(sum(e < floor for e in half) / len(half), 3),
        "wall_s": round(wall, 1),
    }


def compare(seeds: int = 2, steps: int = 60) -> dict[str, Any]:
    """The three actions on ``seeds`` seeds; medians over seeds of each figure."""
    import secrets

    secret = secrets.token_hex(32)
    per: dict[str, list[dict[str, float]]] = {"none": [], "bonus": [], "temperature": []}
    floors = []
    with tempfile.TemporaryDirectory(prefix="medxiaohe-entropy-") as folder:
        store_uri = str(Path(folder) / "store")
        rl.publish_digits(open_store(store_uri))
        for seed in range(seeds):
            base = ["--seed", str(seed)]
            plain = _run(store_uri, secret, f"none-{seed}", steps, base)
            early = statistics.median(m["entropy"] for m in plain["logs"][:10])
            floor = round(FLOOR_SHARE * early, 4)
            floors.append(floor)
            per["none"].append(_summary(plain["logs"], floor, plain["wall_s"]))
            for action in ("bonus", "temperature"):
                extra = [*base, "--entropy_floor", str(floor), "--entropy_action", action]
                done = _run(store_uri, secret, f"{action}-{seed}", steps, extra)
                per[action].append(_summary(done["logs"], floor, done["wall_s"]))
    result: dict[str, Any] = {"seeds": seeds, "steps": steps, "floors": floors}
    for action, runs in per.items():
        result[action] = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    return result
