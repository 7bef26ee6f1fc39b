"""The Kubernetes training launcher against the official client, over tests/fake_kube.py (the one
fake: urllib3's pool manager under the client's request layer; no API server runs here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe_services.deploy.local import local_command
from medxiaohe_services.deploy.manifests import validate_object
from medxiaohe_services.deploy.training import KubernetesLauncher, render_job, run_values
from tests.fake_kube import FakeApiServer, api_client


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def launcher(server: FakeApiServer) -> KubernetesLauncher:
    return KubernetesLauncher(api_client(server), "ml")


def test_submit_creates_validated_objects_once(
    launcher: KubernetesLauncher, server: FakeApiServer
) -> None:
    values = run_values({}, nodes=2, gpus_per_node=8)
    created = launcher.submit("ner", "r7", "epochs: 1\n", values)
    assert created == ["ConfigMap/train-ner-r7", "Service/train-ner-r7", "Job/train-ner-r7"]
    assert [m for m, _ in server.requests] == ["POST", "POST", "POST"]
    assert server.requests[2][1] == "/apis/batch/v1/namespaces/ml/jobs"
    job = server.objects[("jobs", "ml", "train-ner-r7")]
    assert job["metadata"]["namespace"] == "ml"  # the launcher's namespace wins
    assert (
        job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == "8"
    )
    # a retried submit is a no-op: the API server answers 409 and nothing changes
    assert launcher.submit("ner", "r7", "epochs: 1\n", values) == created
    assert len(server.objects) == 3


def test_status_logs_and_cancel(launcher: KubernetesLauncher, server: FakeApiServer) -> None:
    launcher.submit("ner", "r8", "epochs: 1\n")
    job = server.objects[("jobs", "ml", "train-ner-r8")]
    job["status"] = {"active": 1}
    server.objects[("pods", "ml", "train-ner-r8-0-abcde")] = {
        "metadata": {"name": "train-ner-r8-0-abcde", "labels": {"medxiaohe.io/run-id": "r8"}},
        "status": {"phase": "Running"},
    }
    status = launcher.status("r8")
    assert (status.state, status.active, status.pods) == (
        "Running",
        1,
        {"train-ner-r8-0-abcde": "Running"},
    )
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    assert launcher.status("r8").state == "Succeeded"
    assert launcher.logs("r8") == {"train-ner-r8-0-abcde": "log of train-ner-r8-0-abcde\n"}
    assert launcher.cancel("r8") == ["Job/train-ner-r8", "ConfigMap/train-ner-r8"]
    assert not any(k[0] in ("jobs", "configmaps") for k in server.objects)
    with pytest.raises(NotFound, match="no training job with run id r8"):
        launcher.status("r8")


def test_an_object_that_does_not_validate_is_never_sent(
    launcher: KubernetesLauncher, server: FakeApiServer
) -> None:
    bad = {"training": {"tolerations": [{"key": "gpu", "operater": "Exists"}]}}  # a typo
    with pytest.raises(InvalidInput, match="Job does not validate"):
        launcher.submit("ner", "r9", "epochs: 1\n", bad)
    assert server.requests == []


def test_the_launcher_renders_the_chart_values() -> None:
    """A run's Job comes from the chart's template with the chart's values: the image, the
    store and its training credential, the scheduling constraints, the run's shape."""
    values = {
        "store": {
            "uri": "s3://bucket/p",
            "s3": {"endpoint": "minio:9000", "credentials": {"training": "s"}},
        },
        "training": {
            "image": {"repository": "reg/train", "tag": "1.2"},
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    }
    _, _, job = render_job("sft", "r1", "epochs: 1\n", run_values(values, nodes=2), "ml")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == "reg/train:1.2"
    assert env["MEDXIAOHE_STORE_URI"]["value"] == "s3://bucket/p"
    assert env["MEDXIAOHE_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s"
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert job["spec"]["completions"] == 2
    assert "nvidia.com/gpu" not in container["resources"]["limits"]  # gpusPerNode stays 0


def test_a_run_is_queued_retried_only_when_retrying_helps_and_sized() -> None:
    values = {
        "imagePullSecrets": [{"name": "registry"}],
        "training": {"kueueQueue": "gpu-team", "reportTo": "mlflow", "scratchSize": "50Gi",
                     "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}]},
    }  # fmt: skip
    _, job = render_job("cpt", "r2", "epochs: 1\n", run_values(values, nodes=1), "ml")
    assert validate_object(job) == []
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "train", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert container["command"][-2:] == ["--report_to", "mlflow"]
    assert container["resources"]["requests"]["ephemeral-storage"] == "50Gi"
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in container["env"]
    # without them: no queue label, the Trainer reports nowhere
    _, plain = render_job("cpt", "r3", "epochs: 1\n", run_values({}, nodes=1), "ml")
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    assert "imagePullSecrets" not in plain["spec"]["template"]["spec"]


def test_a_stage_that_cannot_succeed_exits_3_and_a_passing_failure_1(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medxiaohe.common.errors import Unavailable
    from medxiaohe_training import cli

    monkeypatch.setenv("MEDXIAOHE_DEID_SECRET", "s" * 32)
    with pytest.raises(SystemExit) as usage:
        cli.main(["nope"])
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as bad:
        cli.main(["ner", "--config", str(tmp_path / "missing.yaml")])
    assert bad.value.code == cli.CANNOT_SUCCEED == 3
    with pytest.raises(SystemExit) as unknown:
        cli.main(["ner", "--report_to", "wandb"])  # tensorboard or mlflow only
    assert unknown.value.code == 3

    def unreachable(config: Any, settings: Any) -> None:
        raise Unavailable("the store cannot be reached")

    monkeypatch.setitem(cli.STAGES, "ner", (cli.STAGES["ner"][0], unreachable))
    with pytest.raises(SystemExit) as passing:
        cli.main(["ner"])
    assert passing.value.code == 1


def test_local_command_uses_torchrun_for_several_processes(tmp_path: Any) -> None:
    single = local_command("ner", tmp_path / "c.yaml", "r1")
    assert single[1:4] == ["-m", "medxiaohe_training", "ner"]
    multi = local_command("ner", tmp_path / "c.yaml", "r1", processes=2)
    assert multi[0].endswith("torchrun")
    assert "--nproc-per-node=2" in multi


def test_a_local_run_needs_none_of_the_deploy_dependencies(tmp_path: Any) -> None:
    # The CLI with helm, kubernetes and the validators made unimportable, as in a training image.
    blocked = ("helm_python", "kubernetes", "kubernetes_validate", "jsonschema")
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from medxiaohe_services.cli import app
result = CliRunner().invoke(app, ["train", "submit", "ner", "--backend", "local", "--nodes", "2"])
assert "medxiaohe_services.deploy.local" in sys.modules, result.output
assert not set(sys.modules) & set({blocked!r}), sorted(set(sys.modules) & set({blocked!r}))
print(result.exit_code, " ".join(result.output.split()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("2 "), done.stdout
    assert "the local backend runs on this machine: --nodes 1" in done.stdout


def test_model_deploy_creates_then_updates_a_validated_inference_service(
    launcher: KubernetesLauncher, server: FakeApiServer
) -> None:
    from medxiaohe_services.deploy.manifests import kserve_crds
    from medxiaohe_services.deploy.model import deploy, render_inference_service

    assert "InferenceService" in kserve_crds()  # shipped with the package
    isvc = render_inference_service("s3://m/models/vlm", "vlm", [], gpus=1)
    assert deploy(launcher, isvc) == "created"
    path = "/apis/serving.kserve.io/v1beta1/namespaces/ml/inferenceservices"
    assert server.requests[-1] == ("POST", path)
    again = render_inference_service("s3://m/models/vlm-2", "vlm", [], runtime="huggingface")
    assert deploy(launcher, again) == "updated"  # 409, then a patch of the same name
    assert server.requests[-1] == ("PATCH", f"{path}/vlm")
    stored = server.objects[("inferenceservices", "ml", "vlm")]
    runtime, guard = stored["spec"]["predictor"]["containers"]  # vLLM behind the guard
    env = {e["name"]: e.get("value") for e in runtime["env"]}
    assert env["STORAGE_URI"] == "s3://m/models/vlm-2"
    assert guard["args"][:2] == ["model", "guard"]
    with pytest.raises(InvalidInput):
        render_inference_service("ftp://nope", "vlm", [])  # the chart's schema refuses it


class Cluster(FakeApiServer):
    """Jobs end the way ``outcomes`` says, one outcome per submission of each Job."""

    def __init__(self, outcomes: dict[str, list[str]]) -> None:
        super().__init__()
        self.outcomes = outcomes

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        reply = super().request(method, url, **kwargs)
        if method == "POST" and url.endswith("/jobs"):
            name = json.loads(kwargs["body"])["metadata"]["name"]
            ended = self.outcomes[name].pop(0)
            self.objects[("jobs", "ml", name)]["status"] = {
                "conditions": [{"type": ended, "status": "True"}]
            }
        return reply


def test_a_pipeline_on_kubernetes_resubmits_only_the_failed_stage(tmp_path: Path) -> None:
    import yaml

    from medxiaohe.training.pipeline import StageFailed, plan, run_pipeline
    from medxiaohe_services.deploy.training import KubernetesRunner
    from medxiaohe_training.cli import STAGES

    configs = Path(__file__).parents[2] / "training-jobs/medxiaohe_training/configs"
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"stages": [
        {"name": "warmup", "stage": "sft", "config": str(configs / "sft-tiny.yaml")},
        {"name": "foundation", "stage": "rl", "config": str(configs / "rl-tiny.yaml")},
    ]}))  # fmt: skip
    steps = plan(path, "pl-k", {k: v[0] for k, v in STAGES.items()})
    first, second = "train-sft-pl-k-warmup", "train-rl-pl-k-foundation"
    cluster = Cluster({first: ["Complete"], second: ["Failed", "Complete"]})
    runner = KubernetesRunner(KubernetesLauncher(api_client(cluster), "ml"), {}, 0)
    with pytest.raises(StageFailed, match=f"Job {second} failed"):
        run_pipeline(steps, runner)
    done = run_pipeline(steps, runner)  # the same pipeline id again
    assert [s["state"] for s in done] == ["skipped: published before", "ran"]
    posted = [p for m, p in cluster.requests if m == "POST" and p.endswith("/jobs")]
    assert len(posted) == 3  # stage 1 once, stage 2 twice
    deleted = [p for m, p in cluster.requests if m == "DELETE"]
    assert f"/apis/batch/v1/namespaces/ml/jobs/{second}" in deleted  # the failed Job went first
    config = yaml.safe_load(cluster.objects[("configmaps", "ml", second)]["data"]["config.yaml"])
    assert config["base_model"] == "runs/sft/pl-k-warmup/model"
