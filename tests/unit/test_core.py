"""Library core: logging that cannot leak payloads, settings from the environment, the taxonomy."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from medxiaohe.common import errors
from medxiaohe.common.logs import JsonFormatter
from medxiaohe.common.settings import Settings
from medxiaohe_protos.ingestion.v1 import ingestion_pb2 as ing
from medxiaohe_services.runtime.interceptors import CODES, record_ids

PHI = "John Smith, DOB 1950-01-01, MRN 1234567"


def format_record(
    msg: str, *args: object, exc: bool = False, logger: str = "medxiaohe.t", **extra: object
) -> dict[str, object]:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, args, None)
    if exc:
        try:
            raise ValueError(PHI)
        except ValueError:
            record.exc_info = sys.exc_info()
    record.__dict__.update(extra)
    line: dict[str, object] = json.loads(JsonFormatter().format(record))
    return line


def test_log_lines_keep_the_template_not_the_arguments() -> None:
    line = format_record("tagging %s", PHI)
    assert line["msg"] == "tagging %s"
    assert PHI not in json.dumps(line)


@pytest.mark.parametrize(
    "logger", ["medxiaohe", "medxiaohe.server", "medxiaohe_services.x", "medxiaohe_training.sft"]
)
def test_the_projects_own_loggers_write_template_and_safe_fields(logger: str) -> None:
    line = format_record("not loaded", logger=logger, reason="ImportError", text=PHI)
    assert (line["msg"], line["reason"]) == ("not loaded", "ImportError")
    assert "text" not in line


def test_third_party_lines_carry_logger_and_level_only() -> None:
    # kserve, pydicom, celery and uvicorn often format values into the message themselves
    for logger in ("kserve", "medxiaohe_lookalike"):
        line = format_record(f"Registering model for {PHI}", logger=logger, rpc="x", code="OK")
        assert line == {"ts": line["ts"], "level": "info", "logger": logger}


def test_warnings_are_captured_without_their_text(capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from medxiaohe.common.logs import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("INFO")
    try:
        warnings.warn(f"value {PHI} out of range", UserWarning, stacklevel=1)
    finally:  # leave logging as the test run had it
        logging.captureWarnings(False)
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert '"logger":"py.warnings"' in err
    assert PHI not in err


def test_deepspeeds_own_stdout_handler_is_bypassed(capsys: pytest.CaptureFixture[str]) -> None:
    """DeepSpeed prints to stdout from a handler it adds on import: a command's JSON on stdout
    must stay the only thing there."""
    from medxiaohe.common.logs import setup_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    deepspeed = logging.getLogger("DeepSpeed")
    setup_logging("INFO")
    own = logging.StreamHandler(sys.stdout)  # what DeepSpeed's import does, after
    deepspeed.addHandler(own)
    deepspeed.propagate = False
    try:
        deepspeed.warning("Setting accelerator to CPU.")
    finally:
        deepspeed.removeHandler(own)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    out, err = capsys.readouterr()
    assert out == ""
    assert '"logger":"DeepSpeed"' in err


def test_log_lines_drop_unknown_fields_and_exception_messages() -> None:
    line = format_record("failed", exc=True, text=PHI, rpc="TagEntities", record_ids=["d1"])
    assert line["rpc"] == "TagEntities"
    assert line["record_ids"] == ["d1"]
    assert "text" not in line
    assert line["exc_type"] == "ValueError"
    assert PHI not in json.dumps(line)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDXIAOHE_GRPC_PORT", "6000")
    monkeypatch.setenv("MEDXIAOHE_REPORT__ALLOW", '{"ris": ["GenerateReport"]}')
    monkeypatch.setenv("MEDXIAOHE_S3_SECRET_KEY", "hunter2")
    settings = Settings.from_env()
    assert settings.grpc_port == 6000
    assert settings.service("report").allow == {"ris": ["GenerateReport"]}
    assert "hunter2" not in repr(settings)
    assert Settings.from_env(grpc_port=7000).grpc_port == 7000  # explicit overrides win


def test_unknown_and_invalid_settings_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDXIAOHE_GRPC_PORT", "99999")
    with pytest.raises(ValueError, match="grpc_port"):
        Settings.from_env()
    with pytest.raises(ValueError, match="extra"):
        Settings(ingestion={"allow": {}, "alow": {}})  # type: ignore[arg-type]


def test_every_error_class_maps_to_a_status_code() -> None:
    classes = set(errors.MedxError.__subclasses__())
    assert classes == set(CODES)
    assert len({CODES[c] for c in classes}) >= 5


def test_audit_record_ids_are_ids_only() -> None:
    request = ing.IngestDocumentsRequest(
        document=ing.Document(
            document_id="doc-7", content=PHI.encode(), patient_key="pk-1", metadata={"name": PHI}
        ),
    )
    assert record_ids(request) == ["doc-7"]


def test_plaintext_backends_beyond_this_machine_are_refused() -> None:
    remote = {"store_uri": "s3://b/p", "s3_endpoint": "minio.minio:9000", "s3_secure": False}
    with pytest.raises(errors.InvalidInput, match=r"object store at minio\.minio"):
        Settings(**remote).check_transport()  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidInput, match=r"broker at redis\.infra") as refused:
        Settings(broker_url="redis://:hunter2@redis.infra:6379/0").check_transport()
    assert "hunter2" not in str(refused.value)
    Settings(broker_url="rediss://redis.infra:6380/0").check_transport()
    Settings(broker_url="redis://127.0.0.1:6379/0").check_transport()
    Settings(**remote, allow_plaintext_backends=True).check_transport()  # type: ignore[arg-type]


def test_a_failing_generation_answers_500_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The OpenAI route's one mapping of an unexpected error: a 500 that says where to look,
    and a log line with the exception's type, never its text (which may quote the request)."""
    from types import SimpleNamespace

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from medxiaohe_services.model.openai import ROUTE, add_routes

    async def complete(*args: object) -> None:
        raise RuntimeError(PHI)

    predictor = SimpleNamespace(name="m", ready=True, complete=complete, placement={})
    app = FastAPI()
    add_routes(app, predictor)  # type: ignore[arg-type]
    client = TestClient(app)
    with caplog.at_level(logging.ERROR):
        reply = client.post(ROUTE, json={"messages": [{"role": "user", "content": PHI}]})
    assert reply.status_code == 500
    assert reply.json()["error"]["message"] == "internal error; see the server log"
    assert PHI not in reply.text
    (record,) = [r for r in caplog.records if r.name == "medxiaohe.predictor"]
    line = json.loads(JsonFormatter().format(record))
    assert line["exc_type"] == "RuntimeError"
    assert PHI not in json.dumps(line)


def test_two_writers_of_other_content_under_one_version_never_mix(tmp_path: Path) -> None:
    """Writers racing on one version with different files: one wins whole, the others get
    Conflict; the version's files always match its manifest. (Before: both saw no manifest,
    both wrote, and the manifest named the other writer's file: half-written.)"""
    import hashlib
    import json
    import threading

    from medxiaohe.common.errors import Conflict
    from medxiaohe.storage import open_store
    from medxiaohe.storage.artifacts import MANIFEST, publish

    store = open_store(str(tmp_path / "store"))
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        try:
            publish(store, "reports", {"report.json": f"report {n}".encode() * 1000},
                    version="r-1", move_latest=False)  # fmt: skip
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    manifest = json.loads(store.get_bytes(f"reports/r-1/{MANIFEST}"))
    data = store.get_bytes("reports/r-1/report.json")
    assert hashlib.sha256(data).hexdigest() == manifest["files"]["report.json"]["sha256"]
    # the same content again is a no-op, not a conflict (a retry)
    publish(store, "reports", {"report.json": data}, version="r-1", move_latest=False)
