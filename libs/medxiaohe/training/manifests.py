"""The names a training run's Kubernetes objects go by: the run id (a label value on each of
them), the selector of a run's objects, and the Job's name. The objects themselves have one
definition, the chart's template ``charts/medxiaohe/templates/training-job.yaml``: helm renders
it for a helm-managed run, the launcher for the runs it submits."""

from __future__ import annotations

import re

from medxiaohe.common.errors import InvalidInput

RUN_LABEL = "medxiaohe.io/run-id"
# A run id is a Kubernetes label value (and one store key segment): letters, digits, "-", "_"
# and "." inside, alphanumeric at both ends, at most 63 characters. Nothing else reaches a
# label selector ("a,app=x" would select other objects).
_RUN_ID = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
MAX_JOB_NAME = 52  # Job names become pod labels and hostnames; room for the index suffix


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise InvalidInput(
            "a run id is 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit"
        )
    return run_id


def run_selector(run_id: str) -> str:
    """The label selector of one run's objects."""
    return f"{RUN_LABEL}={check_run_id(run_id)}"


def job_name(stage: str, run_id: str) -> str:
    """What the chart's template names the run's objects (a DNS label: the pods' subdomain)."""
    name = f"train-{stage}-{check_run_id(run_id)}".lower().replace("_", "-").replace(".", "-")
    if len(name) > MAX_JOB_NAME:
        raise InvalidInput(f"job name {name!r} is too long; use a shorter run id")
    return name
