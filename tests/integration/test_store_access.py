"""One store credential per component, each limited to its prefixes: checked against a real S3
server (SeaweedFS) that holds the identities the access table renders."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from medxiaohe.common.errors import Unavailable
from medxiaohe.storage import ArtifactStore, publish
from medxiaohe.storage.access import COMPONENTS, iam_policy, seaweedfs_identities
from medxiaohe.storage.s3 import S3Store
from tests.servers import Weed, start_weed

pytestmark = pytest.mark.integration

BUCKET, ROOT = "platform", "medxiaohe"
PREFIXES = sorted(
    {p for a in COMPONENTS.values() for p in a.read} | {"uploads/bulk/", "quarantine/"}
)


def credentials(component: str) -> tuple[str, str]:
    return f"{component}-key", f"{component}-secret-0123456789"


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weed]:
    folder = tmp_path_factory.mktemp("scoped")
    config = folder / "s3.json"
    identities = seaweedfs_identities(BUCKET, ROOT, {c: credentials(c) for c in COMPONENTS})
    config.write_text(json.dumps(identities))
    weed = start_weed(folder / "data", s3_config=config)
    admin = weed.client()
    admin.make_bucket(BUCKET)
    try:
        yield weed
    finally:
        weed.stop()


def store_of(weed: Weed, component: str | None = None) -> ArtifactStore:
    """The component's view of the store (the administrator's without one)."""
    from tests.servers import S3_KEY, S3_SECRET

    key, secret = credentials(component) if component else (S3_KEY, S3_SECRET)
    return S3Store(weed.endpoint, BUCKET, ROOT, access_key=key, secret_key=secret, secure=False)


def allowed(action: Callable[[], object]) -> bool:
    """Whether the store lets ``action`` through (a refusal must be AccessDenied)."""
    try:
        action()
    except Unavailable as exc:
        if "AccessDenied" not in str(exc):
            raise
        return False
    return True


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_each_component_reaches_only_its_prefixes(scoped: Weed, component: str) -> None:
    admin = store_of(scoped)
    for prefix in PREFIXES:
        admin.put_bytes(f"{prefix}seed/object.bin", b"seed")
    store = store_of(scoped, component)
    store.ping()  # a scoped credential still proves the store and itself
    access = COMPONENTS[component]
    for prefix in PREFIXES:
        key = f"{prefix}seed/object.bin"
        can_read = allowed(lambda key=key: store.get_bytes(key))
        can_list = allowed(lambda prefix=prefix: list(store.list(prefix)))
        can_write = allowed(lambda prefix=prefix: store.put_bytes(f"{prefix}{component}.bin", b"x"))
        assert (can_read, can_list) == (prefix in access.read,) * 2, (component, prefix)
        assert can_write == (prefix in access.write), (component, prefix)


def test_training_cannot_reach_raw_data_and_services_cannot_publish_models(scoped: Weed) -> None:
    admin = store_of(scoped)
    admin.put_bytes("uploads/callers/ehr/note.txt", b"Patient Ada Lovelace")
    admin.put_bytes("quarantine/d/shards/s0/records.parquet", b"raw")
    publish(admin, "models/vlm", {"config.json": b"{}"})
    training = store_of(scoped, "training")
    for raw in ("uploads/callers/ehr/note.txt", "quarantine/d/shards/s0/records.parquet"):
        assert not allowed(lambda raw=raw: training.get_bytes(raw))
    assert allowed(lambda: publish(training, "models/vlm", {"config.json": b'{"v": 2}'}))
    for service in ("ingestion", "evidence", "report", "rubric", "model", "worker"):
        store = store_of(scoped, service)
        assert not allowed(lambda store=store: publish(store, "models/vlm", {"x.bin": b"x"}))
        assert not allowed(lambda store=store: store.put_bytes("models/vlm/_LATEST", b"evil"))
    assert admin.get_bytes("models/vlm/_LATEST") != b"evil"


def test_a_verified_write_stages_beside_its_target(scoped: Weed) -> None:
    """A write checked against its digest (every publish) goes through a partial key beside
    its target, which a credential scoped to that prefix may write; partial keys are never
    listed, and a wrong digest leaves nothing behind."""
    import hashlib

    from medxiaohe.common.errors import InvalidInput

    data = b"DICM" * 1000
    digest = hashlib.sha256(data).hexdigest()
    ingestion = store_of(scoped, "ingestion")
    key = "uploads/callers/ris/study.dcm"
    assert ingestion.put_stream(key, [data], expected_sha256=digest).sha256 == digest
    with pytest.raises(InvalidInput):
        ingestion.put_stream("uploads/callers/ris/other.dcm", [data], expected_sha256="0" * 64)
    assert [o.key for o in ingestion.list("uploads/callers/ris/")] == [key]
    admin_keys = [o.object_name for o in scoped.client().list_objects(BUCKET, recursive=True)]
    assert not any("/.partial/" in (k or "") and "/ris/" in (k or "") for k in admin_keys)


def test_policies_render_for_minio() -> None:
    policy = iam_policy("training", BUCKET, ROOT)
    resources = [r for s in policy["Statement"] for r in s["Resource"]]
    assert f"arn:aws:s3:::{BUCKET}/{ROOT}/runs/*" in resources
    assert not any("uploads" in r or "quarantine" in r for r in resources)
    writes = next(s for s in policy["Statement"] if "s3:PutObject" in s["Action"])
    assert f"arn:aws:s3:::{BUCKET}/{ROOT}/models/*" in writes["Resource"]
    report = iam_policy("report", BUCKET, ROOT)
    report_writes = next(s for s in report["Statement"] if "s3:PutObject" in s["Action"])
    assert not any("models/" in r for r in report_writes["Resource"])
