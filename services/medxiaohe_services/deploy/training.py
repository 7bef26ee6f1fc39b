"""The Kubernetes training launcher: a stage as Kubernetes objects submitted, watched and
cancelled through the official client (local runs: ``deploy.local``).

A run's objects are rendered from the chart's training-job template with the chart's values
(its ``training`` and ``store`` blocks, plus any overrides): the same objects helm renders for
a helm-managed run. Every object is validated strictly (kubernetes-validate) before it is
submitted. Submitting is idempotent on the run id: objects that already exist with it are left
as they are."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput, NotFound, Unavailable
from medxiaohe.training.manifests import job_name, run_selector
from medxiaohe.training.pipeline import StageFailed, Step
from medxiaohe_services.deploy.manifests import deep_merge, render_chart, validate_object

KINDS = ("ConfigMap", "Service", "Job")  # the order a run's objects are created in


def render_job(
    stage: str,
    run_id: str,
    config_yaml: str,
    values: Mapping[str, Any] | None = None,
    namespace: str = "medxiaohe",
) -> list[dict[str, Any]]:
    """The run's objects, in the order they are created: its config's ConfigMap, a headless
    Service (multi-node only) and the Job, from the chart's template with ``values``."""
    import helm_python as helm

    job_name(stage, run_id)  # a bad run id or a long name, said plainly before the chart says it
    run = {"enabled": True, "stage": stage, "runId": run_id, "config": config_yaml}
    merged = deep_merge(dict(values or {}), {"training": {"job": run}})
    try:
        objects = render_chart(values=merged, namespace=namespace, template="training-job.yaml")
    except (helm.HelmValuesError, helm.HelmError) as exc:
        raise InvalidInput(f"the training values do not render: {exc}") from None
    return sorted(objects, key=lambda o: KINDS.index(o["kind"]))


def run_values(
    values: Mapping[str, Any], nodes: int | None = None, gpus_per_node: int | None = None
) -> dict[str, Any]:
    """Chart values with a run's shape on top (None keeps the values' own)."""
    shape = {"nodes": nodes, "gpusPerNode": gpus_per_node}
    return deep_merge(dict(values), {"training": {k: v for k, v in shape.items() if v is not None}})


class KubernetesRunner:
    """Pipeline steps as Kubernetes Jobs, each submitted when the one before succeeded; a
    failed Job of the step is deleted and submitted again (the stage resumes from its
    checkpoints in the store)."""

    def __init__(
        self, launcher: KubernetesLauncher, values: Mapping[str, Any], poll_s: float = 30.0
    ) -> None:
        self.launcher, self.values, self.poll_s = launcher, values, poll_s

    def state(self, step: Step) -> str:
        try:
            return self.launcher.status(step.run_id).state
        except NotFound:
            return "Absent"

    def finished(self, step: Step) -> bool:
        return self.state(step) == "Succeeded"

    def run(self, step: Step) -> None:
        if self.state(step) == "Failed":
            self.launcher.cancel(step.run_id)
            while self.state(step) != "Absent":  # deletion runs in the background
                time.sleep(self.poll_s)
        self.launcher.submit(step.stage, step.run_id, step.config_yaml(), self.values)
        while (state := self.state(step)) not in ("Succeeded", "Failed"):
            time.sleep(self.poll_s)
        if state == "Failed":
            raise StageFailed(f"stage {step.name}: Job {job_name(step.stage, step.run_id)} failed")


@dataclass(frozen=True)
class JobStatus:
    run_id: str
    job: str
    state: str  # Pending, Running, Succeeded, Failed
    active: int
    succeeded: int
    failed: int
    pods: dict[str, str]  # pod name -> phase


class KubernetesLauncher:
    """Talks to the API server through a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)

    @classmethod
    def from_kubeconfig(cls, namespace: str, context: str | None = None) -> KubernetesLauncher:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            try:
                config.load_kube_config(context=context)
            except (config.ConfigException, OSError) as exc:
                raise Unavailable(f"no Kubernetes credentials: {exc}") from None
        return cls(client.ApiClient(), namespace)

    def submit(
        self, stage: str, run_id: str, config_yaml: str, values: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Render (chart values), validate, then create each object in order; returns
        'Kind/name' of each."""
        objects = render_job(stage, run_id, config_yaml, values, self.namespace)
        for obj in objects:
            errors = validate_object(obj)
            if errors:
                raise InvalidInput(f"{obj['kind']} does not validate: {'; '.join(errors)}")
        create = {
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "Job": self.batch.create_namespaced_job,
        }
        for obj in objects:
            self.call(create[obj["kind"]], self.namespace, obj, exists_ok=True)
        return [f"{obj['kind']}/{obj['metadata']['name']}" for obj in objects]

    def status(self, run_id: str) -> JobStatus:
        job = self._job(run_id)
        pods = self.call(
            self.core.list_namespaced_pod, self.namespace, label_selector=run_selector(run_id)
        )
        s = job.status
        conditions = {c.type for c in (s.conditions or []) if c.status == "True"}
        state = (
            "Succeeded"
            if "Complete" in conditions
            else "Failed"
            if "Failed" in conditions
            else "Running"
            if s.active
            else "Pending"
        )
        return JobStatus(
            run_id=run_id,
            job=job.metadata.name,
            state=state,
            active=s.active or 0,
            succeeded=s.succeeded or 0,
            failed=s.failed or 0,
            pods={p.metadata.name: p.status.phase for p in pods.items},
        )

    def logs(self, run_id: str, tail_lines: int | None = None) -> dict[str, str]:
        """Pod name -> its training container's log."""
        pods = self.call(
            self.core.list_namespaced_pod, self.namespace, label_selector=run_selector(run_id)
        )
        if not pods.items:
            raise NotFound(f"run {run_id} has no pods in {self.namespace}")
        # raw bytes: the client turns a preloaded log into the repr of its bytes
        return {
            p.metadata.name: self.call(
                self.core.read_namespaced_pod_log,
                p.metadata.name,
                self.namespace,
                container="train",
                tail_lines=tail_lines,
                _preload_content=False,
            ).data.decode("utf-8", "replace")
            for p in pods.items
        }

    def cancel(self, run_id: str) -> list[str]:
        """Delete the run's Job (and its pods), Service and ConfigMap; returns what went."""
        name = self._job(run_id).metadata.name
        deleted = []
        for kind, delete in (
            ("Job", self.batch.delete_namespaced_job),
            ("Service", self.core.delete_namespaced_service),
            ("ConfigMap", self.core.delete_namespaced_config_map),
        ):
            if self.call(
                delete, name, self.namespace, missing_ok=True, propagation_policy="Foreground"
            ):
                deleted.append(f"{kind}/{name}")
        return deleted

    def _job(self, run_id: str) -> Any:
        jobs = self.call(
            self.batch.list_namespaced_job, self.namespace, label_selector=run_selector(run_id)
        )
        if not jobs.items:
            raise NotFound(f"no training job with run id {run_id} in {self.namespace}")
        return jobs.items[0]

    @staticmethod
    def call(
        method: Any, *args: Any, exists_ok: bool = False, missing_ok: bool = False, **kwargs: Any
    ) -> Any:
        """One API call, its errors mapped once onto the platform's taxonomy."""
        from kubernetes.client.exceptions import ApiException

        try:
            return method(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 409 and exists_ok:
                return None
            if exc.status == 404:
                if missing_ok:
                    return None
                raise NotFound(f"Kubernetes: {exc.reason}") from None
            if exc.status in (400, 422):
                raise InvalidInput(f"Kubernetes rejected the request: {exc.reason}") from None
            raise Unavailable(f"Kubernetes API error {exc.status}: {exc.reason}") from None
