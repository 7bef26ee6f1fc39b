"""A training run in the object store, under ``runs/<stage>/<run-id>/``:

    config.yaml                      the resolved config, written once
    metrics/part-<n>.jsonl           metric lines, flushed in atomic parts (stores do not append)
    checkpoints/step-<n>/node-<k>/   node k's part of checkpoint n, published atomically; the
                                     checkpoint is complete when every node's part is in
    best/step-<n>/...                the best model so far by the stage's metric
    model/final/...                  the final Hugging Face folder, published atomically

The final model is also published under ``models/<stage>/<run-id>``, whose _LATEST is what the
services load by default. A re-run with the same id resumes from the last complete checkpoint;
a checkpoint whose upload died before its manifest is invisible."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from medxiaohe.common.errors import Conflict, InvalidInput, NotFound
from medxiaohe.storage import ArtifactStore, Manifest, download, publish_folder, resolve
from medxiaohe.storage.artifacts import MANIFEST
from medxiaohe.storage.base import check_key
from medxiaohe.training.manifests import check_run_id

# Config fields that say how to start a run, not what it computes: not part of its identity.
LAUNCH_FIELDS = ("run_id", "resume", "store_uri")


def launch_yaml(config: Any, store_uri: str = "") -> str:
    """A resolved stage config as the launched stage reads it: the launch fields left to the
    launcher (the store given, for a process on this machine)."""
    body = {k: v for k, v in asdict(config).items() if k not in LAUNCH_FIELDS}
    return yaml.safe_dump(body | ({"store_uri": store_uri} if store_uri else {}), sort_keys=True)


def new_run_id(stage: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stage}-{stamp}-{secrets.token_hex(2)}"


def models_prefix(stage: str) -> str:
    return f"models/{check_key(stage)}"


class Run:
    def __init__(self, store: ArtifactStore, stage: str, run_id: str, key: bytes = b"") -> None:
        self.store = store
        self.stage = stage
        self.run_id = check_run_id(run_id)
        self.key = key  # seals checkpoints (a run without one cannot save or restore them)
        self.prefix = f"runs/{check_key(stage)}/{run_id}"
        self._pending: list[str] = []
        self._part = sum(1 for _ in store.list(f"{self.prefix}/metrics/"))

    @classmethod
    def start(
        cls, store: ArtifactStore, stage: str, config: Any, run_id: str = "", key: bytes = b""
    ) -> Run:
        """Open a new run, or re-open one with the same id and the same config (to resume);
        ``key`` seals its checkpoints."""
        run = cls(store, stage, run_id or new_run_id(stage), key)
        values = (
            asdict(config)
            if is_dataclass(config) and not isinstance(config, type)
            else dict(config)
        )
        for name in LAUNCH_FIELDS:
            values.pop(name, None)
        values["run_id"] = run.run_id
        text = yaml.safe_dump(values, sort_keys=True).encode()
        config_key = f"{run.prefix}/config.yaml"
        if store.exists(config_key):
            if store.get_bytes(config_key) != text:
                raise Conflict(f"run {run.run_id} exists with another config; use a new run id")
        else:
            store.put_bytes(config_key, text)
        return run

    @staticmethod
    def unfinished(store: ArtifactStore, stage: str) -> str:
        """The id of the newest run of ``stage`` without a final model; NotFound if none."""
        ids = sorted(
            {info.key.split("/")[2] for info in store.list(f"runs/{check_key(stage)}/")},
            reverse=True,
        )
        for run_id in ids:
            if not store.exists(f"runs/{stage}/{run_id}/model/_LATEST"):
                return run_id
        raise NotFound(f"no unfinished {stage} run to resume")

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

    def save_checkpoint(
        self, step: int, folder: Path, index: int = 0, nodes: int = 1, keep: int = 2
    ) -> Manifest:
        """Publish node ``index``'s part of checkpoint ``step``; node 0 then deletes all but
        the newest ``keep`` checkpoints (each part loses its manifest first, so none is ever
        seen half-deleted)."""
        self.flush()
        prefix = f"{self.prefix}/checkpoints"
        self._discard_unsealed(step, index)
        manifest = publish_folder(
            self.store,
            f"{prefix}/step-{step:08d}",
            folder,
            version=f"node-{index}",
            metadata={"step": step, "nodes": nodes},
            move_latest=False,
        )
        # the seal, last: a part without one is incomplete (a crash here loses only this step)
        self.store.put_bytes(self._seal_key(step, index), self._seal(manifest).encode())
        if index == 0:
            for version in self._checkpoint_steps()[:-keep]:
                keys = [i.key for i in self.store.list(f"{prefix}/step-{version:08d}/")]
                for key in sorted(keys, key=lambda k: not k.endswith(MANIFEST)):
                    self.store.delete(key)
        return manifest

    def _discard_unsealed(self, step: int, index: int) -> None:
        """A part of this step without its seal is what a killed attempt left half-written:
        the resumed run, which restarted from an earlier checkpoint, replaces it (manifest
        first). A sealed part is never replaced."""
        if self.store.exists(self._seal_key(step, index)):
            return
        part = f"{self.prefix}/checkpoints/step-{step:08d}/node-{index}/"
        keys = [i.key for i in self.store.list(part)]
        for key in sorted(keys, key=lambda k: not k.endswith(MANIFEST)):
            self.store.delete(key)

    def _checkpoint_steps(self) -> list[int]:
        prefix = f"{self.prefix}/checkpoints/step-"
        names = {i.key[len(prefix) :].split("/")[0] for i in self.store.list(prefix)}
        return sorted(int(n) for n in names if n.isdigit())

    def _seal_key(self, step: int, index: int) -> str:
        return f"{self.prefix}/checkpoints/step-{step:08d}/node-{index}.seal"

    def _seal(self, manifest: Manifest) -> str:
        """An HMAC, keyed by the deployment's checkpoint key, of where the part is and of
        every file's size and SHA-256 (which the download then checks)."""
        if len(self.key) < 32:
            raise InvalidInput("a run needs its checkpoint key (MEDXIAOHE_CHECKPOINT_KEY)")
        body = json.dumps([manifest.prefix, manifest.version, manifest.files], sort_keys=True)
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()

    def latest_checkpoint(self, nodes: int = 1) -> int | None:
        """The step of the newest checkpoint whose ``nodes`` parts are all in, sealed."""
        for step in reversed(self._checkpoint_steps()):
            parts = f"{self.prefix}/checkpoints/step-{step:08d}"
            if all(
                self.store.exists(f"{parts}/node-{k}/{MANIFEST}")
                and self.store.exists(self._seal_key(step, k))
                for k in range(nodes)
            ):
                return step
        return None

    def restore(self, step: int, index: int, folder: Path) -> None:
        """Download node ``index``'s part of checkpoint ``step`` into ``folder``, once its seal
        proves it is what this deployment saved: resuming unpickles it (optimizer states,
        DeepSpeed shards), so a part rewritten in the store must never load."""
        prefix = f"{self.prefix}/checkpoints/step-{step:08d}"
        manifest = resolve(self.store, prefix, f"node-{index}")
        try:
            sealed = self.store.get_bytes(self._seal_key(step, index)).decode()
        except NotFound:
            sealed = ""
        if not hmac.compare_digest(sealed, self._seal(manifest)):
            raise InvalidInput(
                f"checkpoint step {step} of run {self.run_id} is not sealed with this "
                "deployment's checkpoint key (changed in the store, or saved with another "
                "key): it is not loaded"
            )
        download(self.store, manifest, folder)  # each file checked against the manifest

    def save_best(self, step: int, folder: Path, metrics: dict[str, float]) -> Manifest:
        self.flush()
        return publish_folder(
            self.store,
            f"{self.prefix}/best",
            folder,
            version=f"step-{step:08d}",
            metadata={"step": step, "metrics": metrics},
        )

    def best(self) -> Manifest | None:
        return self._latest("best")

    def publish_model(self, folder: Path) -> Manifest:
        """The final model, under the run and as the stage's newest model."""
        self.flush()
        manifest = publish_folder(self.store, f"{self.prefix}/model", folder, version="final")
        publish_folder(
            self.store,
            models_prefix(self.stage),
            folder,
            version=self.run_id,
            metadata={"run": self.prefix},
        )
        return manifest

    def _latest(self, name: str) -> Manifest | None:
        try:
            return resolve(self.store, f"{self.prefix}/{name}")
        except NotFound:
            return None
