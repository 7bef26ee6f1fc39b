"""The chart renders for default values and the gpu profile, and every object validates strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from medxiaohe_services.deploy.manifests import CHART, crd_schema, render_chart, validate_object

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas"
GPU = CHART / "profiles" / "gpu.yaml"


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("profiles", [[], [GPU]], ids=["default", "gpu"])
def test_every_object_validates_strictly(profiles: list[Path]) -> None:
    objects = render_chart(profiles)
    assert {o["kind"] for o in objects} == {
        "Deployment",
        "Service",
        "NetworkPolicy",
        "ServiceAccount",
        "InferenceService",  # checked against KServe's CRD below
    }
    builtin = [o for o in objects if o["kind"] != "InferenceService"]
    problems = [p for o in builtin for p in validate_object(o)]
    assert problems == []


def test_strict_validation_catches_unknown_fields() -> None:
    deployment = next(iter(by_kind(render_chart(), "Deployment").values()))
    deployment["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    assert validate_object(deployment)


def test_pods_are_restricted_and_probed_over_native_grpc() -> None:
    deployments = by_kind(render_chart(), "Deployment")
    assert set(deployments) == {
        f"medxiaohe-{s}" for s in ("ingestion", "evidence", "report", "rubric")
    }
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["readinessProbe"]["grpc"]["service"].startswith("medxiaohe.")
        assert container["livenessProbe"]["grpc"]["service"] == "medxiaohe.liveness"
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"]["readOnly"] is True
        assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"][
            "secretName"
        ] == "medxiaohe-tls"
        env = {e["name"]: e for e in container["env"]}
        assert env["MEDXIAOHE_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secretKey"
        assert container["args"] == ["serve", name.removeprefix("medxiaohe-")]


def test_network_policies_admit_only_declared_callers() -> None:
    gateway = {"podSelector": {"matchLabels": {"app": "ehr-gateway"}}}
    objects = render_chart(values={"services": {"ingestion": {"callers": [gateway]}}})
    policies = by_kind(objects, "NetworkPolicy")
    grpc_rules = {
        name: [r for r in p["spec"]["ingress"] if r["ports"][0]["port"] == 50051]
        for name, p in policies.items()
    }
    assert grpc_rules["medxiaohe-ingestion"][0]["from"] == [gateway]
    evidence_from = grpc_rules["medxiaohe-evidence"][0]["from"]
    assert evidence_from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "report"
    assert grpc_rules["medxiaohe-report"] == []  # nobody declared: nobody gets in


def test_gpu_profile_requests_gpus_on_gpu_nodes() -> None:
    deployments = by_kind(render_chart([GPU]), "Deployment")
    report = deployments["medxiaohe-report"]["spec"]["template"]["spec"]
    assert report["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert report["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert (
        "nvidia.com/gpu"
        not in deployments["medxiaohe-ingestion"]["spec"]["template"]["spec"]["containers"][0][
            "resources"
        ]["limits"]
    )


def test_allow_lists_reach_the_settings() -> None:
    allow = {"ris-viewer": ["GenerateReport"]}
    deployment = by_kind(
        render_chart(values={"services": {"report": {"allow": allow}}}), "Deployment"
    )
    env = {
        e["name"]: e.get("value")
        for e in deployment["medxiaohe-report"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MEDXIAOHE_REPORT__ALLOW"] == '{"ris-viewer":["GenerateReport"]}'


@pytest.mark.parametrize(
    "values",
    [
        {"services": {"report": {"replicas": -1}}},
        {"services": {"report": {"replica": 1}}},
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"store": {"uri": "ftp://x"}},
    ],
)
def test_values_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_chart(values=values)


def test_kserve_resources_validate_against_the_crd() -> None:
    crd_file = SCHEMAS / "serving.kserve.io_inferenceservices.yaml"
    if not crd_file.is_file():
        pytest.skip(f"KServe CRD schema not found at {crd_file}")
    crds = {"InferenceService": crd_schema(crd_file, "v1beta1")}
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "tiny"},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://m/tiny"}
            }
        },
    }
    assert validate_object(isvc, crds) == []
    isvc["spec"]["predictor"]["minReplicas"] = "two"
    assert validate_object(isvc, crds)


def test_the_model_is_an_inference_service_in_either_runtime() -> None:
    from medxiaohe_services.deploy.manifests import kserve_crds

    crds = kserve_crds(SCHEMAS)
    if "InferenceService" not in crds:
        pytest.skip(f"KServe CRD schema not found in {SCHEMAS}")
    (isvc,) = [o for o in render_chart() if o["kind"] == "InferenceService"]
    assert validate_object(isvc, crds) == []
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["args"][:3] == ["model", "serve", "/mnt/models"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://medxiaohe/platform/models/vlm"

    hf = render_chart([CHART / "profiles" / "hf-runtime.yaml"])
    (isvc,) = [o for o in hf if o["kind"] == "InferenceService"]
    assert validate_object(isvc, crds) == []
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "huggingface"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    broken = {**isvc, "spec": {"predictor": {**isvc["spec"]["predictor"], "minReplicas": "one"}}}
    assert validate_object(broken, crds)  # the CRD schema really checks
    assert not [
        o
        for o in render_chart(values={"model": {"enabled": False}})
        if o["kind"] == "InferenceService"
    ]
