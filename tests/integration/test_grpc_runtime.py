"""The service runtime over real mTLS: authentication, authorization, audit, errors, reflection."""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.logs import JsonFormatter
from medxiaohe.common.settings import Settings
from medxiaohe.storage import open_store
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_protos.rubric.v1 import rubric_pb2, rubric_pb2_grpc
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Loader, Resources
from medxiaohe_services.runtime.server import server_credentials
from medxiaohe_services.runtime.services import BUILDERS
from tests.conftest import ALLOWED, LIMITED, publish_small_tree, server_settings
from tests.servers import PlatformThread, free_ports, running, serving

pytestmark = pytest.mark.integration
PHI = "Jane Q. Patient, MRN 00-123-456, seen on 2024-03-02"


@pytest.fixture(scope="module")
def platform(
    pki: DevPki, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[PlatformThread]:
    (metrics_port,) = free_ports(1)
    settings = server_settings(
        pki,
        str(tmp_path_factory.mktemp("store")),
        local_model_uri=str(tiny_model),  # the report service needs a model to be SERVING
        metrics_port=metrics_port,
        max_stream_messages=50,
        max_stream_mb=1,
        max_upload_mb=2,
    )
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    resources = Resources(settings, store)  # shared, as `medxiaohe up` shares them
    specs = [build(resources) for build in BUILDERS.values()]
    loaders = list({id(x): x for spec in specs for x in spec.loaders}.values())
    # one tree for the four services, one encoder, one model, one registry of indexes
    kinds = sorted(type(x).__name__ for x in loaders)
    assert kinds == ["EncoderLoader", "IndexRegistry", "LocalModel", "TaggerLoader"]
    background = [x for x in loaders if isinstance(x, Loader)]
    assert not any(x.running or x.ready for x in background)  # nothing before the start
    with running(settings, specs) as thread:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the entity tree loads in the background
            thread.run(thread.platform.check_once())
            if thread.platform.is_serving():
                break
            time.sleep(0.1)
        yield thread
    model = resources.local_model(str(tiny_model)).model
    assert not any(x.running for x in background)  # the platform stopped what it started
    assert not model.batching


def client(platform: PlatformThread, pki: DevPki, name: str = ALLOWED) -> grpc.Channel:
    paths = pki.clients[name]
    return secure_channel(platform.target, pki.ca, paths.cert, paths.key)


def upload(channel: grpc.Channel, key: str, data: bytes) -> ing.UploadArtifactResponse:
    chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)] or [b""]
    requests = [ing.UploadArtifactRequest(key=key, chunk=chunks[0])]
    requests += [ing.UploadArtifactRequest(chunk=c) for c in chunks[1:]]
    return ing_grpc.IngestionServiceStub(channel).UploadArtifact(iter(requests), timeout=10)


def test_allowed_caller_gets_through(platform: PlatformThread, pki: DevPki) -> None:
    data = b"x" * 4500
    stored = upload(client(platform, pki), "notes/jane-doe-a.txt", data)
    # under the caller's own prefix, named by a keyed pseudonym: no file name reaches the store
    assert stored.key.startswith(f"uploads/callers/{ALLOWED}/")
    assert stored.key.endswith(".txt")
    assert "jane" not in stored.key
    assert "notes" not in stored.key
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    back = stub.DownloadArtifact(ing.DownloadArtifactRequest(key=stored.key, chunk_size=999))
    assert b"".join(m.chunk for m in back) == data


def test_a_caller_downloads_only_its_own_uploads(platform: PlatformThread, pki: DevPki) -> None:
    stored = upload(client(platform, pki), "notes/raw.txt", b"not yet de-identified")
    other = ing_grpc.IngestionServiceStub(client(platform, pki, LIMITED))  # may DownloadArtifact
    for key in (stored.key, "corpus/ingested/shards/x/records.parquet"):
        with pytest.raises(grpc.RpcError) as err:
            list(other.DownloadArtifact(ing.DownloadArtifactRequest(key=key), timeout=5))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "DownloadAnyArtifact" in (err.value.details() or "")


def test_plaintext_client_is_refused(platform: PlatformThread) -> None:
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(platform.target))
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_from_another_ca_is_refused(
    platform: PlatformThread, pki: DevPki, foreign_pki: DevPki
) -> None:
    paths = foreign_pki.clients[ALLOWED]  # same name, wrong issuer
    channel = secure_channel(platform.target, pki.ca, paths.cert, paths.key)
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_without_certificate_is_refused(platform: PlatformThread, pki: DevPki) -> None:
    channel = secure_channel(platform.target, pki.ca)
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_caller_not_on_allow_list_is_denied(platform: PlatformThread, pki: DevPki) -> None:
    with pytest.raises(grpc.RpcError) as err:
        upload(client(platform, pki, LIMITED), "notes/denied.txt", b"data")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert LIMITED in (err.value.details() or "")
    stub = rubric_pb2_grpc.RubricServiceStub(client(platform, pki, LIMITED))
    with pytest.raises(grpc.RpcError) as err:
        stub.ScoreResponse(rubric_pb2.ScoreResponseRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_audit_line_per_call_with_identity_and_no_payload(
    platform: PlatformThread, pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="medxiaohe.audit")
    time.sleep(0.3)  # the server writes a call's audit line just after the call returns
    caplog.clear()
    upload(client(platform, pki), "audit/phi.txt", PHI.encode())
    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    assert stub.TagEntities(ing.TagEntitiesRequest(text=PHI + " has a fever"), timeout=5).mentions
    with pytest.raises(grpc.RpcError):
        upload(client(platform, pki, LIMITED), "audit/denied.txt", PHI.encode())
    deadline = time.monotonic() + 5
    while len(caplog.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "medxiaohe.audit"
    ]
    assert [(x["rpc"], x["caller"], x["code"]) for x in lines] == [
        ("UploadArtifact", ALLOWED, "OK"),
        ("TagEntities", ALLOWED, "OK"),
        ("UploadArtifact", LIMITED, "PERMISSION_DENIED"),
    ]
    assert all(x["latency_ms"] >= 0 and x["service"] == "ingestion" for x in lines)
    # the caller's certificate fingerprint and address; record ids only as keyed pseudonyms
    fingerprint = hashlib.sha256(pki.clients[ALLOWED].cert.read_bytes()).hexdigest()
    assert lines[0]["cert_sha256"] == fingerprint
    assert lines[0]["peer"].startswith("ipv4:127.0.0.1:")
    text = caplog.text + "".join(json.dumps(x) for x in lines)
    for fragment in ("Jane", "00-123-456", "2024-03-02"):
        assert fragment not in text


def test_missing_key_is_not_found_over_grpc(platform: PlatformThread, pki: DevPki) -> None:
    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadArtifact(ing.DownloadArtifactRequest(key=ABSENT), timeout=5))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert ABSENT in (err.value.details() or "")


ABSENT = f"uploads/callers/{ALLOWED}/absent.bin"


def test_bad_input_is_invalid_argument_and_uploads_are_immutable(
    platform: PlatformThread, pki: DevPki
) -> None:
    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    with pytest.raises(grpc.RpcError) as err:
        list(stub.DownloadArtifact(ing.DownloadArtifactRequest(key="../etc/passwd"), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadArtifact(iter([ing.UploadArtifactRequest(chunk=b"no key")]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    first = upload(client(platform, pki), "imm/x.txt", b"same")
    assert upload(client(platform, pki), "imm/x.txt", b"same") == first  # idempotent retry
    with pytest.raises(grpc.RpcError) as err:
        upload(client(platform, pki), "imm/x.txt", b"different")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_health_and_reflection(platform: PlatformThread, pki: DevPki) -> None:
    channel = client(platform, pki, LIMITED)  # open to every authenticated caller
    health = health_pb2_grpc.HealthStub(channel)
    for spec in platform.platform.specs:
        status = health.Check(health_pb2.HealthCheckRequest(service=spec.full_name), timeout=3)
        assert status.status == health_pb2.HealthCheckResponse.SERVING, spec.name
    overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=3).status
    assert overall == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in answer.list_services_response.service}
    assert {s.full_name for s in platform.platform.specs} <= names


def test_plaintext_only_on_loopback(pki: DevPki) -> None:
    with pytest.raises(InvalidInput, match=r"127\.0\.0\.1"):
        server_credentials(Settings(insecure=True, grpc_host="0.0.0.0"))  # noqa: S104
    with pytest.raises(InvalidInput, match="mTLS"):
        server_credentials(Settings())
    assert server_credentials(Settings(insecure=True, grpc_host="127.0.0.1")) is None


def test_prometheus_metrics_count_calls_under_the_usual_grpc_names(
    platform: PlatformThread, pki: DevPki
) -> None:
    with pytest.raises(grpc.RpcError):
        upload(client(platform, pki, LIMITED), "metrics/denied.txt", b"x")
    url = f"http://127.0.0.1:{platform.platform.settings.metrics_port}/metrics"
    time.sleep(0.2)  # counted as the call ends
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    labels = (
        'grpc_method="UploadArtifact",grpc_service="medxiaohe.ingestion.v1.IngestionService",'
        'grpc_type="client_stream"'
    )
    assert f'grpc_server_handled_total{{grpc_code="PERMISSION_DENIED",{labels}}}' in text
    assert f"grpc_server_started_total{{{labels}}}" in text
    assert f'grpc_server_handling_seconds_bucket{{{labels},le="0.005"}}' in text


def test_tag_entities_over_grpc(platform: PlatformThread, pki: DevPki) -> None:
    from medxiaohe_protos.common.v1 import common_pb2

    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    text = "Patient denies fever. History of type-2 diabetes mellitus."
    reply = stub.TagEntities(ing.TagEntitiesRequest(text=text), timeout=5)
    got = [(m.text, m.node_id, m.assertion) for m in reply.mentions]
    assert got == [
        ("fever", "HP:0001945", common_pb2.ASSERTION_NEGATED),
        ("type-2 diabetes mellitus", "ICD10CM:E11", common_pb2.ASSERTION_HISTORICAL),
    ]
    for m in reply.mentions:
        assert text[m.span.start : m.span.end] == m.text
        assert m.path[0] == "MET:root"
    assert reply.provenance.entity_tree_version
    only = stub.TagEntities(ing.TagEntitiesRequest(text=text, entity_types=["disease"]), timeout=5)
    assert [m.entity_type for m in only.mentions] == ["disease"]
    for bad in (
        ing.TagEntitiesRequest(text="  "),
        ing.TagEntitiesRequest(text="x", entity_types=["drug"]),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.TagEntities(bad, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_client_streams_are_capped(platform: PlatformThread, pki: DevPki) -> None:
    stub = ing_grpc.IngestionServiceStub(client(platform, pki))
    too_many = [ing.UploadArtifactRequest(key="notes/many.txt", chunk=b"x")]
    too_many += [ing.UploadArtifactRequest(chunk=b"x")] * 60
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadArtifact(iter(too_many), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 50 messages" in (err.value.details() or "")
    big = [ing.UploadArtifactRequest(key="notes/big.bin", chunk=b"x" * (1 << 20))]
    big += [ing.UploadArtifactRequest(chunk=b"x" * (1 << 20))] * 2
    with pytest.raises(grpc.RpcError) as err:  # uploads have their own byte cap (2 MiB here)
        stub.UploadArtifact(iter(big), timeout=30)
    assert "at most 2 MiB" in (err.value.details() or "")
    documents = [  # other streams: 1 MiB here
        ing.IngestDocumentsRequest(
            document=ing.Document(
                document_id=f"d{i}", format=ing.DOCUMENT_FORMAT_TEXT, content=b"a " * (1 << 18)
            )
        )
        for i in range(3)
    ]
    with pytest.raises(grpc.RpcError) as err:
        stub.IngestDocuments(iter(documents), timeout=30)
    assert "at most 1 MiB" in (err.value.details() or "")


def test_concurrent_rpcs_are_bounded(pki: DevPki, tmp_path: Path) -> None:
    """With room for one RPC, a second one is refused while the first is open."""
    settings = server_settings(pki, str(tmp_path / "store"), max_concurrent_rpcs=1)
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    store.put_bytes(f"uploads/callers/{ALLOWED}/a.bin", b"x" * (4 << 20))
    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        stub = ing_grpc.IngestionServiceStub(client(thread, pki))
        held = stub.DownloadArtifact(
            ing.DownloadArtifactRequest(key=f"uploads/callers/{ALLOWED}/a.bin", chunk_size=1024),
            timeout=30,
        )
        next(held)  # the first call is open, its reader slow
        with pytest.raises(grpc.RpcError) as err:
            stub.TagEntities(ing.TagEntitiesRequest(text="fever"), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        held.cancel()


def test_uploads_in_flight_share_a_spool_budget(pki: DevPki, tmp_path: Path) -> None:
    """Four 4 GiB uploads overflowed the 8 GiB /tmp: the uploads in flight share one budget.
    Two uploads each hold 600 KiB of a 1 MiB spool: whichever arrives second is refused
    (UNAVAILABLE, to retry) while the first completes; then there is room again."""
    import threading

    settings = server_settings(pki, str(tmp_path / "store"), max_upload_mb=1, upload_spool_mb=1)
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    half = b"x" * (600 << 10)
    hold = threading.Event()

    def slow_upload(name: str) -> Iterator[ing.UploadArtifactRequest]:
        yield ing.UploadArtifactRequest(key=f"notes/{name}.bin", chunk=half)
        hold.wait(timeout=60)  # in flight, its 600 KiB on the spool
        yield ing.UploadArtifactRequest(chunk=b"done")

    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        stub = ing_grpc.IngestionServiceStub(client(thread, pki))
        outcomes: list[object] = []

        def upload_one(name: str) -> None:
            try:
                outcomes.append(stub.UploadArtifact(slow_upload(name), timeout=60))
            except grpc.RpcError as exc:
                outcomes.append(exc)

        uploads = [threading.Thread(target=upload_one, args=(n,)) for n in ("one", "two")]
        for upload in uploads:
            upload.start()
        deadline = time.monotonic() + 30
        while not outcomes and time.monotonic() < deadline:  # the second is refused at once
            time.sleep(0.05)
        hold.set()
        for upload in uploads:
            upload.join(timeout=60)
        (refused,) = [o for o in outcomes if isinstance(o, grpc.RpcError)]
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "spool" in (refused.details() or "")
        (done,) = [o for o in outcomes if isinstance(o, ing.UploadArtifactResponse)]
        assert done.size == len(half) + 4
        again = [ing.UploadArtifactRequest(key="notes/again.bin", chunk=half)]
        assert stub.UploadArtifact(iter(again), timeout=30).size == len(half)  # room again
    with pytest.raises(ValueError, match="upload_spool_mb"):
        server_settings(pki, str(tmp_path / "store"), max_upload_mb=2, upload_spool_mb=1)


def test_certificates_rotate_without_a_restart_and_uri_sans_name_callers(
    pki: DevPki, tmp_path: Path
) -> None:
    """cert-manager rewrites the mounted files in place: new connections get the new server
    certificate and CA, no restart; a half-written pair is not loaded. A client certificate
    with a URI SAN (a SPIFFE id) is that caller, whatever its common name."""
    import shutil

    from medxiaohe_services.runtime.certs import write_dev_pki

    spiffe = "spiffe://hospital.example/ns/ris/sa/gateway"
    rotated = write_dev_pki(
        tmp_path / "rotated", clients=[ALLOWED, "ris"], uris={"ris": spiffe}, ca_name="New CA"
    )
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    files = {"tls.crt": pki.server.cert, "tls.key": pki.server.key, "ca.crt": pki.ca}
    for name, source in files.items():
        shutil.copy(source, mounted / name)
    allow = {ALLOWED: ["*"], spiffe: ["TagEntities"]}
    settings = server_settings(
        pki,
        str(tmp_path / "store"),
        tls_cert=mounted / "tls.crt",
        tls_key=mounted / "tls.key",
        tls_client_ca=mounted / "ca.crt",
        ingestion={"allow": allow},
    )
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    tag = ing.TagEntitiesRequest(text="Fever.")

    def call(ca: Path, caller: str, source: DevPki) -> grpc.StatusCode:
        paths = source.clients[caller]
        channel = secure_channel(thread.target, ca, paths.cert, paths.key)  # a new connection
        try:
            ing_grpc.IngestionServiceStub(channel).TagEntities(tag, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()
        finally:
            channel.close()

    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        assert serving(thread, timeout=60)
        assert call(pki.ca, ALLOWED, pki) == grpc.StatusCode.OK
        shutil.copy(rotated.server.cert, mounted / "tls.crt")  # half a rotation: not loaded
        time.sleep(0.05)
        assert call(pki.ca, ALLOWED, pki) == grpc.StatusCode.OK
        shutil.copy(rotated.server.key, mounted / "tls.key")
        shutil.copy(rotated.ca, mounted / "ca.crt")
        assert call(rotated.ca, ALLOWED, rotated) == grpc.StatusCode.OK  # rotated, no restart
        assert call(pki.ca, ALLOWED, pki) == grpc.StatusCode.UNAVAILABLE  # the old CA is out
        assert call(rotated.ca, "ris", rotated) == grpc.StatusCode.OK  # the SPIFFE id's entry
        paths = rotated.clients["ris"]
        channel = secure_channel(thread.target, rotated.ca, paths.cert, paths.key)
        uploads = ing_grpc.IngestionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:  # allowed TagEntities only, as that URI
            uploads.DownloadArtifact(ing.DownloadArtifactRequest(key="x"), timeout=10).next()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert spiffe in (err.value.details() or "")


def test_a_caller_name_cannot_reach_into_another_callers_uploads() -> None:
    from medxiaohe.storage.uploads import caller_uploads

    assert caller_uploads("ris") == "uploads/callers/ris/"
    assert not caller_uploads("ris/../pacs").startswith("uploads/callers/pacs")
    assert not caller_uploads("ris/x").startswith(caller_uploads("ris"))
    uri = caller_uploads("spiffe://hospital.example/ns/ris")
    assert uri.count("/") == 3  # one segment, whatever the name holds


def test_a_connection_ages_out_and_the_client_reconnects(pki: DevPki, tmp_path: Path) -> None:
    """Behind a Service a channel sticks to one replica: the server closes each connection
    after grpc_max_connection_age_s (GOAWAY), the channel goes idle, and its next call opens a
    new connection (wherever the Service sends it), without an error."""
    settings = server_settings(
        pki,
        str(tmp_path / "store"),
        grpc_max_connection_age_s=1.0,
        grpc_max_connection_age_grace_s=1.0,
    )
    spec = BUILDERS["evidence"](Resources(settings, open_store(settings.store_uri, settings)))
    with running(settings, [spec]) as server:
        paths = pki.clients[ALLOWED]
        channel = secure_channel(server.target, pki.ca, paths.cert, paths.key)
        states: list[grpc.ChannelConnectivity] = []
        channel.subscribe(states.append, try_to_connect=False)
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and grpc.ChannelConnectivity.IDLE not in states[1:]:
            time.sleep(0.1)
        ready = states.index(grpc.ChannelConnectivity.READY)
        assert grpc.ChannelConnectivity.IDLE in states[ready:], states  # the server let go
        stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)  # and it reconnects
        assert states.count(grpc.ChannelConnectivity.READY) >= 2, states
        channel.close()
