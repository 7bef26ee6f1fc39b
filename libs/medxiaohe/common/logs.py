"""Structured JSON logging that cannot leak record content.

Three rules keep PHI out of log lines by construction rather than by discipline:

* the line carries the message *template* (``record.msg``), never its interpolated arguments,
  so ``log.info("tagging %s", text)`` writes "tagging %s";
* only the project's own loggers (``medxiaohe``, ``medxiaohe_services``, ``medxiaohe_training``
  and their children) write even that: third-party libraries
  (pydicom, kserve, uvicorn, celery, ...) often format values into the message before it reaches
  a handler, so their lines carry the logger name and level alone; warnings are captured into
  logging and follow the same rule;
* extra fields are written only when their name is on ``SAFE_FIELDS`` (identifiers, counts,
  codes, timings); any other extra field is dropped.

Exceptions are written as their type and the code locations of the traceback, without the
exception message, which may quote input.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any

SAFE_FIELDS = frozenset(
    {
        "event",
        "device",
        "dtype",
        "family",
        "service",
        "rpc",
        "caller",
        "cert_sha256",
        "peer",
        "code",
        "latency_ms",
        "record_ids",
        "request_id",
        "key",
        "uri",
        "size",
        "count",
        "status",
        "port",
        "address",
        "version",
        "task",
        "task_id",
        "attempt",
        "duration_ms",
        "reason",
        "component",
        "signal",
        "grace_s",
        "mode",
        "review_url",
        "report_id",
        "changes",
        "error",
    }
)
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


OWN = ("medxiaohe", "medxiaohe_services", "medxiaohe_training")  # the project's packages


def own(name: str) -> bool:
    """Whether the logger ``name`` is the project's own."""
    return any(name == o or name.startswith(o + ".") for o in OWN)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the message template and whitelisted fields only."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if own(record.name):
            line["msg"] = str(record.msg)
            for name, value in record.__dict__.items():
                if name in SAFE_FIELDS and name not in _STANDARD_ATTRS:
                    line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            line["exc_type"] = exc_type.__name__
            line["exc_where"] = [
                f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_tb(tb)
            ][-5:]
        return json.dumps(line, default=str, separators=(",", ":"))


def setup_logging(level: str = "INFO") -> None:
    """Route the root logger to stderr as JSON lines; call once at process start."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    # libraries that install their own handlers (kserve, uvicorn) go through the root's alone
    for name in list(logging.root.manager.loggerDict):
        logger = logging.getLogger(name)
        if logger.handlers and not own(name):
            logger.handlers[:] = []
            logger.propagate = True
    # DeepSpeed adds a handler of its own on stdout when it is first imported, after this
    # runs: its records go through the root's handler instead, so that stdout stays for what
    # a command prints (the JSON of `medxiaohe bench`, `model generate`, ...)
    deepspeed = logging.getLogger("DeepSpeed")
    if _through_root not in deepspeed.filters:
        deepspeed.addFilter(_through_root)
    logging.Formatter.converter = time.gmtime


def _through_root(record: logging.LogRecord) -> bool:
    """A logger filter: the record goes to the root's handlers, not to the logger's own."""
    logging.getLogger().handle(record)
    return False
