"""The model grader: HealthBench's grading pattern (the conversation with the response as its last
turn, one rubric item, a JSON verdict ``{"explanation", "criteria_met"}``) through the model
client, so any OpenAI-compatible judge serves. The verdict is constrained by a JSON schema, so it
parses even from a model with random weights; transport failures are retried by the client and
then raised (Unavailable) rather than scored; a request the judge refuses (longer than its
context) is an abstention. Verdicts are cached by conversation, response,
criterion and judge; criteria are graded concurrently, with a bound.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from medxiaohe.common.errors import InvalidInput
from medxiaohe.models.chat import ChatParams
from medxiaohe.models.client import ModelClient
from medxiaohe.rubric.deterministic import DeterministicGrader
from medxiaohe.rubric.rubrics import Criterion
from medxiaohe.rubric.scoring import Grader, Verdict

NAME = "model"
# What one request may cost the judge: calls, the characters of one grading prompt, and of all
# of its prompts together (one prompt repeats the conversation for every criterion).
MAX_CALLS = 64
MAX_PROMPT_CHARS = 200_000
MAX_REQUEST_CHARS = 4_000_000
# The explanation is bounded so that the verdict always closes within the token budget: at
# most 4 bytes (byte-level tokens) per character, plus the JSON around it.
MAX_EXPLANATION = 160
MAX_TOKENS = 4 * MAX_EXPLANATION + 64
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "maxLength": MAX_EXPLANATION},
        "criteria_met": {"type": "boolean"},
    },
    "required": ["explanation", "criteria_met"],
    "additionalProperties": False,
}
PROMPT = """You grade one turn of a health conversation against one rubric item.

# Conversation (the last assistant turn is the response to grade)
{conversation}

# Rubric item
[{points}] {criterion}

# How to answer
Return a JSON object with "explanation" (why the response does or does not meet the item) and
"criteria_met" (true or false).
- An item with several requirements is met only when all of them are; examples introduced by
  "such as", "for example" or "including" are illustrations, not requirements.
- Judge whether the response does what the item describes, not whether that is good: an item
  with negative points describes an undesired behaviour, and is met when the response shows it.
Return only the JSON object."""


def grading_prompt(
    conversation: Sequence[dict[str, str]], completion: str, criterion: Criterion
) -> str:
    turns = [*conversation, {"role": "assistant", "content": completion}]
    text = "\n\n".join(f"{m['role']}: {m['content']}" for m in turns)
    return PROMPT.format(conversation=text, points=criterion.points, criterion=criterion.text)


def check_budget(
    conversation: Sequence[dict[str, str]], completion: str, criteria: Sequence[Criterion]
) -> None:
    """InvalidInput, before any call, when grading would send the judge more than a request
    may: a rubric of 200 items over a 10 MB conversation is 200 calls and 2 GB."""
    if len(criteria) > MAX_CALLS:
        raise InvalidInput(
            f"the judge grades at most {MAX_CALLS} criteria per request ({len(criteria)} "
            "asked): split the rubric, or grade deterministically"
        )
    shared = len(PROMPT) + len(completion) + sum(len(m["content"]) + 16 for m in conversation)
    longest = shared + max((len(c.text) for c in criteria), default=0)
    total = len(criteria) * shared + sum(len(c.text) for c in criteria)
    if longest > MAX_PROMPT_CHARS or total > MAX_REQUEST_CHARS:
        raise InvalidInput(
            f"the judge takes at most {MAX_PROMPT_CHARS:,} characters per criterion and "
            f"{MAX_REQUEST_CHARS:,} per request (this one: {longest:,} and {total:,})"
        )


class ModelGrader(Grader):
    name = NAME

    def __init__(
        self,
        client: ModelClient,
        judge: str = "",
        *,
        concurrency: int = 4,
        max_tokens: int = MAX_TOKENS,
        cache_size: int = 10_000,
    ) -> None:
        self.client = client
        self.judge = judge  # names the judge in cache keys and explanations
        self.concurrency = concurrency
        self.params = ChatParams(
            max_tokens=max_tokens, json_schema=json.dumps(VERDICT_SCHEMA, sort_keys=True)
        )
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def grade_criteria(
        self,
        conversation: Sequence[dict[str, str]],
        completion: str,
        criteria: Sequence[Criterion],
    ) -> list[Verdict]:
        check_budget(conversation, completion, criteria)

        def one(criterion: Criterion) -> Verdict:
            return self.grade_one(conversation, completion, criterion)

        if self.concurrency <= 1 or len(criteria) <= 1:
            return [one(c) for c in criteria]
        with ThreadPoolExecutor(min(self.concurrency, len(criteria))) as pool:
            return list(pool.map(one, criteria))

    def grade_one(
        self, conversation: Sequence[dict[str, str]], completion: str, criterion: Criterion
    ) -> Verdict:
        key = self._key(conversation, completion, criterion)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return _as(self._cache[key], criterion)
        prompt = grading_prompt(conversation, completion, criterion)
        try:
            reply = self.client.chat([{"role": "user", "content": prompt}], params=self.params)
        except InvalidInput as exc:  # e.g. longer than the judge's context: it cannot decide
            return Verdict(criterion.id, None, f"abstained: the judge refused: {exc}"[:300], NAME)
        verdict = _parse(reply.text, criterion)
        if verdict.met is not None:  # an unparsed answer is not remembered: a retry may parse
            with self._lock:
                self._cache[key] = verdict
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return verdict

    def _key(
        self, conversation: Sequence[dict[str, str]], completion: str, criterion: Criterion
    ) -> str:
        body = json.dumps(
            [list(conversation), completion, criterion.text, criterion.points, self.judge],
            sort_keys=True,
        )
        return hashlib.sha256(body.encode()).hexdigest()


def _parse(text: str, criterion: Criterion) -> Verdict:
    try:
        data = json.loads(text)
        met = data["criteria_met"]
        explanation = str(data.get("explanation", ""))
    except (ValueError, KeyError, TypeError):
        return Verdict(criterion.id, None, "abstained: the judge's answer did not parse", NAME)
    if not isinstance(met, bool):
        return Verdict(criterion.id, None, "abstained: criteria_met was not a boolean", NAME)
    return Verdict(criterion.id, met, explanation[:MAX_EXPLANATION], NAME)


def _as(verdict: Verdict, criterion: Criterion) -> Verdict:
    """A cached verdict under this rubric's id for the same criterion."""
    return Verdict(criterion.id, verdict.met, verdict.explanation, verdict.grader)


class CompositeGrader(Grader):
    """The deterministic grader where it decides, the model grader for the rest; each verdict
    names the grader that decided it."""

    name = "composite"

    def __init__(self, deterministic: DeterministicGrader, model: ModelGrader) -> None:
        self.deterministic = deterministic
        self.model = model

    def grade_criteria(
        self,
        conversation: Sequence[dict[str, str]],
        completion: str,
        criteria: Sequence[Criterion],
    ) -> list[Verdict]:
        verdicts = self.deterministic.grade_criteria(conversation, completion, criteria)
        open_ = [i for i, v in enumerate(verdicts) if v.met is None]
        judged = self.model.grade_criteria(conversation, completion, [criteria[i] for i in open_])
        for i, verdict in zip(open_, judged, strict=True):
            verdicts[i] = verdict
        return verdicts
