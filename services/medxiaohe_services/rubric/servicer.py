"""RubricService adapter: requests to the rubric library's graders and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from medxiaohe.common.errors import InvalidInput, NotConfigured, NotFound
from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.rubric.dynamic import NAME as DYNAMIC
from medxiaohe.rubric.dynamic import FindingGrader, rubric_for
from medxiaohe.rubric.model_grader import CompositeGrader, ModelGrader
from medxiaohe.rubric.rubrics import Rubric, load_rubric_set
from medxiaohe.rubric.scoring import score_example
from medxiaohe.storage import ArtifactStore
from medxiaohe_protos.common.v1.common_pb2 import RecordError
from medxiaohe_protos.rubric.v1 import rubric_pb2 as pb
from medxiaohe_protos.rubric.v1 import rubric_pb2_grpc as pb_grpc
from medxiaohe_services.rubric import convert

GRADERS = ("deterministic", "model", "composite", DYNAMIC)
NO_JUDGE = "no judge is configured: graded with the deterministic grader alone"


@dataclass
class Graders:
    deterministic: DeterministicGrader
    model: ModelGrader | None  # None without a judge
    dynamic: FindingGrader = field(default_factory=FindingGrader)  # a report's own findings

    def pick(
        self, asked: str
    ) -> tuple[str, DeterministicGrader | ModelGrader | CompositeGrader, str]:
        """(name, grader, notice) for what the caller asked ("" = the best available). Without
        a judge every answer is deterministic and says so; asking for the model is refused,
        never silently answered by another grader."""
        if asked and asked not in GRADERS:
            raise InvalidInput(f"grader must be one of {', '.join(GRADERS)}")
        if self.model is None:
            if asked in ("model", "composite"):
                raise NotConfigured(
                    f"grader {asked!r} needs a judge, and none is configured "
                    "(MEDXIAOHE_RUBRIC_JUDGE_URL): ask for the deterministic grader"
                )
            return "deterministic", self.deterministic, NO_JUDGE
        if asked == "deterministic":
            return asked, self.deterministic, ""
        if asked == "model":
            return asked, self.model, ""
        return "composite", CompositeGrader(self.deterministic, self.model), ""


class RubricServicer(pb_grpc.RubricServiceServicer):
    def __init__(self, store: ArtifactStore, graders: Graders) -> None:
        self.store = store
        self.graders = graders

    async def ScoreResponse(
        self, request: pb.ScoreResponseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScoreResponseResponse:
        return await asyncio.to_thread(self._score, request)

    async def BatchScoreResponses(
        self,
        request_iterator: AsyncIterator[pb.BatchScoreResponsesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.BatchScoreResponsesResponse]:
        index = 0
        async for message in request_iterator:
            try:
                result = await asyncio.to_thread(self._score, message.item)
                yield pb.BatchScoreResponsesResponse(index=index, result=result)
            except (InvalidInput, NotFound) as exc:  # this item's fault: the batch goes on
                error = RecordError(
                    record_id=message.item.request_id or str(index), reason=str(exc)
                )
                yield pb.BatchScoreResponsesResponse(index=index, error=error)
            index += 1
        if index == 0:
            raise InvalidInput("the stream carried no responses to score")

    def _score(self, request: pb.ScoreResponseRequest) -> pb.ScoreResponseResponse:
        if request.grader == DYNAMIC or (request.findings and not request.grader):
            return self._score_report(request)
        if request.findings:
            raise InvalidInput(f"findings are graded by the {DYNAMIC!r} grader only")
        conversation = convert.conversation(request)
        completion = convert.completion(request)
        rubric = self._rubric(request)
        name, grader, notice = self.graders.pick(request.grader)
        verdicts = grader.grade(conversation, completion, rubric)
        score = score_example(rubric, verdicts, request.example_tags)
        return convert.score_to_proto(score, rubric, name, notice, request.prompt_id)

    def _score_report(self, request: pb.ScoreResponseRequest) -> pb.ScoreResponseResponse:
        """A report against the dynamic rubric of its study's findings."""
        convert.conversation(request, required=False)  # checked, not needed
        completion = convert.completion(request)
        dynamic = rubric_for(convert.findings(request), self.graders.dynamic.verifier)
        verdicts = self.graders.dynamic.grade(completion, dynamic)
        score = score_example(dynamic.rubric, verdicts, request.example_tags)
        return convert.score_to_proto(score, dynamic.rubric, DYNAMIC, "", request.prompt_id)

    def _rubric(self, request: pb.ScoreResponseRequest) -> Rubric:
        if request.rubric_set_id:
            if request.rubric:
                raise InvalidInput("send a rubric inline or name a rubric_set_id, not both")
            return load_rubric_set(self.store, request.rubric_set_id, request.rubric_set_version)
        return convert.inline_rubric(request)
