"""The Kubernetes objects that run a training stage: the resolved config in a ConfigMap, a
batch/v1 Job (Indexed for multi-node, torchrun with c10d rendezvous through a headless
Service), GPUs, /dev/shm, object-store credentials from a Secret, the run id as a label,
backoff and TTL. Plain dicts: the launcher submits them with the kubernetes client; tests
validate them strictly."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.common.errors import InvalidInput

RDZV_PORT = 29400
CONFIG_DIR = "/etc/medxiaohe-train"
RUN_LABEL = "medxiaohe.io/run-id"
# A run id is a Kubernetes label value (and one store key segment): letters, digits, "-", "_"
# and "." inside, alphanumeric at both ends, at most 63 characters. Nothing else reaches a
# label selector ("a,app=x" would select other objects).
_RUN_ID = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


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


@dataclass(frozen=True)
class ClusterSpec:
    image: str = "medxiaohe/training:0.1.0"
    namespace: str = "medxiaohe"
    nodes: int = 1
    gpus_per_node: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    shm_size: str = "8Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    store_secret: str = "medxiaohe-s3-training"  # noqa: S105 (a Secret's name, not a secret)
    checkpoint_secret: str = "medxiaohe-checkpoint-key"  # noqa: S105 (the same)
    store_uri: str = "s3://medxiaohe/platform"
    s3_endpoint: str = "minio.minio.svc.cluster.local:9000"
    backoff_limit: int = 2
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    service_account: str = ""


def job_name(stage: str, run_id: str) -> str:
    name = f"train-{stage}-{run_id}".lower().replace("_", "-")
    if len(name) > 52:  # Job names become pod labels; leave room for the index suffix
        raise InvalidInput(f"job name {name!r} is too long; use a shorter run id")
    return name


def render_job(
    stage: str, run_id: str, config_yaml: str, spec: ClusterSpec
) -> list[dict[str, Any]]:
    """The objects to submit for one run, in order: the config's ConfigMap, a headless
    Service (multi-node only) and the Job."""
    if spec.nodes < 1 or spec.gpus_per_node < 0:
        raise InvalidInput("nodes must be >= 1 and gpus_per_node >= 0")
    check_run_id(run_id)
    name = job_name(stage, run_id)
    config_uri = f"{CONFIG_DIR}/config.yaml"
    labels = {
        "app.kubernetes.io/name": "medxiaohe-training",
        "app.kubernetes.io/component": stage,
        RUN_LABEL: run_id,
    }
    per_node = max(1, spec.gpus_per_node)
    command = ["medxiaohe-train", stage, "--config", config_uri, "--run_id", run_id]
    if spec.nodes > 1 or per_node > 1:
        command = [
            "torchrun",
            f"--nnodes={spec.nodes}",
            f"--nproc-per-node={per_node}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={name}-0.{name}.{spec.namespace}.svc:{RDZV_PORT}",
            f"--rdzv-id={run_id}",
            "--no-python",
            "medxiaohe-train",
            stage,
            "--config",
            config_uri,
            "--run_id",
            run_id,
        ]
    limits: dict[str, str] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = str(spec.gpus_per_node)
    env = [
        {"name": "MEDXIAOHE_STORE_URI", "value": spec.store_uri},
        {"name": "MEDXIAOHE_S3_ENDPOINT", "value": spec.s3_endpoint},
        {
            "name": "MEDXIAOHE_S3_ACCESS_KEY",
            "valueFrom": {"secretKeyRef": {"name": spec.store_secret, "key": "accessKey"}},
        },
        {
            "name": "MEDXIAOHE_S3_SECRET_KEY",
            "valueFrom": {"secretKeyRef": {"name": spec.store_secret, "key": "secretKey"}},
        },
        {
            "name": "MEDXIAOHE_CHECKPOINT_KEY",
            "valueFrom": {"secretKeyRef": {"name": spec.checkpoint_secret, "key": "key"}},
        },
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 (caches in the scratch emptyDir)
    ]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,  # a training pod has no business with the API
        "subdomain": name,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "train",
                "image": spec.image,
                "command": command,
                "env": env,
                "ports": [{"name": "rdzv", "containerPort": RDZV_PORT}],
                "resources": {
                    "requests": {"cpu": spec.cpu, "memory": spec.memory},
                    "limits": limits,
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": "dshm", "mountPath": "/dev/shm"},  # noqa: S108 (the pod's own)
                    {"name": "scratch", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir)
                    {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": name}},
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = list(spec.tolerations)
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "completions": spec.nodes,
            "parallelism": spec.nodes,
            "completionMode": "Indexed",
            "backoffLimit": spec.backoff_limit,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "clusterIP": "None",
            "selector": {RUN_LABEL: run_id},
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT}],
            "publishNotReadyAddresses": True,
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "data": {"config.yaml": config_yaml},
    }
    return [config_map, service, job] if spec.nodes > 1 else [config_map, job]
