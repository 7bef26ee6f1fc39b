"""A curriculum: a chain of training stages, each starting from the model the previous one
published (e.g. rft -> foundation RL -> specialization RL -> alignment RL), from a YAML file::

    name: medxiaohe
    base_model: models/sft          # what the first stage starts from
    stages:
      - name: rft                   # unique; with the pipeline id, the stage's run id
        stage: rft                  # a training stage
        config: rft-small.yaml      # optional, relative to this file
        set: {samples: 8}           # optional, over the config file (later stages' base
                                    # model is the chain's: a config file's is replaced)

Every stage's config is validated when the file is read. A stage's run id is
``<pipeline-id>-<name>``, so a re-run with the same pipeline id skips the stages whose model
is published and resumes at the one that failed (from its own checkpoints). How a stage runs
(a local process, a Kubernetes Job) is the runner's business."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medxiaohe.common.errors import InvalidInput, Unavailable
from medxiaohe.training.config import config_from, read_mapping
from medxiaohe.training.manifests import job_name
from medxiaohe.training.runs import launch_yaml

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
MAX_STAGES = 16


@dataclass(frozen=True)
class Step:
    """One stage of one pipeline run, its config resolved (base model chained)."""

    name: str
    stage: str
    run_id: str
    config: Any  # the stage's config dataclass

    @property
    def model(self) -> str:
        """The store prefix of the model this step publishes."""
        return f"runs/{self.stage}/{self.run_id}/model"

    def config_yaml(self, store_uri: str = "") -> str:
        """The config as the stage reads it (``runs.launch_yaml``)."""
        return launch_yaml(self.config, store_uri)


class StageFailed(Unavailable):
    """A stage of the pipeline did not succeed; re-run the pipeline to resume there."""


class Runner(Protocol):
    def finished(self, step: Step) -> bool:
        """Whether the step's model is published (a run before this one finished it)."""
        ...

    def run(self, step: Step) -> None:
        """Run the step to its end; StageFailed when it does not succeed."""
        ...


def plan(path: Path, pipeline_id: str, kinds: Mapping[str, type[Any]]) -> list[Step]:
    """The pipeline's steps with their configs, each validated, each (but the first, unless
    the pipeline names a base model) starting from the previous step's model."""
    spec = read_mapping(path)
    unknown = set(spec) - {"name", "base_model", "stages"}
    stages = spec.get("stages")
    if unknown or not isinstance(stages, list) or not 0 < len(stages) <= MAX_STAGES:
        raise InvalidInput(
            f"{path}: a pipeline has name, base_model and 1-{MAX_STAGES} stages"
            + (f" (unknown keys {sorted(unknown)})" if unknown else "")
        )
    steps: list[Step] = []
    base = str(spec.get("base_model") or "")
    for number, entry in enumerate(stages, 1):
        where = f"{path} stage {number}"
        if not isinstance(entry, dict) or set(entry) - {"name", "stage", "config", "set"}:
            raise InvalidInput(f"{where}: a stage has name, stage, config and set")
        name, stage = str(entry.get("name", "")), str(entry.get("stage", ""))
        if not NAME.match(name) or name in {s.name for s in steps}:
            raise InvalidInput(f"{where}: name {name!r} must be unique, [a-z0-9-], <= 24")
        if stage not in kinds:
            raise InvalidInput(f"{where}: stage {stage!r} is not one of {sorted(kinds)}")
        values = read_mapping(path.parent / entry["config"]) if entry.get("config") else {}
        overrides = entry.get("set") or {}
        if not isinstance(overrides, dict):
            raise InvalidInput(f"{where}: set is a mapping of config keys")
        if steps and "base_model" in overrides:
            raise InvalidInput(f"{where}: only the first stage sets a base model")
        values |= overrides
        if steps:
            values["base_model"] = steps[-1].model
        elif base:
            values["base_model"] = base
        run_id = f"{pipeline_id}-{name}"
        job_name(stage, run_id)  # a Job name the cluster takes
        try:
            config = config_from(kinds[stage], values)
        except InvalidInput as exc:
            raise InvalidInput(f"{where} ({name}): {exc}") from None
        steps.append(Step(name, stage, run_id, config))
    return steps


def run_pipeline(
    steps: list[Step], runner: Runner, say: Callable[[str], None] = lambda _: None
) -> list[dict[str, str]]:
    """Run the steps in order, skipping those finished before; what happened to each. A
    failing step stops the chain (StageFailed): run the same pipeline id again to resume."""
    done = []
    for step in steps:
        state = "skipped: published before"
        if not runner.finished(step):
            say(f"{step.name}: {step.stage} as run {step.run_id}")
            runner.run(step)
            state = "ran"
        say(f"{step.name}: {state}, model {step.model}")
        done.append({"name": step.name, "stage": step.stage, "run_id": step.run_id,
                     "model": step.model, "state": state})  # fmt: skip
    return done
