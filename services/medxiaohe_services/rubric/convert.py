"""Protobuf <-> domain objects for the rubric service."""

from __future__ import annotations

from medxiaohe import __version__
from medxiaohe.common.errors import InvalidInput
from medxiaohe.rubric.dynamic import Finding
from medxiaohe.rubric.rubrics import Criterion, Rubric, content_version
from medxiaohe.rubric.scoring import ExampleScore
from medxiaohe_protos.common.v1 import common_pb2
from medxiaohe_protos.rubric.v1 import rubric_pb2 as pb

ROLES = ("system", "user", "assistant")
MAX_TURNS = 100
MAX_CHARS = 100_000
MAX_FINDINGS = 100
MAX_FINDING_CHARS = 1000
STATUS = {
    True: pb.VERDICT_STATUS_MET,
    False: pb.VERDICT_STATUS_NOT_MET,
    None: pb.VERDICT_STATUS_ABSTAINED,
}


def conversation(request: pb.ScoreResponseRequest, required: bool = True) -> list[dict[str, str]]:
    if required and not request.conversation:
        raise InvalidInput("conversation needs at least one message")
    if len(request.conversation) > MAX_TURNS:
        raise InvalidInput(f"conversation may have at most {MAX_TURNS} messages")
    turns = []
    for i, message in enumerate(request.conversation):
        if message.role not in ROLES:
            raise InvalidInput(f"conversation[{i}].role must be one of {', '.join(ROLES)}")
        if len(message.content) > MAX_CHARS:
            raise InvalidInput(f"conversation[{i}] is longer than {MAX_CHARS} characters")
        turns.append({"role": message.role, "content": message.content})
    return turns


def completion(request: pb.ScoreResponseRequest) -> str:
    if not request.response.strip():
        raise InvalidInput("response is empty")
    if len(request.response) > MAX_CHARS:
        raise InvalidInput(f"response is longer than {MAX_CHARS} characters")
    return request.response


def inline_rubric(request: pb.ScoreResponseRequest) -> Rubric:
    """The inline rubric; its checks (points -10..+10, a positive criterion) say what is wrong."""
    if not request.rubric:
        raise InvalidInput("send a rubric inline or name a rubric_set_id")
    criteria = []
    for i, item in enumerate(request.rubric):
        try:
            criteria.append(
                Criterion(item.criterion, item.points, tuple(item.tags), item.criterion_id)
            )
        except InvalidInput as exc:
            raise InvalidInput(f"rubric[{i}]: {exc}") from None
    # an inline rubric is versioned by its content, so the score still names what produced it
    return Rubric(tuple(criteria), set_id="inline", version=content_version(criteria))


def findings(request: pb.ScoreResponseRequest) -> list[Finding]:
    """The study findings a dynamic rubric is made of."""
    if request.rubric or request.rubric_set_id:
        raise InvalidInput("the dynamic grader makes its rubric from the findings: send no rubric")
    if not request.findings:
        raise InvalidInput("the dynamic grader needs the study's findings")
    if len(request.findings) > MAX_FINDINGS:
        raise InvalidInput(f"at most {MAX_FINDINGS} findings")
    out = []
    for i, item in enumerate(request.findings):
        if len(item.text) > MAX_FINDING_CHARS:
            raise InvalidInput(f"findings[{i}].text is longer than {MAX_FINDING_CHARS} characters")
        try:
            out.append(Finding(item.text, item.assertion or "present", item.laterality, item.site))
        except InvalidInput as exc:
            raise InvalidInput(f"findings[{i}]: {exc}") from None
    return out


def score_to_proto(
    score: ExampleScore, rubric: Rubric, grader: str, notice: str, prompt_id: str
) -> pb.ScoreResponseResponse:
    return pb.ScoreResponseResponse(
        score=score.score,
        raw_score=score.raw,
        achieved_points=score.achieved,
        possible_points=score.possible,
        verdicts=[
            pb.CriterionVerdict(
                criterion_id=c.id,
                criterion=c.text,
                met=bool(v.met),
                status=STATUS[v.met],
                points=c.points,
                explanation=v.explanation,
                grader=v.grader,
            )
            for c, v in zip(rubric.criteria, score.verdicts, strict=True)
        ],
        tag_scores=dict(score.tag_scores),
        rubric_set_id=rubric.set_id,
        rubric_set_version=rubric.version,
        grader=grader,
        coverage=score.coverage,
        score_min=score.score_min,
        score_max=score.score_max,
        notice=notice,
        prompt_id=prompt_id,
        provenance=common_pb2.Provenance(code_version=__version__),
    )
