"""A stand-in for the Kubernetes API server, for the launcher tests. No API server runs here,
so this is the one place with a fake: it replaces urllib3's pool manager under the client's own
request layer (kubernetes.client.rest), keeping objects in a dict the way the API server would.
Everything above it - request building, serialization, error mapping - is the real client."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

import urllib3
from kubernetes import client

PATH = re.compile(
    r"^/(?:api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<kind>[a-z]+)"
    r"(?:/(?P<name>[^/]+))?(?P<log>/log)?$"
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
        if method == "PATCH":
            key = (kind, ns, name)
            if key not in self.objects:
                return self._reply(404, {"kind": "Status", "reason": "NotFound"})
            self.objects[key] = json.loads(kwargs["body"])
            return self._reply(200, self.objects[key])
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


def api_client(server: FakeApiServer) -> client.ApiClient:
    api = client.ApiClient(client.Configuration(host="https://kubernetes.test"))
    api.rest_client.pool_manager = server  # the fake: below the client's request layer
    return api
