"""``VlmPredictor``: loads a vision-language folder (local or from the store) and answers the
Open Inference Protocol (REST v2 and gRPC v2) with generated text. Ready only after load.

v2 request: one BYTES input ``messages`` holding the OpenAI messages as JSON (or ``text``, a
plain user prompt); generation parameters (max_tokens, temperature, top_p, seed, stop) as
request parameters. v2 response: one BYTES output ``text``, usage in the parameters."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from typing import Any

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve import errors as kserve_errors

from medxiaohe.common.errors import InvalidInput, MedxError
from medxiaohe.common.settings import Settings
from medxiaohe.models.chat import ChatLimits, ChatModel, ChatParams, ChatResult
from medxiaohe.models.folders import model_folder
from medxiaohe.models.structured import schema_of
from medxiaohe.models.vlm import load_vlm
from medxiaohe.storage import open_store

log = logging.getLogger(__name__)

PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop")
INLINE_PROMPT_CHARS = 4096  # a text prompt up to this is prepared on the event loop


def params_from(values: dict[str, Any]) -> ChatParams:
    """ChatParams from request fields, each checked for its type; OpenAI's newer
    ``max_completion_tokens`` is the same as ``max_tokens``."""
    values = dict(values)
    newer = values.pop("max_completion_tokens", None)
    if newer is not None:
        if values.get("max_tokens") not in (None, newer):
            raise InvalidInput("max_tokens and max_completion_tokens disagree; send one")
        values["max_tokens"] = newer
    chosen: dict[str, Any] = {"json_schema": schema_of(values.get("response_format"))}
    for name in PARAMS:
        value = values.get(name)
        if value is None:
            continue
        if name == "stop":
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, list | tuple) or not all(isinstance(s, str) for s in value):
                raise InvalidInput("stop must be a string or a list of strings")
            value = tuple(value)
        elif name in ("max_tokens", "seed"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInput(f"{name} must be an integer")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"{name} must be a number")
        chosen[name] = value
    return ChatParams(**chosen)


def _first_string(tensor: Any) -> str:
    """The first element of a BYTES input: str over REST, bytes over gRPC."""
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {tensor.name!r} must be BYTES")
    data = tensor.data
    while isinstance(data, list):
        if not data:
            raise InvalidInput(f"input {tensor.name!r} is empty")
        data = data[0]
    return data.decode("utf-8") if isinstance(data, bytes) else str(data)


def _plain(parameters: Any) -> dict[str, Any]:
    """v2 request parameters as Python values (gRPC sends InferParameter messages)."""
    plain = {}
    for name, value in dict(parameters or {}).items():
        if hasattr(value, "WhichOneof"):
            value = getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        plain[name] = value
    return plain


class VlmPredictor(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, uri: str, settings: Settings) -> None:
        super().__init__(name)
        self.uri = uri
        self.settings = settings
        self.chat_model: ChatModel | None = None
        self.placement: dict[str, Any] = {}  # family, device, dtype, attention, gpus

    def load(self) -> bool:
        folder = model_folder(self.uri, self.settings)
        limits = ChatLimits(
            max_images=self.settings.predictor_max_images,
            max_image_pixels=self.settings.predictor_max_image_pixels,
            max_tokens=self.settings.predictor_max_tokens,
        )
        vlm = load_vlm(folder)
        self.chat_model = ChatModel(vlm, fetch=self._fetch, limits=limits)
        self.placement = {"family": vlm.family, **vlm.placement.report()}
        log.info(
            "model loaded", extra={k: self.placement[k] for k in ("family", "device", "dtype")}
        )
        self.ready = True
        return True

    def stop(self) -> None:
        """Ends the model's batching thread (KServe calls it on shutdown)."""
        if self.chat_model is not None:
            self.chat_model.stop()

    def _fetch(self, uri: str) -> bytes:
        """An s3:// image under the configured prefix, its size checked before it is read. A
        key outside the prefix, a missing key and a too large object get the same answer, so
        callers learn nothing about what the store holds."""
        prefix = self.settings.predictor_image_prefix
        refused = InvalidInput("image_url cannot be read")
        if not prefix or not uri.startswith(prefix.rstrip("/") + "/") or "/../" in uri:
            raise refused
        bucket, _, key = uri[len("s3://") :].partition("/")
        store = open_store(f"s3://{bucket}", self.settings)
        try:
            if store.stat(key).size > self.settings.predictor_max_body_mb << 20:
                raise refused
            return store.get_bytes(key)
        except MedxError:
            raise refused from None

    @property
    def model(self) -> ChatModel:
        if self.chat_model is None:
            raise InvalidInput("the model is not loaded")
        return self.chat_model

    async def complete(
        self,
        messages: list[dict[str, Any]],
        params: ChatParams,
        cancel: threading.Event | None = None,
    ) -> ChatResult:
        """The completion, awaited with no thread blocked on it. A short text prompt is
        prepared here on the event loop (``INLINE_PROMPT_CHARS`` bounds that work, and no thread
        is woken: each wake-up takes a core from the running generation), other prompts on a
        worker thread; the generation runs on the model's own thread."""
        short = (
            params.json_schema is None
            and isinstance(messages, list)
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
        )
        if short and sum(len(m["content"]) for m in messages) <= INLINE_PROMPT_CHARS:
            future = self.model.submit(messages, params, cancel)
        else:
            future = await asyncio.to_thread(self.model.submit, messages, params, cancel)
        return await asyncio.wrap_future(future)

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        try:
            return await self._predict(payload)
        except (
            InvalidInput
        ) as exc:  # KServe answers its own InvalidInput with 400 / INVALID_ARGUMENT
            raise kserve_errors.InvalidInput(str(exc)) from None

    async def _predict(self, payload: InferRequest) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("send an Open Inference Protocol v2 request")
        inputs = {i.name: i for i in payload.inputs}
        if "messages" in inputs:
            try:
                messages = json.loads(_first_string(inputs["messages"]))
            except ValueError:
                raise InvalidInput("input 'messages' must hold the messages as JSON") from None
        elif "text" in inputs:
            messages = [{"role": "user", "content": _first_string(inputs["text"])}]
        else:
            raise InvalidInput("the request needs a BYTES input 'messages' or 'text'")
        params = params_from(_plain(payload.parameters))
        result = await self.complete(messages, params)
        output = InferOutput(name="text", shape=[1], datatype="BYTES", data=[result.text])
        return InferResponse(
            response_id=payload.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=[output],
            parameters={
                "finish_reason": result.finish_reason,
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
            },
            from_grpc=payload.from_grpc,
        )
