"""The ingestion pipeline against real S3 and the ingestion RPCs over mTLS."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from medxiaohe.common.settings import Settings
from medxiaohe.corpus import samples
from medxiaohe.corpus.deid import record_pseudonym
from medxiaohe.corpus.ingest import ShardIngestor, plan_shards
from medxiaohe.corpus.shards import list_shards, read_records
from medxiaohe.entities.build import build_tree
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.storage import ArtifactStore, open_store
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_protos.ingestion.v1 import ingestion_pb2_grpc as ing_grpc
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests.conftest import ALLOWED, publish_small_tree, s3_settings, server_settings, small_records
from tests.servers import PlatformThread, Weed, running

pytestmark = pytest.mark.integration


def upload_samples(store: ArtifactStore, folder: Path) -> list[str]:
    keys = []
    for path in samples.write_samples(folder):
        key = f"uploads/ingest/{path.name}"
        store.put_file(key, path)
        keys.append(key)
    return keys


def test_killed_bulk_run_resumes_to_the_same_output(weed: Weed, tmp_path: Path) -> None:
    values = s3_settings(weed.endpoint, f"ing-{uuid.uuid4().hex[:8]}")
    store = open_store(str(values["store_uri"]), Settings(**values))  # type: ignore[arg-type]
    store.ping()
    keys = upload_samples(store, tmp_path / "in")
    specs = plan_shards(keys, per_shard=3)
    tagger = DictionaryTagger(build_tree(small_records()))

    # a run that dies after its first shard...
    first = ShardIngestor(store, "bulk", tagger, "secret").process(specs[0])
    assert not first.skipped
    # ...a half-written shard of the second (files but no manifest) is invisible
    store.put_bytes(f"corpus/bulk/shards/{specs[1].shard_id}/records.parquet", b"partial")
    # ...and the re-run skips what is complete and finishes the rest
    rerun = ShardIngestor(store, "bulk", tagger, "secret")
    results = [rerun.process(s) for s in specs]
    assert results[0].skipped
    assert not any(r.skipped for r in results[1:])
    rows = [r for m in list_shards(store, "bulk") for r in read_records(store, m)]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))  # nothing twice
    assert len(list_shards(store, "bulk")) == len(specs)
    # de-identified before storage; the DICOM rendered beside its record
    assert not any("Vantreel" in r["text"] or "48213377" in r["text"] for r in rows)
    dicom = next(r for r in rows if r["source"] == "dicom")
    assert store.get_bytes(dicom["image_uris"][0]).startswith(b"\x89PNG")
    dropped = [
        r for m in list_shards(store, "bulk") for r in read_records(store, m, "dropped.parquet")
    ]
    # stored under keyed pseudonyms of their source ids, with the reason
    assert {r["id"]: r["dropped"].split(" of ")[0] for r in dropped} == {
        record_pseudonym("secret", "note-004"): "fewer than 3 words",
        record_pseudonym("secret", "corpus:3"): "line 3: not JSON with a 'text' field",
        record_pseudonym("secret", "note-003"): "near duplicate",
    }


@pytest.fixture(scope="module")
def platform(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    settings = server_settings(pki, str(tmp_path_factory.mktemp("store")))
    publish_small_tree(settings.store_uri)
    store = open_store(settings.store_uri)
    with running(settings, [BUILDERS["ingestion"](Resources(settings, store))]) as thread:
        deadline = time.monotonic() + 30
        while not thread.platform.is_serving() and time.monotonic() < deadline:
            thread.run(thread.platform.check_once())
            time.sleep(0.1)
        yield thread


def stub(platform: PlatformThread, pki: DevPki) -> ing_grpc.IngestionServiceStub:
    paths = pki.clients[ALLOWED]
    return ing_grpc.IngestionServiceStub(
        secure_channel(platform.target, pki.ca, paths.cert, paths.key)
    )


def documents() -> list[ing.IngestDocumentsRequest]:
    def doc(doc_id: str, fmt: int, content: bytes) -> ing.IngestDocumentsRequest:
        return ing.IngestDocumentsRequest(
            document=ing.Document(
                document_id=doc_id, source="ehr", format=fmt, content=content, patient_key="p-1"
            )
        )

    return [
        doc("n1", ing.DOCUMENT_FORMAT_TEXT, samples.NOTES["note-001.txt"].encode()),
        doc("n2", ing.DOCUMENT_FORMAT_TEXT, samples.NOTES["note-002.txt"].encode()),
        doc("b1", ing.DOCUMENT_FORMAT_FHIR_JSON, json.dumps(samples.fhir_bundle()).encode()),
        doc("h1", ing.DOCUMENT_FORMAT_HL7V2, samples.HL7.replace("\r", "\n").encode()),
        doc("bad-hl7", ing.DOCUMENT_FORMAT_HL7V2, b"MSH|garbage"),
        doc("", ing.DOCUMENT_FORMAT_TEXT, b"no id"),
        doc("short", ing.DOCUMENT_FORMAT_TEXT, b"ok"),
    ]


def test_stream_stores_good_records_and_explains_bad_ones(
    platform: PlatformThread, pki: DevPki
) -> None:
    reply = stub(platform, pki).IngestDocuments(iter(documents()), timeout=30)
    assert reply.accepted == 5  # two notes, two FHIR resources, one HL7 message
    reasons = {e.record_id: e.reason for e in reply.rejected}
    assert set(reasons) == {"bad-hl7", "", "short"}
    assert reasons[""] == "document_id is required"
    assert reasons["short"] == "fewer than 3 words"
    assert "HL7" in reasons["bad-hl7"] or "OBX" in reasons["bad-hl7"]
    assert len(reply.shard_uris) == 1
    # the same call again stores nothing new
    again = stub(platform, pki).IngestDocuments(iter(documents()), timeout=30)
    assert again.accepted == 0
    assert again.duplicates == len(documents())
    # one document re-sent inside another call is recognised as stored
    single = stub(platform, pki).IngestDocuments(iter(documents()[:1]), timeout=30)
    assert single.accepted == 0
    assert single.duplicates == 1


def test_empty_stream_is_invalid(platform: PlatformThread, pki: DevPki) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub(platform, pki).IngestDocuments(iter([]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_studies_coverage_and_gaps(platform: PlatformThread, pki: DevPki) -> None:
    client = stub(platform, pki)
    study = ing.Study(
        study_id="s1",
        source="pacs",
        text="Chest X-ray for fever and cough.",
        files=[
            ing.StudyFile(
                file_id="f1", format=ing.STUDY_FILE_FORMAT_DICOM, content=samples.dicom_bytes()
            )
        ],
    )
    bad = ing.Study(
        study_id="s2", files=[ing.StudyFile(format=ing.STUDY_FILE_FORMAT_PNG, content=b"x")]
    )
    reply = client.IngestStudies(
        iter([ing.IngestStudiesRequest(study=study), ing.IngestStudiesRequest(study=bad)]),
        timeout=30,
    )
    assert reply.accepted == 1
    assert [e.record_id for e in reply.rejected] == ["s2"]

    client.IngestDocuments(iter(documents()), timeout=30)
    coverage = client.GetCoverage(
        ing.GetCoverageRequest(node_id="MET:phenotype", depth=1), timeout=10
    )
    by_id = {n.node_id: n for n in coverage.nodes}
    assert by_id["HP:0001945"].mentions >= 2  # fever: note-001 and the study text
    assert by_id["MET:phenotype"].rolled_up_mentions >= by_id["HP:0001945"].mentions
    gaps = client.GetGapReport(ing.GetGapReportRequest(min_mentions=1, max_gaps=5), timeout=10)
    assert gaps.gaps[0].node.node_id == "ORPHA:558"
    assert gaps.gaps[0].node.rare
    assert gaps.gaps[0].path[0] == "MET:root"
    with pytest.raises(grpc.RpcError) as err:
        client.GetCoverage(ing.GetCoverageRequest(node_id="HP:9999999"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
