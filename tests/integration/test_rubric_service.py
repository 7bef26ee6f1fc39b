"""The rubric service over mTLS: both RPCs, bad input, rubric sets from the store, truthful health
with and without a judge, and the composite grader through a real predictor as the judge."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from medxiaohe.models.tiny import build_tiny
from medxiaohe.rubric.rubrics import Criterion, publish_rubric_set
from medxiaohe.storage import open_store
from medxiaohe_protos.rubric.v1 import rubric_pb2 as pb
from medxiaohe_protos.rubric.v1 import rubric_pb2_grpc as pb_grpc
from medxiaohe_services.model.process import model_server
from medxiaohe_services.rubric.servicer import NO_JUDGE
from medxiaohe_services.runtime.certs import DevPki
from medxiaohe_services.runtime.client import secure_channel
from medxiaohe_services.runtime.resources import Resources
from medxiaohe_services.runtime.services import BUILDERS
from tests.conftest import ALLOWED, publish_small_tree, server_settings
from tests.servers import PlatformThread, free_ports, running, serving

pytestmark = pytest.mark.integration

QUESTION = [pb.ChatMessage(role="user", content="My 4 year old has a fever of 39 C. What do I do?")]
ANSWER = (
    "You can give paracetamol dosed by weight and keep your child hydrated. Go to the emergency "
    "department if your child is lethargic or has a stiff neck. How long has the fever lasted?"
)
RUBRIC = [
    pb.RubricCriterion(
        criterion_id="er", criterion="Advises emergency care if lethargic", points=8
    ),
    pb.RubricCriterion(
        criterion="Recommends giving the child aspirin", points=-8, tags=["axis:accuracy"]
    ),
    pb.RubricCriterion(
        criterion="The response has no factually incorrect information.",
        points=5,
        tags=["level:cluster"],
    ),
]


FINDINGS = [
    pb.StudyFinding(text="right lower lobe opacity", laterality="right", site="lower lobe"),
    pb.StudyFinding(text="pleural effusion", assertion="absent"),
]


def stub_for(thread: PlatformThread, pki: DevPki) -> pb_grpc.RubricServiceStub:
    paths = pki.clients[ALLOWED]
    return pb_grpc.RubricServiceStub(secure_channel(thread.target, pki.ca, paths.cert, paths.key))


@pytest.fixture(scope="module")
def no_judge(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    settings = server_settings(pki, str(tmp_path_factory.mktemp("store")))
    publish_small_tree(settings.store_uri)  # the rules' tagger
    store = open_store(settings.store_uri)
    publish_rubric_set(store, "fever", [Criterion("Advises emergency care if lethargic", 8)])
    with running(settings, [BUILDERS["rubric"](Resources(settings, store))]) as thread:
        assert serving(thread)
        yield thread


def test_score_response_inline_and_by_set(no_judge: PlatformThread, pki: DevPki) -> None:
    stub = stub_for(no_judge, pki)
    reply = stub.ScoreResponse(
        pb.ScoreResponseRequest(
            conversation=QUESTION, response=ANSWER, rubric=RUBRIC, example_tags=["theme:fever"]
        ),
        timeout=60,
    )
    status = {v.criterion_id: v.status for v in reply.verdicts}
    assert status["er"] == pb.VERDICT_STATUS_MET
    assert list(status.values())[2] == pb.VERDICT_STATUS_ABSTAINED  # accuracy needs a judge
    assert reply.grader == "deterministic"
    assert reply.notice == NO_JUDGE
    assert list(status.values())[1] != pb.VERDICT_STATUS_MET  # aspirin is not recommended
    assert reply.score == 1.0  # 8 of 8 decided positive points
    assert reply.raw_score == 1.0
    assert reply.tag_scores["theme:fever"] == 1.0
    assert reply.rubric_set_id == "inline"
    assert len(reply.rubric_set_version) == 16  # the inline rubric's content hash
    decided = sum(s != pb.VERDICT_STATUS_ABSTAINED for s in status.values())
    assert reply.coverage == pytest.approx(decided / 3)
    # what the abstentions could make of it: the accuracy item (+5) not met and, if it was
    # left open too, the aspirin item (-8) met at worst; both the other way at best
    aspirin_open = list(status.values())[1] == pb.VERDICT_STATUS_ABSTAINED
    assert reply.score_min == pytest.approx((8 - 8 * aspirin_open) / 13)
    assert reply.score_max == pytest.approx(1.0)
    by_set = stub.ScoreResponse(
        pb.ScoreResponseRequest(conversation=QUESTION, response=ANSWER, rubric_set_id="fever"),
        timeout=60,
    )
    assert by_set.rubric_set_id == "fever"
    assert by_set.rubric_set_version


def test_a_report_is_scored_against_the_dynamic_rubric_of_its_findings(
    no_judge: PlatformThread, pki: DevPki
) -> None:
    """The findings make the rubric (no conversation needed); a report that places the opacity
    on the wrong side and claims the denied effusion scores below one that reads them right."""
    stub = stub_for(no_judge, pki)

    def score(report: str) -> pb.ScoreResponseResponse:
        request = pb.ScoreResponseRequest(response=report, findings=FINDINGS, prompt_id="s-1")
        return stub.ScoreResponse(request, timeout=60)

    right = score("Findings: Right lower lobe opacity. No pleural effusion.")
    wrong = score("Findings: Left lower lobe opacity. Small pleural effusion.")
    assert (right.grader, right.rubric_set_id, right.prompt_id) == ("dynamic", "dynamic", "s-1")
    assert right.rubric_set_version == wrong.rubric_set_version  # the same findings' rubric
    criteria = {v.criterion: v.status for v in right.verdicts}
    assert criteria["Mentions right lower lobe opacity"] == pb.VERDICT_STATUS_MET
    assert criteria["States no pleural effusion"] == pb.VERDICT_STATUS_MET
    assert all(v.grader == "dynamic" for v in right.verdicts)
    missed = {v.criterion: v.status for v in wrong.verdicts}
    assert missed["Does not claim pleural effusion"] == pb.VERDICT_STATUS_MET  # the penalty
    assert right.raw_score > wrong.raw_score


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        ({"rubric": []}, grpc.StatusCode.INVALID_ARGUMENT, "rubric inline"),
        (
            {"rubric": [pb.RubricCriterion(criterion="x", points=12)]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "rubric[0]: criterion points must be between -10 and +10",
        ),
        (
            {"rubric": [], "rubric_set_id": "no-such-set"},
            grpc.StatusCode.NOT_FOUND,
            "rubrics/no-such-set",
        ),
        ({"response": " "}, grpc.StatusCode.INVALID_ARGUMENT, "response is empty"),
        ({"grader": "oracle"}, grpc.StatusCode.INVALID_ARGUMENT, "grader must be one of"),
        (  # no silent fallback: without a judge, the model grader is refused
            {"grader": "model"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "needs a judge, and none is configured",
        ),
        ({"grader": "composite"}, grpc.StatusCode.FAILED_PRECONDITION, "needs a judge"),
        ({"grader": "dynamic"}, grpc.StatusCode.INVALID_ARGUMENT, "send no rubric"),
        ({"grader": "dynamic", "rubric": []}, grpc.StatusCode.INVALID_ARGUMENT, "findings"),
        ({"findings": FINDINGS}, grpc.StatusCode.INVALID_ARGUMENT, "send no rubric"),
        (
            {"findings": FINDINGS, "grader": "deterministic"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "by the 'dynamic' grader only",
        ),
        (
            {"rubric": [], "findings": [pb.StudyFinding(text="effusion", assertion="likely")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "findings[0]: a finding's assertion is one of",
        ),
        (
            {"rubric": [], "findings": [pb.StudyFinding(text="effusion")] * 101},
            grpc.StatusCode.INVALID_ARGUMENT,
            "at most 100 findings",
        ),
    ],
)
def test_bad_requests_say_what_is_wrong(
    no_judge: PlatformThread,
    pki: DevPki,
    change: dict[str, object],
    code: grpc.StatusCode,
    message: str,
) -> None:
    fields: dict[str, object] = {
        "conversation": QUESTION,
        "response": ANSWER,
        "rubric": RUBRIC,
        **change,
    }
    with pytest.raises(grpc.RpcError) as err:
        stub_for(no_judge, pki).ScoreResponse(pb.ScoreResponseRequest(**fields), timeout=30)  # type: ignore[arg-type]
    assert err.value.code() == code
    assert message in (err.value.details() or "")


def test_batch_streams_results_with_their_index(no_judge: PlatformThread, pki: DevPki) -> None:
    good = pb.ScoreResponseRequest(conversation=QUESTION, response=ANSWER, rubric=RUBRIC)
    bad = pb.ScoreResponseRequest(request_id="r-bad", conversation=QUESTION, response=ANSWER)
    requests = [pb.BatchScoreResponsesRequest(item=item) for item in (good, bad, good)]
    replies = list(stub_for(no_judge, pki).BatchScoreResponses(iter(requests), timeout=60))
    assert [r.index for r in replies] == [0, 1, 2]
    assert [r.WhichOneof("outcome") for r in replies] == ["result", "error", "result"]
    assert replies[1].error.record_id == "r-bad"
    assert replies[0].result.score == replies[2].result.score


class _Judge(http.server.ThreadingHTTPServer):
    """Something that answers HTTP where the judge is configured."""


def test_not_serving_while_the_judge_is_down(pki: DevPki, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = server_settings(
        pki, str(tmp_path / "store"), rubric_judge_url=f"http://127.0.0.1:{port}/openai/v1"
    )
    publish_small_tree(settings.store_uri)  # the rules' tagger
    store = open_store(settings.store_uri)
    with running(settings, [BUILDERS["rubric"](Resources(settings, store))]) as thread:
        assert not serving(thread, timeout=2)
        judge = _Judge(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)
        threading.Thread(target=judge.serve_forever, daemon=True).start()
        try:
            assert serving(thread)
        finally:
            judge.shutdown()


class _RefusingJudge(http.server.BaseHTTPRequestHandler):
    """A judge that refuses our credentials (401) until told to accept them (400: an empty
    chat is a bad request, after authentication)."""

    status = 401

    def do_POST(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_not_serving_while_the_judge_refuses_our_credentials(pki: DevPki, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = server_settings(
        pki, str(tmp_path / "store"), rubric_judge_url=f"http://127.0.0.1:{port}/openai/v1"
    )
    judge = _Judge(("127.0.0.1", port), _RefusingJudge)
    threading.Thread(target=judge.serve_forever, daemon=True).start()
    publish_small_tree(settings.store_uri)  # the rules' tagger
    store = open_store(settings.store_uri)
    try:
        with running(settings, [BUILDERS["rubric"](Resources(settings, store))]) as thread:
            assert not serving(thread, timeout=2)  # it answers, but refuses us: not ready
            _RefusingJudge.status = 400
            assert serving(thread)
    finally:
        judge.shutdown()


def test_a_model_loaded_for_reports_is_not_the_judge(
    pki: DevPki, tmp_path: Path, tiny_model: Path
) -> None:
    """`medxiaohe up` loads a model in the process for reports; the rubric service grades
    deterministically and says so, unless the model's card says it may judge."""
    import json
    import shutil

    from medxiaohe.models.folders import CARD
    from medxiaohe_services.runtime.models import judge_endpoint

    settings = server_settings(pki, str(tmp_path / "store"), local_model_uri=str(tiny_model))
    store = open_store(settings.store_uri)
    assert judge_endpoint(Resources(settings, store)) is None
    publish_small_tree(settings.store_uri)  # the rules' tagger
    with running(settings, [BUILDERS["rubric"](Resources(settings, store))]) as thread:
        assert serving(thread)
        reply = stub_for(thread, pki).ScoreResponse(
            pb.ScoreResponseRequest(conversation=QUESTION, response=ANSWER, rubric=RUBRIC),
            timeout=60,
        )
    assert reply.grader == "deterministic"
    assert reply.notice == NO_JUDGE
    judge = tmp_path / "judge"
    shutil.copytree(tiny_model, judge)
    (judge / CARD).write_text(json.dumps({"judge": True}))
    allowed = server_settings(pki, str(tmp_path / "store"), local_model_uri=str(judge))
    assert judge_endpoint(Resources(allowed, store)) is not None


def test_composite_grading_with_a_real_predictor_as_the_judge(pki: DevPki, tmp_path: Path) -> None:
    """The tiny model with random weights judges what the rules leave open: its verdicts parse
    (constrained to the verdict schema) and are marked as the model's."""
    folder = build_tiny("qwen2_vl", tmp_path / "judge", seed=5)
    with model_server(folder, "judge", log=tmp_path / "judge.log") as judge:
        settings = server_settings(
            pki,
            str(tmp_path / "store"),
            rubric_judge_url=f"{judge.url}/openai/v1",
            rubric_judge_model="judge",
            rubric_judge_api_key=judge.token,
        )
        publish_small_tree(settings.store_uri)  # the rules' tagger
        store = open_store(settings.store_uri)
        with running(settings, [BUILDERS["rubric"](Resources(settings, store))]) as thread:
            assert serving(thread)
            reply = stub_for(thread, pki).ScoreResponse(
                pb.ScoreResponseRequest(conversation=QUESTION, response=ANSWER, rubric=RUBRIC),
                timeout=120,
            )
    assert reply.grader == "composite"
    assert not reply.notice
    graders = [v.grader for v in reply.verdicts]
    assert graders[0] == "deterministic"
    assert graders[2] == "model"  # accuracy: left to the judge
    assert reply.verdicts[2].status in (pb.VERDICT_STATUS_MET, pb.VERDICT_STATUS_NOT_MET)
    assert reply.coverage == 1.0
