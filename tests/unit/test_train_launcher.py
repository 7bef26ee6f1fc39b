"""The Kubernetes training launcher against the official client. No API server runs here, so
this is the one place with a fake: it stands in for urllib3's pool manager under the client's
own request layer (kubernetes.client.rest), keeping objects in a dict the way the API server
would. Everything above it - request building, serialization, error mapping - is real."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import urllib3
from kubernetes import client

from medxiaohe.common.errors import InvalidInput, NotFound
from medxiaohe.training.manifests import ClusterSpec
from medxiaohe_services.deploy.training import KubernetesLauncher, local_command, spec_from_values

PATH = re.compile(
    r"^/(?:api/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<kind>[a-z]+)(?:/(?P<name>[^/]+))?(?P<log>/log)?$"
)


class FakeApiServer:
    """Answers the client's HTTP requests from an in-memory object store."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> urllib3.HTTPResponse:
        parsed = urlparse(url)
        self.requests.append((method, parsed.path))
        match = PATH.match(parsed.path)
        assert match, parsed.path
        ns, kind, name = match["ns"], match["kind"], match["name"]
        query = parse_qs(parsed.query) | {
            k: [v] for k, v in dict(kwargs.get("fields") or {}).items()
        }
        if method == "POST":
            body = json.loads(kwargs["body"])
            key = (kind, ns, body["metadata"]["name"])
            if key in self.objects:
                return self._reply(409, {"kind": "Status", "reason": "AlreadyExists"})
            self.objects[key] = body
            return self._reply(201, body)
        if method == "DELETE":
            if self.objects.pop((kind, ns, name), None) is None:
                return self._reply(404, {"kind": "Status", "reason": "NotFound"})
            return self._reply(200, {"kind": "Status", "status": "Success"})
        if match["log"]:
            return self._reply(200, f"log of {name}\n", text=True)
        selector = query.get("labelSelector", [""])[0]
        label, _, value = selector.partition("=")
        items = [
            o
            for (k, n, _), o in self.objects.items()
            if k == kind and n == ns and (not label or o["metadata"]["labels"].get(label) == value)
        ]
        return self._reply(200, {"items": items, "metadata": {}})

    @staticmethod
    def _reply(status: int, body: Any, text: bool = False) -> urllib3.HTTPResponse:
        data = body.encode() if text else json.dumps(body).encode()
        return urllib3.HTTPResponse(
            body=data,
            status=status,
            reason="fake",
            headers={"content-type": "text/plain" if text else "application/json"},
            preload_content=True,
        )


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def launcher(server: FakeApiServer) -> KubernetesLauncher:
    api = client.ApiClient(client.Configuration(host="https://kubernetes.test"))
    api.rest_client.pool_manager = server  # the fake: below the client's request layer
    return KubernetesLauncher(api, "ml")


def test_submit_creates_validated_objects_once(
    launcher: KubernetesLauncher, server: FakeApiServer
) -> None:
    spec = ClusterSpec(nodes=2, gpus_per_node=8)
    created = launcher.submit("ner", "r7", "epochs: 1\n", spec)
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
    assert launcher.submit("ner", "r7", "epochs: 1\n", spec) == created
    assert len(server.objects) == 3


def test_status_logs_and_cancel(launcher: KubernetesLauncher, server: FakeApiServer) -> None:
    launcher.submit("ner", "r8", "epochs: 1\n", ClusterSpec())
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
    bad = ClusterSpec(tolerations=[{"key": "gpu", "operater": "Exists"}])  # a typo
    with pytest.raises(InvalidInput, match="Job does not validate"):
        launcher.submit("ner", "r9", "epochs: 1\n", bad)
    assert server.requests == []


def test_cluster_spec_from_chart_values() -> None:
    values = {
        "store": {"uri": "s3://b/p", "s3": {"endpoint": "minio:9000", "credentialsSecret": "s"}},
        "training": {
            "image": {"repository": "reg/train", "tag": "1.2"},
            "nodeSelector": {"gpu": "h100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    }
    spec = spec_from_values(values, nodes=2, gpus_per_node=None)
    assert (spec.image, spec.store_uri, spec.store_secret, spec.nodes) == (
        "reg/train:1.2",
        "s3://b/p",
        "s",
        2,
    )
    assert spec.node_selector == {"gpu": "h100"}
    assert spec.gpus_per_node == 0


def test_local_command_uses_torchrun_for_several_processes(tmp_path: Any) -> None:
    single = local_command("ner", tmp_path / "c.yaml", "r1")
    assert single[1:4] == ["-m", "medxiaohe_training", "ner"]
    multi = local_command("ner", tmp_path / "c.yaml", "r1", processes=2)
    assert multi[0].endswith("torchrun")
    assert "--nproc-per-node=2" in multi
