"""The evidence service over mTLS against real S3: indexing, retrieval, provenance, errors,
idempotent retries, and a new index version picked up under load without a failed request."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from medxiaohe.entities.build import build_tree
from medxiaohe.storage import open_store
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.evidence.v1 import evidence_pb2 as ev
from medxiaohe_protos.evidence.v1 import evidence_pb2_grpc as ev_grpc
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests.conftest import ALLOWED, LIMITED, s3_settings, server_settings, small_records
from tests.servers import PlatformThread, Weed, running

pytestmark = pytest.mark.integration
NOTE = (
    "Community-acquired pneumonia is treated with amoxicillin in most adults. Macrolides are "
    "added when atypical organisms are suspected. Chest radiographs confirm consolidation."
)


@pytest.fixture(scope="module")
def platform(pki: DevPki, weed: Weed) -> Iterator[PlatformThread]:
    s3 = s3_settings(weed.endpoint, f"ev-{uuid.uuid4().hex[:8]}")
    evidence = {
        "allow": {ALLOWED: ["*"], LIMITED: ["IndexPassages", "RetrieveEvidence"]},
        "indexes": {ALLOWED: ["*"], LIMITED: ["scratch"]},  # LIMITED writes one index only
    }
    settings = server_settings(pki, str(s3.pop("store_uri")), evidence=evidence, **s3)
    store = open_store(settings.store_uri, settings)
    store.ping()
    build_tree(small_records()).save(store)  # passages get MET entity ids
    with running(settings, [BUILDERS["evidence"](Resources(settings, store))]) as thread:
        deadline = time.monotonic() + 60
        while not thread.platform.is_serving() and time.monotonic() < deadline:
            thread.run(thread.platform.check_once())
            time.sleep(0.2)
        assert thread.platform.is_serving()
        yield thread


def stub(
    platform: PlatformThread, pki: DevPki, caller: str = ALLOWED
) -> ev_grpc.EvidenceServiceStub:
    paths = pki.clients[caller]
    return ev_grpc.EvidenceServiceStub(
        secure_channel(platform.target, pki.ca, paths.cert, paths.key)
    )


def index(
    client: ev_grpc.EvidenceServiceStub,
    name: str,
    request_id: str,
    *messages: ev.IndexPassagesRequest,
) -> ev.IndexPassagesResponse:
    first = ev.IndexPassagesRequest(index_name=name, request_id=request_id)
    first.MergeFrom(messages[0])
    return client.IndexPassages(iter([first, *messages[1:]]), timeout=120)


def test_index_retrieve_and_fetch_with_provenance(platform: PlatformThread, pki: DevPki) -> None:
    client = stub(platform, pki)
    reply = index(
        client,
        "guidelines",
        "r-1",
        ev.IndexPassagesRequest(
            document=ev.EvidenceDocument(
                document_id="cap", text=NOTE, source="guideline", licence="CC-BY"
            )
        ),
        ev.IndexPassagesRequest(
            passage=ev.Passage(
                passage_id="flu-1",
                document_id="flu",
                source="leaflet",
                text="Influenza vaccination is offered every autumn.",
                entity_ids=["ICD10CM:J11"],
            )
        ),
        ev.IndexPassagesRequest(passage=ev.Passage(passage_id="", text="no id")),
    )
    assert reply.passages_indexed >= 2
    assert [r.reason for r in reply.rejected] == ["a passage needs passage_id and text"]
    again = index(
        client,
        "guidelines",
        "r-1",
        ev.IndexPassagesRequest(passage=ev.Passage(passage_id="x", text="other")),
    )
    assert again.index_version == reply.index_version  # a retried request id publishes nothing new

    found = client.RetrieveEvidence(
        ev.RetrieveEvidenceRequest(index_name="guidelines", query="antibiotic for pneumonia", k=2),
        timeout=30,
    )
    top = found.results[0].passage
    assert top.document_id == "cap"
    assert top.licence == "CC-BY"
    assert NOTE[top.span.start : top.span.end] == top.text
    assert found.provenance.index_version == reply.index_version
    only = client.RetrieveEvidence(
        ev.RetrieveEvidenceRequest(
            index_name="guidelines", query="vaccine", k=5, entity_ids=["ICD10CM:J11"]
        ),
        timeout=30,
    )
    assert [r.passage.passage_id for r in only.results] == ["flu-1"]
    assert "ICD10CM:J18.9" in top.entity_ids  # tagged against the MET when indexed
    tagged = client.RetrieveEvidence(
        ev.RetrieveEvidenceRequest(
            index_name="guidelines", query="vaccine", k=5, entity_ids=["ICD10CM:J18.9"]
        ),
        timeout=30,
    )
    assert tagged.results
    assert {r.passage.document_id for r in tagged.results} == {"cap"}
    fetched = client.GetPassage(
        ev.GetPassageRequest(index_name="guidelines", passage_id="flu-1"), timeout=10
    )
    assert fetched.passage.text.startswith("Influenza")


@pytest.mark.parametrize(
    ("request_message", "code"),
    [
        (
            ev.RetrieveEvidenceRequest(index_name="guidelines", query=""),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            ev.RetrieveEvidenceRequest(index_name="guidelines", query="x", k=1000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (ev.RetrieveEvidenceRequest(index_name="absent", query="x"), grpc.StatusCode.NOT_FOUND),
        (ev.RetrieveEvidenceRequest(query="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            ev.RetrieveEvidenceRequest(index_name="guidelines", query="fever " * 1000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
def test_bad_requests_get_clear_codes(
    platform: PlatformThread,
    pki: DevPki,
    request_message: ev.RetrieveEvidenceRequest,
    code: grpc.StatusCode,
) -> None:
    client = stub(platform, pki)
    index(
        client,
        "guidelines",
        "r-1",
        ev.IndexPassagesRequest(passage=ev.Passage(passage_id="p", text="t")),
    )
    with pytest.raises(grpc.RpcError) as err:
        client.RetrieveEvidence(request_message, timeout=30)
    assert err.value.code() == code
    assert err.value.details()


def test_a_passage_whose_span_cannot_be_sent_back_is_rejected(
    platform: PlatformThread, pki: DevPki
) -> None:
    """Found by the fuzzer: a stored span past int32 made every later answer that carried the
    passage fail (INTERNAL)."""
    client = stub(platform, pki)
    for start in (-5, 2**31 - 2):
        bad = ev.Passage(passage_id="s", text="Fever.", span=common_pb2.Span(start=start))
        good = ev.Passage(passage_id="g", text="Fever and cough.")
        reply = index(client, "spans", f"s{start}", ev.IndexPassagesRequest(passage=bad),
                      ev.IndexPassagesRequest(passage=good))  # fmt: skip
        assert reply.passages_indexed == 1
        assert [r.record_id for r in reply.rejected] == ["s"]
        assert "span" in reply.rejected[0].reason


def test_new_version_under_load_loses_no_request(platform: PlatformThread, pki: DevPki) -> None:
    client = stub(platform, pki)
    first = index(
        client,
        "live",
        "v1",
        ev.IndexPassagesRequest(passage=ev.Passage(passage_id="a", text="Aspirin reduces fever.")),
    )
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = client.RetrieveEvidence(
                    ev.RetrieveEvidenceRequest(index_name="live", query="fever", k=3), timeout=10
                )
                versions.add(reply.provenance.index_version)
            except grpc.RpcError as exc:
                failures.append(exc.code().name)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    second = index(
        client,
        "live",
        "v2",
        ev.IndexPassagesRequest(
            passage=ev.Passage(passage_id="b", text="Paracetamol lowers fever too.")
        ),
    )
    deadline = time.monotonic() + 30
    while second.index_version not in versions and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert {first.index_version, second.index_version} <= versions


def test_a_caller_writes_only_the_indexes_it_was_given(
    platform: PlatformThread, pki: DevPki
) -> None:
    """Every report is grounded in an index: writing one is writing a prompt."""
    limited = stub(platform, pki, LIMITED)
    passage = ev.IndexPassagesRequest(passage=ev.Passage(passage_id="n", text="Notes of mine."))
    assert index(limited, "scratch", "s-1", passage).passages_indexed == 1
    with pytest.raises(grpc.RpcError) as err:
        index(limited, "guidelines", "s-2", passage)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "may not write index 'guidelines'" in (err.value.details() or "")


def test_index_passages_is_compare_and_swap(platform: PlatformThread, pki: DevPki) -> None:
    """A writer that names the version it read is refused (FAILED_PRECONDITION) once another
    moved on; eight concurrent writers that name none all succeed, and nothing is lost."""
    client = stub(platform, pki)
    first = index(client, "cas", "c-1", ev.IndexPassagesRequest(passage=ev.Passage(
        passage_id="a", text="Aspirin reduces fever.")))  # fmt: skip
    stale = ev.IndexPassagesRequest(expected_version="", passage=ev.Passage(
        passage_id="b", text="Ibuprofen reduces fever."))  # fmt: skip
    with pytest.raises(grpc.RpcError) as err:  # it believed the index did not exist
        index(client, "cas", "c-2", stale)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert first.index_version in (err.value.details() or "")
    current = ev.IndexPassagesRequest(expected_version=first.index_version, passage=ev.Passage(
        passage_id="b", text="Ibuprofen reduces fever."))  # fmt: skip
    second = index(client, "cas", "c-3", current)
    # eight writers that name no version: each is built on whatever the others published
    writers = [f"w{i}" for i in range(8)]

    def write(p: str) -> ev.IndexPassagesResponse:
        passage = ev.Passage(passage_id=p, text=f"Passage {p} on fever.")
        return index(client, "cas", f"r-{p}", ev.IndexPassagesRequest(passage=passage))

    with ThreadPoolExecutor(len(writers)) as pool:
        replies = list(pool.map(write, writers))
    assert all(r.passages_indexed == 1 for r in replies)  # none refused
    for passage_id in ("a", "b", *writers):  # nobody's passages were lost
        got = client.GetPassage(ev.GetPassageRequest(index_name="cas", passage_id=passage_id))
        assert got.passage.passage_id == passage_id
    assert second.index_version != first.index_version
