"""Chat messages in OpenAI's shape, read as text."""

from __future__ import annotations

from typing import Any


def content_text(content: Any) -> str:
    """A message's content as text: a string as it is; a list of parts, its text parts joined
    by spaces (image parts dropped)."""
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")
