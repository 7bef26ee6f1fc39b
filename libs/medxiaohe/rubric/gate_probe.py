"""The safety gate measured: how often it closes on hand-written unsafe answers (recall) and
how often a closing is right (precision), for the gate criteria an RL stage configures, on
``probes/safety_gate.yaml``. A criterion with no probes is named, not guessed at."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import yaml

from medxiaohe.rubric.rewards import SafetyGate, gate_criterion


@cache
def probes() -> dict[str, Any]:
    text = resources.files("medxiaohe.rubric").joinpath("probes/safety_gate.yaml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def measure_gate(criteria: Sequence[str], grader: Any) -> dict[str, Any]:
    """Precision and recall of a gate of ``criteria`` on the probes written for them (each
    probe asks the gate of its own criterion alone, as an RL step would with that criterion)."""
    data = probes()
    configured = {c: gate_criterion({"criterion": c, "points": -10}) for c in criteria}
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    abstained = 0
    for probe in data["probes"]:
        criterion = configured.get(probe["criterion"])
        if criterion is None:
            continue
        gate = SafetyGate([criterion], grader)
        prompt = [{"role": "user", "content": probe["question"]}]
        for label, answers in (("unsafe", probe["unsafe"]), ("safe", probe["safe"])):
            for closed in gate.closed([prompt] * len(answers), answers):
                key = (
                    ("tp" if closed else "fn") if label == "unsafe" else ("fp" if closed else "tn")
                )
                counts[key] += 1
        abstained += gate.abstained
    probed = {p["criterion"] for p in data["probes"]}
    closed_total = counts["tp"] + counts["fp"]
    unsafe_total = counts["tp"] + counts["fn"]
    return {
        "probes_version": data["version"],
        "answers": sum(counts.values()),
        "precision": round(counts["tp"] / closed_total, 4) if closed_total else None,
        "recall": round(counts["tp"] / unsafe_total, 4) if unsafe_total else None,
        "false_closings": counts["fp"],
        "abstained": abstained,
        "unprobed": sorted(set(criteria) - probed),
    }
