"""Truthful health against a real S3 that starts late; draining on SIGTERM in a real process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from medxiaohe.storage import open_store
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_services.cli import app
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests import hostile
from tests.conftest import ALLOWED, SECRET, publish_small_tree, s3_settings, server_settings
from tests.servers import free_ports, running, start_weed

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_status(stub: health_pb2_grpc.HealthStub, service: str, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    status = -1
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status
        if status == want:
            break
        time.sleep(0.1)
    return status


def health_cli(target: str, service: str) -> tuple[int, str]:
    """`medxiaohe health` (what the chart's `helm test` pods run): exit code, status."""
    result = CliRunner().invoke(app, ["health", target, "--service", service, "--timeout", "3"])
    return result.exit_code, json.loads(result.stdout)["status"]


def test_not_serving_while_s3_is_down_then_serving(pki: DevPki, tmp_path: Path) -> None:
    s3_port, health_port = free_ports(2)
    s3 = s3_settings(f"127.0.0.1:{s3_port}", "health")
    settings = server_settings(pki, str(s3.pop("store_uri")), health_port=health_port, **s3)
    probe = f"127.0.0.1:{health_port}"
    store = open_store(settings.store_uri, settings)
    spec = BUILDERS["evidence"](Resources(settings, store))  # depends on the store alone
    with running(settings, [spec]) as server:
        paths = pki.clients[ALLOWED]
        stub = health_pb2_grpc.HealthStub(
            secure_channel(server.target, pki.ca, paths.cert, paths.key)
        )
        time.sleep(0.5)  # several dependency checks have run against the closed port
        assert wait_status(stub, spec.full_name, NOT_SERVING, 2) == NOT_SERVING
        assert wait_status(stub, "", NOT_SERVING, 2) == NOT_SERVING
        assert health_cli(probe, spec.full_name) == (1, "NOT_SERVING")
        weed = start_weed(tmp_path / "weed", s3_port=s3_port)
        try:
            assert wait_status(stub, spec.full_name, SERVING, 20) == SERVING
            assert wait_status(stub, "", SERVING, 5) == SERVING
            assert health_cli(probe, spec.full_name) == (0, "SERVING")
            assert health_cli(probe, "medxiaohe.nothing.v1.NoService") == (1, "NOT_FOUND")
        finally:
            weed.stop()
        assert wait_status(stub, spec.full_name, NOT_SERVING, 20) == NOT_SERVING
    assert health_cli(probe, "") == (1, "UNAVAILABLE")  # the server is gone


BIG = f"uploads/callers/{ALLOWED}/big.bin"  # the caller's own upload


def test_sigterm_lets_an_in_flight_stream_finish(pki: DevPki, tmp_path: Path) -> None:
    port, health_port = free_ports(2)
    store = open_store(str(tmp_path / "store"))
    publish_small_tree(str(tmp_path / "store"))
    data = os.urandom(6 << 20)
    store.put_bytes(BIG, data)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")},
        "MEDXIAOHE_GRPC_HOST": "127.0.0.1",
        "MEDXIAOHE_GRPC_PORT": str(port),
        "MEDXIAOHE_HEALTH_PORT": str(health_port),
        "MEDXIAOHE_STORE_URI": store.uri,
        "MEDXIAOHE_TLS_CERT": str(pki.server.cert),
        "MEDXIAOHE_TLS_KEY": str(pki.server.key),
        "MEDXIAOHE_TLS_CLIENT_CA": str(pki.ca),
        "MEDXIAOHE_DRAIN_GRACE_S": "30",
        "MEDXIAOHE_INGESTION__ALLOW": f'{{"{ALLOWED}": ["*"]}}',
        "MEDXIAOHE_DEID_SECRET": SECRET,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "medxiaohe_services.cli", "serve", "ingestion"],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        probe = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{health_port}"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if probe.Check(health_pb2.HealthCheckRequest(), timeout=1).status == SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.1)
        paths = pki.clients[ALLOWED]
        channel = secure_channel(f"127.0.0.1:{port}", pki.ca, paths.cert, paths.key)
        stub = ing_grpc.IngestionServiceStub(channel)
        stream = stub.DownloadArtifact(
            ing.DownloadArtifactRequest(key=BIG, chunk_size=16 << 10), timeout=60
        )
        received = [next(stream).chunk]
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # the server is draining now; our call is still open
        assert probe.Check(health_pb2.HealthCheckRequest(), timeout=3).status == NOT_SERVING
        for message in stream:
            received.append(message.chunk)
            time.sleep(0.0005)  # a slow reader
        assert hashlib.sha256(b"".join(received)).digest() == hashlib.sha256(data).digest()
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
        stderr = server.communicate()[1].decode()
    # the call really was in flight: the drain began before its audit line (written at its end)
    assert 0 <= stderr.index('"msg":"draining"') < stderr.index('"rpc":"DownloadArtifact"')


def test_health_and_other_calls_answer_while_a_payload_is_parsed(
    pki: DevPki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40-megapixel PNG of 131 KB takes a second to parse; parsed on the event loop it held
    every call and the probes' health (liveness failed, the pod restarted). Here one parse is
    held until the checks are done: were it on the loop, they would hang."""
    import threading

    from medxiaohe_services.ingestion import convert

    started, release = threading.Event(), threading.Event()
    real = convert.study_record

    def slow_parse(study: ing.Study) -> object:
        started.set()
        release.wait(timeout=120)
        return real(study)

    monkeypatch.setattr(convert, "study_record", slow_parse)
    (health_port,) = free_ports(1)
    settings = server_settings(pki, str(tmp_path / "store"), health_port=health_port)
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as server:
        paths = pki.clients[ALLOWED]
        channel = secure_channel(server.target, pki.ca, paths.cert, paths.key)
        main_health = health_pb2_grpc.HealthStub(channel)
        assert wait_status(main_health, "", SERVING, 60) == SERVING
        stub = ing_grpc.IngestionServiceStub(channel)
        png = ing.StudyFile(format=ing.STUDY_FILE_FORMAT_PNG, content=hostile.png(6300, 6300))
        study = ing.Study(study_id="big", files=[png], text="Chest film without acute findings.")
        reply: list[ing.IngestStudiesResponse] = []
        call = threading.Thread(
            target=lambda: reply.append(
                stub.IngestStudies(iter([ing.IngestStudiesRequest(study=study)]), timeout=120)
            )
        )
        call.start()
        try:
            assert started.wait(timeout=60), "the parse never started"
            probe = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{health_port}"))
            for stub_ in (probe, main_health):  # limits catch a hang, not a slow machine
                for service in ("", "medxiaohe.liveness"):
                    request = health_pb2.HealthCheckRequest(service=service)
                    assert stub_.Check(request, timeout=10).status == SERVING
            tagged = stub.TagEntities(ing.TagEntitiesRequest(text="Fever."), timeout=10)
            assert tagged.mentions
        finally:
            release.set()
            call.join(timeout=120)
    assert reply[0].accepted == 1  # the 40-megapixel image went through the real parser
