"""OpenAI tool calling over any chat model, by constrained decoding.

``tools`` (functions with JSON-schema parameters) and ``tool_choice`` become one output schema:

* ``"required"`` or a named function: the output is a call, ``{"name", "arguments"}``, whose
  arguments validate against that function's parameters;
* ``"auto"``: the output is a call or ``{"content": "..."}`` (a plain answer);
* ``"none"``: no constraint; the model answers in text.

The tools are described to the model in a system message; earlier assistant calls and ``tool``
results are rendered as text for chat templates that know no tools. What comes back is parsed
into OpenAI's ``tool_calls`` (or ``content``), so a model with random weights still produces a
call that parses and validates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medxiaohe.common.errors import InvalidInput

MAX_TOOLS = 32
MAX_CONTENT = 2000  # the "auto" envelope's answer, in characters
MODES = ("none", "auto", "required")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


def tools_from(value: Any) -> list[Tool]:
    """OpenAI's ``tools`` list, checked."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("tools must be a non-empty list")
    if len(value) > MAX_TOOLS:
        raise InvalidInput(f"at most {MAX_TOOLS} tools")
    tools = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if (
            not isinstance(item, dict)
            or item.get("type") != "function"
            or not isinstance(function, dict)
        ):
            raise InvalidInput(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidInput(f"tools[{i}].function.name must be 1..64 characters")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidInput(f"tools[{i}].function.parameters must be a JSON schema object")
        tools.append(Tool(name, str(function.get("description") or ""), parameters))
    if len({t.name for t in tools}) != len(tools):
        raise InvalidInput("tool names must be unique")
    return tools


def choice_from(value: Any, tools: Sequence[Tool]) -> str:
    """``none``, ``auto``, ``required``, or the name of the function that must be called."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in MODES:
            raise InvalidInput(f"tool_choice must be one of {', '.join(MODES)} or a function")
        return value
    name = value.get("function", {}).get("name") if isinstance(value, dict) else None
    if not isinstance(name, str) or name not in {t.name for t in tools}:
        raise InvalidInput("tool_choice names a function that is not in tools")
    return name


def _call_schema(tool: Tool) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def output_schema(tools: Sequence[Tool], choice: str) -> str | None:
    """The JSON schema the output must follow (None for ``none``)."""
    if choice == "none":
        return None
    chosen = [t for t in tools if choice in ("auto", "required") or t.name == choice]
    options = [_call_schema(t) for t in chosen]
    if choice == "auto":
        options.append(
            {
                "type": "object",
                "properties": {"content": {"type": "string", "maxLength": MAX_CONTENT}},
                "required": ["content"],
                "additionalProperties": False,
            }
        )
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return json.dumps(schema, sort_keys=True)


def with_tools(
    messages: Sequence[dict[str, Any]], tools: Sequence[Tool] = (), choice: str = "none"
) -> list[dict[str, Any]]:
    """The conversation for a template without tools: earlier calls and their results as text
    (whether or not this request sends tools), and a system message describing the tools."""
    out: list[dict[str, Any]] = []
    if tools and choice != "none":
        listing = "\n".join(
            f"- {t.name}: {t.description} Parameters: {json.dumps(t.parameters, sort_keys=True)}"
            for t in tools
        )
        how = (
            'Answer with a JSON object: {"name": <function>, "arguments": {...}} to call one, '
            + ('or {"content": <your answer>}.' if choice == "auto" else "(a call is required).")
        )
        out.append(
            {"role": "system", "content": f"You can call these functions:\n{listing}\n{how}"}
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidInput(f"messages[{i}] must be an object")
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            try:
                calls = [
                    {
                        "name": c["function"]["name"],
                        "arguments": json.loads(c["function"]["arguments"]),
                    }
                    for c in message["tool_calls"]
                ]
            except (TypeError, KeyError, ValueError):
                raise InvalidInput(f"messages[{i}].tool_calls are not OpenAI tool calls") from None
            out.append(
                {"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)}
            )
        elif role == "tool":
            content = message.get("content")
            if not isinstance(content, str):
                raise InvalidInput(f"messages[{i}]: a tool message's content must be a string")
            out.append(
                {"role": "tool", "content": f"[{message.get('tool_call_id', '')}] {content}"}
            )
        else:
            out.append(dict(message))
    return out


def parse_output(text: str, choice: str) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of what the model wrote under ``choice``."""
    if choice == "none":
        return text, []
    try:  # the first JSON value: what follows it (end tokens) is not the model's answer
        data, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except ValueError:  # only when max_tokens ended the object early
        return text, []
    if isinstance(data, dict) and "name" in data:
        arguments = json.dumps(data.get("arguments", {}), separators=(",", ":"))
        return None, [ToolCall(f"call_{uuid.uuid4().hex[:24]}", str(data["name"]), arguments)]
    if isinstance(data, dict) and "content" in data:
        return str(data["content"]), []
    return text, []


def prepare(
    messages: Sequence[dict[str, Any]], json_schema: str | None, tools: Any, tool_choice: Any
) -> tuple[list[dict[str, Any]], str | None, str]:
    """A request's messages, output schema and tool mode ("none" without tools), as the
    predictor and the in-process client both run it."""
    if tools is None:
        if tool_choice is not None:
            raise InvalidInput("tool_choice needs tools")
        return with_tools(messages), json_schema, "none"  # earlier calls and results, as text
    specs = tools_from(tools)
    mode = choice_from(tool_choice, specs)
    if mode != "none" and json_schema is not None:
        raise InvalidInput("response_format and tools cannot be used together")
    schema = output_schema(specs, mode) if mode != "none" else json_schema
    return with_tools(messages, specs, mode), schema, mode
