"""A training run in the object store, under ``runs/<stage>/<run-id>/``:

    config.yaml                      the resolved config, written once
    metrics/part-<n>.jsonl           metric lines, flushed in atomic parts (stores do not append)
    checkpoints/step-<n>/...         each checkpoint published atomically; _LATEST names the last
    model/final/...                  the final Hugging Face folder, published atomically

A re-run with the same id resumes from the last complete checkpoint; a checkpoint whose
upload died before its manifest is invisible."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from medxiaohe.common.errors import Conflict, NotFound
from medxiaohe.storage import ArtifactStore, Manifest, publish, read_file, resolve
from medxiaohe.storage.base import check_key


def new_run_id(stage: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stage}-{stamp}-{secrets.token_hex(2)}"


class Run:
    def __init__(self, store: ArtifactStore, stage: str, run_id: str) -> None:
        self.store = store
        self.stage = stage
        self.run_id = check_key(run_id)
        self.prefix = f"runs/{check_key(stage)}/{run_id}"
        self._pending: list[str] = []
        self._part = sum(1 for _ in store.list(f"{self.prefix}/metrics/"))

    @classmethod
    def start(cls, store: ArtifactStore, stage: str, config: Any, run_id: str = "") -> Run:
        """Open a new run, or re-open one with the same id and the same config (to resume)."""
        run = cls(store, stage, run_id or new_run_id(stage))
        values = (
            asdict(config)
            if is_dataclass(config) and not isinstance(config, type)
            else dict(config)
        )
        values["run_id"] = run.run_id
        text = yaml.safe_dump(values, sort_keys=True).encode()
        key = f"{run.prefix}/config.yaml"
        if store.exists(key):
            if store.get_bytes(key) != text:
                raise Conflict(f"run {run.run_id} exists with another config; use a new run id")
        else:
            store.put_bytes(key, text)
        return run

    def log(self, step: int, **values: float) -> None:
        self._pending.append(json.dumps({"step": step, **values}, sort_keys=True))

    def flush(self) -> None:
        if self._pending:
            key = f"{self.prefix}/metrics/part-{self._part:06d}.jsonl"
            self.store.put_bytes(key, ("\n".join(self._pending) + "\n").encode())
            self._part += 1
            self._pending = []

    def metrics(self) -> list[dict[str, Any]]:
        lines = []
        for info in self.store.list(f"{self.prefix}/metrics/"):
            lines += [
                json.loads(x) for x in self.store.get_bytes(info.key).decode().splitlines() if x
            ]
        return lines

    def save_checkpoint(self, step: int, folder: Path) -> Manifest:
        files = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        self.flush()
        return publish(
            self.store,
            f"{self.prefix}/checkpoints",
            files,
            version=f"step-{step:08d}",
            metadata={"step": step},
        )

    def latest_checkpoint(self) -> Manifest | None:
        try:
            return resolve(self.store, f"{self.prefix}/checkpoints")
        except NotFound:
            return None

    def restore(self, manifest: Manifest, folder: Path) -> int:
        """Download a checkpoint into ``folder``; returns its step."""
        for name in manifest.files:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_file(self.store, manifest, name))
        step: int = manifest.metadata["step"]
        return step

    def publish_model(self, folder: Path) -> Manifest:
        files = {
            p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()
        }
        self.flush()
        return publish(self.store, f"{self.prefix}/model", files, version="final")
