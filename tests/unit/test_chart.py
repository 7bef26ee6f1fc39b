"""The chart renders for default values and the gpu profile, and every object validates strictly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from medxiaohe.storage.access import COMPONENTS
from medxiaohe_services.deploy.manifests import (
    CHART,
    CRD_FILES,
    SCHEMAS,
    crd_schema,
    kserve_crds,
    render_chart,
    validate_object,
)

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "schemas"
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
        "PodDisruptionBudget",
        "Job",  # the entity tree's post-install hook
        "Pod",  # `helm test`
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
        name: [r for r in p["spec"]["ingress"] if r.get("ports", [{}])[0].get("port") == 50051]
        for name, p in policies.items()
        if "ingress" in p["spec"]  # the default-deny policies have no rules at all
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


def test_the_shipped_crd_schemas_are_kserves_unchanged() -> None:
    if not UPSTREAM.is_dir():
        pytest.skip(f"no upstream copy of the KServe CRDs at {UPSTREAM}")
    for name in CRD_FILES.values():
        assert (SCHEMAS / name).read_bytes() == (UPSTREAM / name).read_bytes(), name


def test_kserve_resources_validate_against_the_crd() -> None:
    crd_file = SCHEMAS / "serving.kserve.io_inferenceservices.yaml"
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
    crds = kserve_crds()
    (isvc,) = [o for o in render_chart() if o["kind"] == "InferenceService"]
    assert validate_object(isvc, crds) == []
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["args"][:3] == ["model", "serve", "/mnt/models"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["STORAGE_URI"] == "s3://medxiaohe/platform/models/vlm"

    for profile in ("hf-runtime", "gpu"):  # vLLM, with the guard as the pod's only door
        hf = render_chart([CHART / "profiles" / f"{profile}.yaml"])
        (isvc,) = [o for o in hf if o["kind"] == "InferenceService"]
        assert validate_object(isvc, crds) == []
        runtime, guard = isvc["spec"]["predictor"]["containers"]
        assert runtime["name"] == "kserve-container"  # where KServe puts the downloaded model
        assert runtime["image"].startswith("kserve/huggingfaceserver:")
        assert "--http_port=8090" in runtime["args"]  # loopback only: the policy opens 8080/1
        assert "--enable_grpc=false" in runtime["args"]
        assert {"--enable-auto-tool-choice", "--tool-call-parser=hermes"} <= set(runtime["args"])
        assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert "ports" not in runtime
        assert guard["args"] == [
            "model",
            "guard",
            "--upstream",
            "http://127.0.0.1:8090",
            "--http-port",
            "8080",
        ]
        assert guard["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
        env = {e["name"]: e for e in guard["env"]}
        assert env["MEDXIAOHE_TLS_CLIENT_CA"]["value"] == "/etc/medxiaohe/tls/ca.crt"
        assert json.loads(env["MEDXIAOHE_PREDICTOR_ALLOW"]["value"]) == {
            "report": ["ChatCompletions"],
            "rubric": ["ChatCompletions"],
        }
    broken = {**isvc, "spec": {"predictor": {**isvc["spec"]["predictor"], "minReplicas": "one"}}}
    assert validate_object(broken, crds)  # the CRD schema really checks
    assert not [
        o
        for o in render_chart(values={"model": {"enabled": False}})
        if o["kind"] == "InferenceService"
    ]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    """The labels of the pods an object runs (KServe labels predictor pods by service name)."""
    if obj["kind"] == "InferenceService":
        return {"serving.kserve.io/inferenceservice": obj["metadata"]["name"]}
    labels: dict[str, str] = obj["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


WORKER = {"broker": {"urlSecret": "medxiaohe-broker"}, "worker": {"enabled": True}}
TRAINING = CHART / "profiles" / "training-job.yaml"


def test_every_pod_is_denied_by_default_both_ways() -> None:
    objects = render_chart([TRAINING], values=WORKER)
    policies = list(by_kind(objects, "NetworkPolicy").values())
    deny = [p for p in policies if "ingress" not in p["spec"] and "egress" not in p["spec"]]
    pods = [o for o in objects if o["kind"] in ("Deployment", "Job", "InferenceService")]
    assert {o["metadata"]["labels"].get("app.kubernetes.io/component") for o in pods} >= {
        "ingestion",
        "worker",
        "model",
        "ner",
    }
    for obj in pods:
        (default,) = [p for p in deny if selects(p, pod_labels(obj))]
        assert default["spec"]["policyTypes"] == ["Ingress", "Egress"]
        allowed = [p for p in policies if p not in deny and selects(p, pod_labels(obj))]
        assert allowed, obj["metadata"]["name"]
        egress = [r for p in allowed for r in p["spec"]["egress"]]
        ports = {port["port"] for r in egress for port in r.get("ports", [])}
        assert {53, 9000} <= ports  # DNS and the store, for everyone


def test_each_component_reaches_only_its_peers() -> None:
    policies = by_kind(render_chart(values=WORKER), "NetworkPolicy")

    def egress_to(name: str) -> list[dict[str, str]]:
        rules = policies[f"medxiaohe-{name}"]["spec"]["egress"]
        return [p.get("podSelector", {}).get("matchLabels", {}) for r in rules for p in r["to"]]

    report = egress_to("report")
    assert {x.get("app.kubernetes.io/component") for x in report} >= {"evidence", "rubric"}
    assert {"serving.kserve.io/inferenceservice": "medxiaohe-vlm"} in report
    assert not any(x.get("app.kubernetes.io/component") for x in egress_to("ingestion"))
    assert {"app.kubernetes.io/name": "redis"} in egress_to("worker")
    assert {"app.kubernetes.io/name": "redis"} not in egress_to("ingestion")
    assert policies["medxiaohe-worker"]["spec"]["ingress"] == []
    model_from = policies["medxiaohe-model"]["spec"]["ingress"][0]["from"]
    callers = {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in model_from}
    assert callers == {"report", "rubric"}


def test_secrets_come_only_from_secrets() -> None:
    secret_env = {
        "MEDXIAOHE_DEID_SECRET",
        "MEDXIAOHE_S3_ACCESS_KEY",
        "MEDXIAOHE_S3_SECRET_KEY",
        "MEDXIAOHE_BROKER_URL",
        "MEDXIAOHE_PREDICTOR_TOKENS",
    }
    objects = render_chart(values={**WORKER, "model": {"tokensSecret": "model-tokens"}})
    seen = set()
    for obj in objects:
        if obj["kind"] in ("Deployment", "InferenceService"):
            spec = obj["spec"]
            pod = spec["template"]["spec"] if obj["kind"] == "Deployment" else spec["predictor"]
            for env in (e for c in pod["containers"] for e in c.get("env", [])):
                if env["name"] in secret_env:
                    seen.add(env["name"])
                    assert "value" not in env
                    assert env["valueFrom"]["secretKeyRef"]["name"]
    assert seen == secret_env
    for key in ("deid_secret", "DEID_SECRET", "s3_secret_key", "Broker_Url", "predictor_tokens"):
        with pytest.raises(helm.HelmValuesError):
            render_chart(values={"services": {"ingestion": {"settings": {key: "x"}}}})
    for key in ("MEDXIAOHE_DEID_SECRET", "medxiaohe_broker_url"):  # nor through plain env
        with pytest.raises(helm.HelmValuesError):
            render_chart(values={"services": {"ingestion": {"env": {key: "x"}}}})
    evidence = by_kind(objects, "Deployment")["medxiaohe-evidence"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in evidence["containers"][0]["env"]}
    assert env["OMP_NUM_THREADS"] == "1"  # its query encoders do not contend
    with pytest.raises(helm.HelmError):  # no secret name: no install
        render_chart(values={"deid": {"existingSecret": ""}})


def test_the_model_is_cluster_local_and_authenticates_callers() -> None:
    (isvc,) = by_kind(render_chart(), "InferenceService").values()
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    (container,) = isvc["spec"]["predictor"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MEDXIAOHE_TLS_CLIENT_CA"] == "/etc/medxiaohe/tls/ca.crt"
    assert (
        env["MEDXIAOHE_PREDICTOR_ALLOW"]
        == '{"report":["ChatCompletions"],"rubric":["ChatCompletions"]}'
    )
    assert "--insecure" not in container["args"]


def test_the_store_is_reached_over_tls_by_default() -> None:
    (deployment, *_) = by_kind(render_chart(), "Deployment").values()
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MEDXIAOHE_S3_SECURE"] == "true"


def _store_secrets(pod: dict[str, Any]) -> set[str]:
    return {
        e["valueFrom"]["secretKeyRef"]["name"]
        for c in pod["containers"]
        for e in c.get("env", [])
        if e["name"] in ("MEDXIAOHE_S3_ACCESS_KEY", "MEDXIAOHE_S3_SECRET_KEY")
    }


def test_each_component_has_its_own_store_credential() -> None:
    """One S3 credential for every pod let a training Job read raw uploads and any pod
    overwrite models/*/_LATEST: now each component's pods carry only their own, which the
    store limits to that component's prefixes (tests/integration/test_store_access.py)."""
    values = {**WORKER, "model": {"imagePrefix": "s3://medxiaohe/platform/uploads/callers/"}}
    objects = render_chart([TRAINING], values=values)
    found: dict[str, set[str]] = {}
    for obj in objects:
        if obj["kind"] == "Job" and obj["metadata"]["name"].endswith("-met-build"):
            # the tree is written where ingestion writes it, with ingestion's credential
            assert _store_secrets(obj["spec"]["template"]["spec"]) == {"medxiaohe-s3-ingestion"}
        elif obj["kind"] == "Job":
            found["training"] = _store_secrets(obj["spec"]["template"]["spec"])
            env = {e["name"]: e for e in obj["spec"]["template"]["spec"]["containers"][0]["env"]}
            key = env["MEDXIAOHE_CHECKPOINT_KEY"]["valueFrom"]["secretKeyRef"]
            assert key == {"name": "medxiaohe-checkpoint-key", "key": "key"}
        elif obj["kind"] == "Deployment":
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            found[component] = _store_secrets(obj["spec"]["template"]["spec"])
        elif obj["kind"] == "InferenceService":
            found["model"] = _store_secrets(obj["spec"]["predictor"])
    expected = {c: {f"medxiaohe-s3-{c}"} for c in COMPONENTS}
    assert found == expected
    with pytest.raises(helm.HelmError):  # a component without a credential: no install
        render_chart(values={"store": {"s3": {"credentials": {"report": ""}}}})


def test_the_chart_readme_lists_the_access_table() -> None:
    """Operators read the README; the tests and the policies read the table: they agree."""
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] in COMPONENTS:
            read, write = ([p.strip("` ") for p in c.split(",") if c != "-"] for c in cells[1:])
            rows[cells[0]] = (tuple(read), tuple(write))
    assert rows == {c: (a.read, a.write) for c, a in COMPONENTS.items()}


def test_report_and_rubric_authenticate_to_the_model_from_secrets() -> None:
    client = {"modelClient": {"certSecret": "report-client", "apiKeySecret": "report-key"}}
    judge = {"modelClient": {"certSecret": "", "apiKeySecret": "judge-key"}}
    deployments = by_kind(
        render_chart(values={"services": {"report": client, "rubric": judge}}), "Deployment"
    )
    report = deployments["medxiaohe-report"]["spec"]["template"]["spec"]
    (container,) = report["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MEDXIAOHE_MODEL_CLIENT_CERT"]["value"] == "/etc/medxiaohe/model-client/tls.crt"
    assert env["MEDXIAOHE_REPORT_MODEL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "report-key",
        "key": "apiKey",
    }
    volumes = {v["name"]: v for v in report["volumes"]}
    assert volumes["model-client"]["secret"]["secretName"] == "report-client"
    rubric = deployments["medxiaohe-rubric"]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in rubric["env"]}
    assert "MEDXIAOHE_RUBRIC_JUDGE_API_KEY" in names
    assert "MEDXIAOHE_MODEL_CLIENT_CERT" not in names
    for key in ("report_model_api_key", "RUBRIC_JUDGE_API_KEY", "model_client_key"):
        with pytest.raises(helm.HelmValuesError):
            render_chart(values={"services": {"report": {"settings": {key: "x"}}}})


def test_budgets_add_up_in_the_chart() -> None:
    """The spool fits the /tmp volume it lives on; the report's concurrency is a setting."""
    deployments = by_kind(render_chart(values={"tmpVolumeMi": 4096}), "Deployment")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MEDXIAOHE_UPLOAD_SPOOL_MB"] == "3072"
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert tmp["emptyDir"]["sizeLimit"] == "4096Mi"
        assert ("MEDXIAOHE_REPORT_MAX_CONCURRENT" in env) == name.endswith("-report")


def test_predictor_and_training_pods_are_restricted_like_the_services() -> None:
    """No service-account token, a read-only root file system, seccomp RuntimeDefault: for
    the predictor, the helm-managed training Job and the launcher's Jobs alike."""
    from medxiaohe_services.deploy.training import render_job

    objects = render_chart([TRAINING])
    (isvc,) = by_kind(objects, "InferenceService").values()
    jobs = by_kind(objects, "Job")
    _, launched = render_job("sft", "r1", "epochs: 1\n")
    pods = {
        "predictor": isvc["spec"]["predictor"],
        "chart job": jobs["train-ner-ner-helm-1"]["spec"]["template"]["spec"],
        "launched job": launched["spec"]["template"]["spec"],
        "met build": jobs["medxiaohe-met-build"]["spec"]["template"]["spec"],
        **{name: pod["spec"] for name, pod in by_kind(objects, "Pod").items()},
    }
    for name, pod in pods.items():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name  # where a read-only pod writes
    (hf,) = by_kind(
        render_chart([CHART / "profiles" / "hf-runtime.yaml"]), "InferenceService"
    ).values()
    assert hf["spec"]["predictor"]["automountServiceAccountToken"] is False


def _pod_specs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod the chart runs, by kind/name: Deployments, Jobs, Pods, the predictor."""
    specs = {}
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in ("Deployment", "Job"):
            specs[name] = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            specs[name] = obj["spec"]
        elif obj["kind"] == "InferenceService":
            specs[name] = obj["spec"]["predictor"]
    return specs


@pytest.mark.parametrize("profiles", [[], [GPU]], ids=["default", "gpu"])
def test_a_first_install_builds_the_tree_is_testable_and_survives_drains(
    profiles: list[Path],
) -> None:
    values = {**WORKER, "imagePullSecrets": [{"name": "registry"}]}
    objects = render_chart([*profiles, TRAINING], values=values)
    deployments = by_kind(objects, "Deployment")
    services = sorted(o["metadata"]["labels"]["app.kubernetes.io/component"]
                      for o in deployments.values())  # fmt: skip
    assert services == ["evidence", "ingestion", "report", "rubric", "worker"]
    # the entity tree: built after every install and upgrade, the hook replaced on a rerun
    met = by_kind(objects, "Job")["medxiaohe-met-build"]
    hooks = met["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in hooks["helm.sh/hook-delete-policy"]
    assert met["spec"]["template"]["spec"]["containers"][0]["args"] == ["met", "build"]
    # `helm test`: every gRPC service's health, through its Service's health port
    tests = by_kind(objects, "Pod")
    for name in ("evidence", "ingestion", "report", "rubric"):
        pod = tests[f"medxiaohe-test-{name}"]
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        args = pod["spec"]["containers"][0]["args"]
        assert args[:2] == ["health", f"medxiaohe-{name}:50052"]
        assert args[3] == f"medxiaohe.{name}.v1.{name.title()}Service"
        ports = {p["name"]: p["port"] for p in by_kind(objects, "Service")[f"medxiaohe-{name}"]
                 ["spec"]["ports"]}  # fmt: skip
        assert ports["health"] == 50052
    # a drain takes at most one pod of each component at once
    budgets = by_kind(objects, "PodDisruptionBudget")
    assert sorted(budgets) == [f"medxiaohe-{s}" for s in services]
    assert {b["spec"]["maxUnavailable"] for b in budgets.values()} == {1}
    # every pod pulls with the registry credential; services write only to emptyDirs
    for name, pod in _pod_specs(objects).items():
        assert pod.get("imagePullSecrets") == [{"name": "registry"}], name
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MEDXIAOHE_MODEL_CACHE_DIR"] == "/var/cache/medxiaohe/models", name
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["cache"], name


def test_report_and_rubric_call_the_charts_model_unless_told_otherwise() -> None:
    deployments = by_kind(render_chart(), "Deployment")

    def env(name: str) -> dict[str, str]:
        container = deployments[f"medxiaohe-{name}"]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value", "") for e in container["env"]}

    url = "https://medxiaohe-vlm-predictor.medxiaohe.svc.cluster.local:80/openai/v1"
    assert env("report")["MEDXIAOHE_REPORT_MODEL_URL"] == url
    assert env("report")["MEDXIAOHE_REPORT_MODEL_NAME"] == "medxiaohe-vlm"
    assert env("report")["MEDXIAOHE_MODEL_CLIENT_CERT"] == "/etc/medxiaohe/model-client/tls.crt"
    assert env("rubric")["MEDXIAOHE_RUBRIC_JUDGE_URL"] == url
    assert "MEDXIAOHE_REPORT_MODEL_URL" not in env("ingestion")
    own = {"services": {"report": {"settings": {"report_model_url": "https://llm.example/v1"}}}}
    report = by_kind(render_chart(values=own), "Deployment")["medxiaohe-report"]
    urls = [e for e in report["spec"]["template"]["spec"]["containers"][0]["env"]
            if e["name"] == "MEDXIAOHE_REPORT_MODEL_URL"]  # fmt: skip
    assert urls == [{"name": "MEDXIAOHE_REPORT_MODEL_URL", "value": "https://llm.example/v1"}]
    off = by_kind(render_chart(values={"model": {"enabled": False}}), "Deployment")
    report_env = off["medxiaohe-report"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "MEDXIAOHE_REPORT_MODEL_URL" not in {e["name"] for e in report_env}


def test_the_notes_say_what_to_do_next() -> None:
    chart = helm.Chart.load(CHART)
    rendered = chart.render(chart.values, name="medxiaohe", namespace="ml", is_install=True)
    notes = next(text for name, text in rendered.items() if name.endswith("/NOTES.txt"))
    for line in ("helm test medxiaohe -n ml", "medxiaohe-deid", "medxiaohe-s3-training",
                 "medxiaohe-report-model-client", "logs job/medxiaohe-met-build"):  # fmt: skip
        assert line in notes, line


def test_tracing_reaches_every_process_and_only_its_collector() -> None:
    endpoint = "http://otel.observability:4317"
    objects = render_chart(values={**WORKER, "tracing": {"otlpEndpoint": endpoint}})
    for name, pod in _pod_specs(objects).items():
        if name.startswith(("Pod/", "Job/")):  # helm test pods and the hook: short-lived
            continue
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["MEDXIAOHE_OTEL_ENDPOINT"] == endpoint, name
    policy = by_kind(objects, "NetworkPolicy")["medxiaohe-ingestion"]
    assert {"port": 4317, "protocol": "TCP"} in [p for r in policy["spec"]["egress"]
                                                  for p in r["ports"]]  # fmt: skip
    quiet = by_kind(render_chart(), "NetworkPolicy")["medxiaohe-ingestion"]
    assert 4317 not in {p["port"] for r in quiet["spec"]["egress"] for p in r["ports"]}


def test_the_review_app_is_served_by_the_report_pods_to_declared_peers_only() -> None:
    proxy = [{"podSelector": {"matchLabels": {"app": "hospital-proxy"}}}]
    review = {"review": {"enabled": True, "tokensSecret": "review-tokens", "from": proxy}}
    objects = render_chart(values={"services": {"report": review}})
    report = by_kind(objects, "Deployment")["medxiaohe-report"]["spec"]["template"]["spec"]
    container = report["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MEDXIAOHE_REVIEW_PORT"]["value"] == "8443"
    assert env["MEDXIAOHE_REVIEW_TOKENS"]["valueFrom"]["secretKeyRef"] == {
        "name": "review-tokens", "key": "tokens"
    }  # fmt: skip
    assert {"name": "review", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    ingestion = by_kind(objects, "Deployment")["medxiaohe-ingestion"]["spec"]["template"]["spec"]
    assert "MEDXIAOHE_REVIEW_PORT" not in {e["name"] for e in ingestion["containers"][0]["env"]}
    service = by_kind(objects, "Service")["medxiaohe-report"]
    assert "review" in {p["name"] for p in service["spec"]["ports"]}
    policy = by_kind(objects, "NetworkPolicy")["medxiaohe-report"]
    rules = [
        r for r in policy["spec"]["ingress"] if r["ports"] == [{"port": 8443, "protocol": "TCP"}]
    ]
    assert [r["from"] for r in rules] == [proxy]
    default = by_kind(render_chart(), "NetworkPolicy")["medxiaohe-report"]["spec"]["ingress"]
    assert not [r for r in default if {"port": 8443, "protocol": "TCP"} in r["ports"]]  # nobody
