"""Chat generation over a loaded vision-language model, with OpenAI's message shapes: text and
``image_url`` parts (``data:`` URIs, or ``s3://`` through a fetch function), ``max_tokens``,
``temperature``, ``top_p``, ``stop``, ``seed``, streaming, and usage counts. The predictor and
the in-process model client both run this; bad requests raise InvalidInput with the reason."""

from __future__ import annotations

import base64
import binascii
import io
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.messages import content_text
from medxiaohe.models.devices import inputs_on
from medxiaohe.models.prompts import PromptEncoder
from medxiaohe.models.structured import Constraints
from medxiaohe.models.vlm import Vlm

FLAT_PATCHES = ("qwen2_vl", "qwen2_5_vl")  # image tensors that concatenate across requests

MAX_STOP = 4
ROLES = ("system", "user", "assistant", "tool")

Fetch = Callable[[str], bytes]  # s3:// URI -> bytes


@dataclass(frozen=True)
class ChatParams:
    max_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    json_schema: str | None = None  # the output must validate (compact schema text)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidInput("max_tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidInput("temperature must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInput("top_p must be in (0, 1]")
        if len(self.stop) > MAX_STOP or any(not s for s in self.stop):
            raise InvalidInput(f"stop takes at most {MAX_STOP} non-empty strings")


@dataclass(frozen=True)
class ChatLimits:
    """What one request may ask of the model (the predictor takes them from settings)."""

    max_images: int = 8
    max_image_pixels: int = 40_000_000
    max_tokens: int = 4096


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatResult:
    text: str
    finish_reason: str  # "stop" or "length"
    usage: Usage
    images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def decode_image(url: str, fetch: Fetch | None = None, max_pixels: int = 40_000_000) -> Any:
    """A ``data:image/...;base64,...`` or ``s3://`` image as an RGB PIL image; its size is
    checked from the header, before the pixels are decoded."""
    from PIL import Image, UnidentifiedImageError

    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header or not header[5:].startswith("image/"):
            raise InvalidInput("image data URIs must be data:image/<type>;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except binascii.Error:
            raise InvalidInput("image data URI is not valid base64") from None
    elif url.startswith("s3://"):
        if fetch is None:
            raise InvalidInput("s3:// images are not enabled on this endpoint")
        data = fetch(url)
    else:
        raise InvalidInput("image_url must be a data: URI or an s3:// URI")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise InvalidInput(f"image is larger than {max_pixels:,} pixels")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise InvalidInput("image_url does not hold a decodable image") from None


def to_template(
    messages: Sequence[dict[str, Any]],
    fetch: Fetch | None = None,
    limits: ChatLimits = ChatLimits(),
) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI messages -> chat-template messages, each image part replaced by an
    ``{"type": "image"}`` marker, and the images in the order they appear."""
    if not isinstance(messages, list | tuple):
        raise InvalidInput("messages must be a list")
    if not messages:
        raise InvalidInput("messages must not be empty")
    converted: list[dict[str, Any]] = []
    images: list[Any] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidInput(f"messages[{i}].role must be one of {ROLES}")
        content = message.get("content")
        if isinstance(content, str):
            converted.append({"role": role, "content": content})
            continue
        if not isinstance(content, list) or not content:
            raise InvalidInput(f"messages[{i}].content must be a string or a list of parts")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url" and isinstance(part.get("image_url"), dict):
                if len(images) >= limits.max_images:
                    raise InvalidInput(f"a request may carry at most {limits.max_images} images")
                url = str(part["image_url"].get("url", ""))
                images.append(decode_image(url, fetch, limits.max_image_pixels))
                parts.append({"type": "image"})
            else:
                raise InvalidInput(f"messages[{i}] has a part that is not text or image_url")
        converted.append({"role": role, "content": parts})
    return converted, images


@dataclass(eq=False)  # jobs are compared by identity
class _Job:
    inputs: Any
    params: ChatParams
    images: int
    cancel: threading.Event
    future: Future[ChatResult] = field(default_factory=Future)


class ChatModel:
    """One loaded model, safe to call from several threads; one generation runs at a time, on
    the model's own thread (one OpenMP team, kept warm), streams aside.

    Batching: greedy ``chat`` calls with equal parameters that arrive while a generation runs
    are generated together in the next one (left-padded, up to ``max_batch``). Nothing waits
    for a batch to fill, so a lone request pays no extra latency. Sampled requests (a seed
    must reproduce) and streams run alone. The model's thread starts with the first call;
    ``stop`` ends it (calls after that run on the caller's thread, one at a time)."""

    def __init__(
        self,
        vlm: Vlm,
        fetch: Fetch | None = None,
        max_batch: int = 8,
        limits: ChatLimits = ChatLimits(),
    ) -> None:
        self.vlm = vlm
        self.fetch = fetch
        self.max_batch = max_batch
        self.limits = limits
        self.max_context = vlm.max_context
        self._encode = PromptEncoder(vlm.processor, vlm.tokenizer)
        self._constraints: Constraints | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # None: stop batching
        self._backlog: list[_Job] = []
        self._batcher: threading.Thread | None = None
        self._stopped = False
        self._batching = threading.Lock()

    def _inputs(self, messages: Sequence[dict[str, Any]], params: ChatParams) -> tuple[Any, int]:
        if params.max_tokens > self.limits.max_tokens:
            raise InvalidInput(f"max_tokens may be at most {self.limits.max_tokens}")
        if params.json_schema is not None:
            self.constraints.processor(params.json_schema)  # a bad schema fails here, alone
        template, images = to_template(messages, self.fetch, self.limits)
        if images and not self.vlm.vision:
            raise InvalidInput(f"this model ({self.vlm.family}) reads text only, not images")
        if not self.vlm.vision:  # a text model's own template may know strings alone
            template = [m | {"content": content_text(m["content"])} for m in template]
        prompt = self.vlm.processor.apply_chat_template(
            template, add_generation_prompt=True, tokenize=False
        )
        inputs = inputs_on(self.vlm.model, self._encode(prompt, images))
        prompt_tokens = int(inputs["input_ids"].shape[1])
        if prompt_tokens + params.max_tokens > self.max_context:
            raise InvalidInput(
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({params.max_tokens}) "
                f"exceeds the model's context of {self.max_context} tokens"
            )
        return inputs, len(images)

    def _generate_kwargs(
        self, params: ChatParams, cancels: Sequence[threading.Event]
    ) -> dict[str, Any]:
        import torch
        from transformers import StoppingCriteriaList

        if params.seed is not None:
            torch.manual_seed(params.seed)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "stopping_criteria": StoppingCriteriaList([_Cancelled(cancels)]),
        }
        if params.json_schema is not None:
            from transformers import LogitsProcessorList

            processor = self.constraints.processor(params.json_schema)
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        if params.temperature > 0:
            kwargs |= {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p}
        else:
            kwargs["do_sample"] = False
        if params.stop:
            kwargs |= {"stop_strings": list(params.stop), "tokenizer": self.vlm.tokenizer}
        return kwargs

    @property
    def constraints(self) -> Constraints:
        """Compiled output schemas for this model (built on the first structured request)."""
        if self._constraints is None:
            self._constraints = Constraints(self.vlm.model, self.vlm.tokenizer)
        return self._constraints

    def _finish_reason(self, new: list[int], params: ChatParams, stopped: bool) -> str:
        if stopped or len(new) < params.max_tokens or (new and new[-1] in self._eos_ids()):
            return "stop"
        return "length"

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        params: ChatParams,
        cancel: threading.Event | None = None,
    ) -> ChatResult:
        """The completion; setting ``cancel`` (the client went away) stops the generation at
        its next token, unless other requests batched with it still want theirs."""
        return self.submit(messages, params, cancel).result()

    def submit(
        self,
        messages: Sequence[dict[str, Any]],
        params: ChatParams,
        cancel: threading.Event | None = None,
    ) -> Future[ChatResult]:
        """``chat`` without the wait: the prompt is prepared on the calling thread (a bad
        request raises here), the completion comes on the future. An event loop awaits it
        (``asyncio.wrap_future``) with no thread of its own blocked."""
        inputs, images = self._inputs(messages, params)
        job = _Job(inputs, params, images, cancel or threading.Event())
        if not self._enqueue(job):
            with self._lock:
                self._generate([job])
        return job.future

    def _alone(self, job: _Job) -> bool:
        """Whether ``job`` is generated in a batch of its own: sampled (a seed must
        reproduce), or with images whose tensors do not join across requests."""
        return job.params.temperature > 0 or self.max_batch < 2 or not self._batchable(job.images)

    def _batchable(self, images: int) -> bool:
        """Text batches in every family; images where the processor's image tensors join
        along their first dimension (Qwen-VL's flat patches), else they run alone."""
        return images == 0 or self.vlm.family in FLAT_PATCHES

    def _enqueue(self, job: _Job) -> bool:
        """Hand ``job`` to the model's thread (started on first use); False once stopped."""
        with self._batching:
            if self._stopped:
                return False
            if self._batcher is None:
                self._batcher = threading.Thread(
                    target=self._batches, name="chat-batches", daemon=True
                )
                self._batcher.start()
            self._queue.put(job)
            return True

    @property
    def batching(self) -> bool:
        """Whether the model's thread runs."""
        return self._batcher is not None and self._batcher.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """End the model's thread once the jobs already queued are done."""
        with self._batching:
            self._stopped = True
            batcher = self._batcher
            self._queue.put(None)
        if batcher is not None:
            batcher.join(timeout)

    def _batches(self) -> None:
        """Until stopped: the oldest waiting job, and unless it runs alone every waiting job
        with its parameters that may be batched (up to max_batch), go into one generation; the
        others wait for the next."""
        stopping = False
        while not (stopping and not self._backlog):
            arrived: list[_Job | None] = [*self._backlog] or [self._queue.get()]
            while True:  # everything that arrived meanwhile
                try:
                    arrived.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = stopping or None in arrived
            waiting = [j for j in arrived if j is not None]
            if not waiting:
                continue
            first, batch = waiting[0], waiting[:1]
            if not self._alone(first):
                alike = [j for j in waiting if j.params == first.params and not self._alone(j)]
                batch = alike[: self.max_batch]
            self._backlog = [j for j in waiting if j not in batch]
            with self._lock:
                self._generate(batch)

    def _generate(self, jobs: list[_Job]) -> None:
        """One generate call for jobs with equal parameters; results or the error on each
        job's future (a future cancelled while it waited drops its job)."""
        import torch

        jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        try:
            merged, lengths = _collate([j.inputs for j in jobs], self.vlm.tokenizer.pad_token_id)
            params = jobs[0].params
            with torch.inference_mode():  # lighter than generate's own no_grad
                kwargs = self._generate_kwargs(params, [j.cancel for j in jobs])
                output = self.vlm.model.generate(**merged, **kwargs)
            width = int(merged["input_ids"].shape[1])
            results = []
            for i, job in enumerate(jobs):
                new = _until_eos(output[i, width:].tolist(), self._eos_ids())
                text = self.vlm.tokenizer.decode(new, skip_special_tokens=True)
                text, stopped = _cut_at_stop(text, params.stop)
                results.append(
                    ChatResult(
                        text=text,
                        finish_reason=self._finish_reason(new, params, stopped),
                        usage=Usage(lengths[i], len(new)),
                        images=job.images,
                        extra={"batch": len(jobs)},
                    )
                )
        except Exception as exc:  # every caller of the batch sees it
            for job in jobs:
                job.future.set_exception(exc)
        else:
            for job, result in zip(jobs, results, strict=True):
                job.future.set_result(result)

    def _eos_ids(self) -> set[int]:
        eos = self.vlm.model.generation_config.eos_token_id
        return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        params: ChatParams,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | ChatResult]:
        """Text pieces as they are generated, then the ChatResult (its text is the whole).
        Closing the iterator early (the client went away) stops the generation too."""
        from transformers import TextIteratorStreamer

        inputs, images = self._inputs(messages, params)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(
            self.vlm.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        result: dict[str, Any] = {}
        cancel = cancel or threading.Event()

        def run() -> None:
            import torch

            with self._lock:
                try:
                    with torch.inference_mode():
                        result["output"] = self.vlm.model.generate(
                            **inputs, **self._generate_kwargs(params, [cancel]), streamer=streamer
                        )
                except Exception as exc:  # surfaced to the reader below
                    result["error"] = exc
                    streamer.end()  # type: ignore[no-untyped-call]

        thread = threading.Thread(target=run, name="generate", daemon=True)
        thread.start()
        sent = ""
        try:
            for piece in streamer:
                text, stopped = _cut_at_stop(sent + piece, params.stop)
                if text[len(sent) :]:
                    yield text[len(sent) :]
                sent = text
                if stopped:
                    break
        finally:  # also when the reader closes us early: the generation stops, the lock frees
            if thread.is_alive():
                cancel.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        new = result["output"][0, prompt_tokens:].tolist()
        full, stopped = _cut_at_stop(
            self.vlm.tokenizer.decode(new, skip_special_tokens=True), params.stop
        )
        yield ChatResult(
            text=full,
            finish_reason=self._finish_reason(new, params, stopped),
            usage=Usage(prompt_tokens, len(new)),
            images=images,
        )


class _Cancelled:
    """A stopping criterion: stop once every request of the batch has been cancelled."""

    def __init__(self, cancels: Sequence[threading.Event]) -> None:
        self.cancels = cancels

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        stop = all(c.is_set() for c in self.cancels)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def _collate(inputs: list[Any], pad_id: int) -> tuple[dict[str, Any], list[int]]:
    """Processed single requests as one left-padded batch, and each request's prompt length:
    the per-token tensors (ids, attention mask, token types) padded on the left, the image
    tensors concatenated in order."""
    import torch

    if len(inputs) == 1:
        return dict(inputs[0]), [int(inputs[0]["input_ids"].shape[1])]
    lengths = [int(x["input_ids"].shape[1]) for x in inputs]
    width = max(lengths)
    merged: dict[str, Any] = {}
    for key in {k for x in inputs for k in x}:
        parts = [x[key] for x in inputs if key in x]
        if len(parts) == len(inputs) and all(
            p.dim() == 2 and p.shape[1] == n for p, n in zip(parts, lengths, strict=True)
        ):
            fill = pad_id if key == "input_ids" else 0
            padded = torch.full(
                (len(inputs), width), fill, dtype=parts[0].dtype, device=parts[0].device
            )
            for i, (p, n) in enumerate(zip(parts, lengths, strict=True)):
                padded[i, width - n :] = p[0]
            merged[key] = padded
        else:
            merged[key] = torch.cat(parts)
    return merged, lengths


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """A row's new tokens up to and including its first end token (the rest is padding)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string (OpenAI leaves the stop string out)."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
