"""Bulk ingestion under faults: documents of four kinds (text, JSONL, FHIR, HL7) with exact and
near duplicates planted, ingested through Celery by two workers while a worker, Valkey and
`weed` are killed (SIGKILL) at random moments and started again. Then every planted document is
looked for in the dataset and in the dataset a single process writes from the same input.

Each document carries a marker word naming its cluster (a document and its planted duplicates),
so the check needs no code under test: a cluster missing from the dataset is lost, a cluster
kept twice is duplicated (exactly when the two texts hash the same), a shard whose files do not
match its manifest is half-written."""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.servers import CeleryWorker, Server, Valkey, Weed, clean_env, s3_settings
from medxiaohe.common.settings import Settings
from medxiaohe.corpus.ingest import ShardIngestor, ShardSpec, plan_shards, upload_inputs
from medxiaohe.corpus.shards import list_shards, read_records, shards_prefix
from medxiaohe.entities.tagger import DictionaryTagger
from medxiaohe.entities.tree import EntityTree
from medxiaohe.storage import ArtifactStore, open_store
from medxiaohe.storage.artifacts import CLAIM, LATEST, MANIFEST

DATASET = "faults"
VOCABULARY = (
    "patient presents with cough fever dyspnea chest pain abdominal tenderness nausea fatigue "
    "history of hypertension diabetes asthma smoking renal hepatic cardiac murmur wheeze rales "
    "radiograph shows opacity effusion nodule consolidation atelectasis edema fracture mass "
    "lobe upper lower middle right left bilateral mild moderate severe stable improved worse "
    "follow up advised repeat imaging weeks months therapy started stopped dose daily twice "
    "antibiotic steroid diuretic insulin inhaler oxygen saturation pressure rate rhythm normal "
    "sinus tachycardia bradycardia examination revealed soft nontender distended bowel sounds "
    "present absent reduced clear equal breath heart sounds regular no acute distress alert "
    "oriented afebrile today yesterday prior study compared unchanged new small large"
)
WORDS = VOCABULARY.split()
MARKER = "zq"  # a cluster's marker word: zq + its number in letters


def marker(cluster: int) -> str:
    letters = ""
    while True:
        cluster, digit = divmod(cluster, 26)
        letters += chr(ord("a") + digit)
        if not cluster:
            return MARKER + letters


MARKER_RE = re.compile(rf"\b{MARKER}([a-z]+)\b")


def cluster_of(text: str) -> int | None:
    found = MARKER_RE.search(text)
    if found is None:
        return None
    return int(sum((ord(c) - ord("a")) * 26**i for i, c in enumerate(found.group(1))))


@dataclass
class Corpus:
    folder: Path
    documents: int
    clusters: int
    planted: dict[str, int]
    files: int


def write_corpus(folder: Path, documents: int, seed: int = 0) -> Corpus:
    """``documents`` documents in files of four kinds, about 8 % of them exact and 8 % near
    copies of an earlier one (one word of about a hundred changed) in a file of any kind. Two
    near copies of one document differ in two words: 3-gram Jaccard about 0.89, clear of the
    0.8 threshold (at 60 words it was 0.83, where MinHash's estimate misses one pair in six)."""
    rng = random.Random(seed)  # noqa: S311 (the same corpus for a seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []
    originals: list[str] = []  # near copies are of these (a copy of a copy may be too far)
    planted = Counter[str]()
    for _ in range(documents):
        roll = rng.random()
        if texts and roll < 0.08:
            texts.append(rng.choice(texts))
            planted["exact"] += 1
        elif texts and roll < 0.16:
            words = rng.choice(originals).split()
            at = rng.randrange(1, len(words))  # the marker, first, stays
            words[at] = rng.choice([w for w in WORDS if w != words[at]])
            texts.append(" ".join(words))
            planted["near"] += 1
        else:
            body = [rng.choice(WORDS) for _ in range(rng.randint(90, 110))]
            originals.append(" ".join([marker(len(originals)), *body]) + ".")
            texts.append(originals[-1])
    files = 0
    jsonl: list[str] = []
    for i, text in enumerate(texts):
        kind = rng.choices(("txt", "jsonl", "fhir", "hl7"), (40, 30, 15, 15))[0]
        if kind == "jsonl":
            jsonl.append(json.dumps({"id": f"j{i}", "text": text, "source": "corpus"}))
            if len(jsonl) == 25:
                files += _write(folder / f"part-{i:06d}.jsonl", "\n".join(jsonl))
                jsonl = []
        elif kind == "txt":
            files += _write(folder / f"note-{i:06d}.txt", text)
        elif kind == "fhir":
            report: dict[str, Any] = {"resourceType": "DiagnosticReport", "id": f"r{i}"}
            report |= {"status": "final", "code": {"text": "Radiology report"}, "conclusion": text}
            files += _write(folder / f"report-{i:06d}.json", json.dumps(report))
        else:
            message = (
                f"MSH|^~\\&|RIS|HOSP|MEDX|MEDX|202401010000||ORU^R01|M{i:06d}|P|2.5\r"
                f"OBR|1||A{i:06d}|71046^Chest X-ray\rOBX|1|TX|71046^Findings||{text}||||||F\r"
            )
            files += _write(folder / f"oru-{i:06d}.hl7", message)
    if jsonl:
        files += _write(folder / "part-last.jsonl", "\n".join(jsonl))
    return Corpus(folder, documents, len(originals), dict(planted), files)


def _write(path: Path, text: str) -> int:
    path.write_text(text)
    return 1


def half_written(store: ArtifactStore, prefix: str = "") -> tuple[int, int]:
    """Published versions under ``prefix`` whose files are missing or differ from their
    manifest, and objects in version folders that no manifest names (a killed write's
    leftovers, invisible to readers)."""
    objects = [o.key for o in store.list(prefix)]
    manifests = [k for k in objects if k.endswith("/" + MANIFEST)]
    named: set[str] = set()
    broken = 0
    for key in manifests:
        folder = key[: -len(MANIFEST)]
        try:
            files = json.loads(store.get_bytes(key))["files"]
            named |= {folder + name for name in files}
            for name, entry in files.items():
                data = store.get_bytes(folder + name)
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise ValueError(name)
        except Exception:  # any way a version fails to read is a half-written one
            broken += 1
    folders = {k[: -len(MANIFEST)] for k in manifests}
    leftovers = [
        k
        for k in objects
        if k not in named
        and not k.endswith(("/" + MANIFEST, "/" + LATEST, "/" + CLAIM))
        and (k.rsplit("/", 2)[0] + "/" in folders or "/.partial/" in k)
    ]
    return broken, len(leftovers)


def audit(store: ArtifactStore, dataset: str, clusters: int) -> dict[str, Any]:
    """What the dataset holds against what was planted, and its half-written shards."""
    kept: dict[int, list[str]] = {}
    unmarked = dropped = 0
    manifests = list_shards(store, dataset)
    for manifest in manifests:
        try:
            rows = read_records(store, manifest)
            dropped += len(read_records(store, manifest, "dropped.parquet"))
        except Exception:  # noqa: S112 (counted by half_written below)
            continue
        for row in rows:
            cluster = cluster_of(row["text"])
            if cluster is None:
                unmarked += 1
            else:
                kept.setdefault(cluster, []).append(row["content_hash"])
    broken, leftovers = half_written(store, shards_prefix(dataset) + "/")
    twice = {c: hashes for c, hashes in kept.items() if len(hashes) > 1}
    exact = sum(len(h) - len(set(h)) for h in twice.values())
    near = sum(len(set(h)) - 1 for h in twice.values())
    return {
        "shards": len(manifests),
        "kept": sum(len(h) for h in kept.values()) + unmarked,
        "dropped": dropped,
        "lost": clusters - len(kept),
        "duplicated": exact + near,
        "duplicated_exact": exact,
        "duplicated_near": near,
        "half_written": broken,
        "unreferenced_objects": leftovers,
        "clusters_kept": sorted(kept),
    }


@dataclass
class Faults:
    """Kills each target once at a random point of the run (a fraction of shards done), and
    starts it again after a random pause."""

    targets: dict[str, list[Server]]
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        plan = sorted((self.rng.uniform(0.1, 0.7), name) for name in self.targets)
        for fraction, name in plan:
            while self.done / self.total < fraction and not self._stop.wait(0.05):
                pass
            server = self.rng.choice(self.targets[name])
            pause = self.rng.uniform(0.5, 3.0)
            at = time.monotonic() - self.started
            server.kill()
            time.sleep(pause)
            event = {"killed": name, "at_s": round(at, 1), "down_s": round(pause, 1),
                     "shards_done": self.done}  # fmt: skip
            self.events.append(event | self._restart(server))

    @staticmethod
    def _restart(server: Server, attempts: int = 3) -> dict[str, Any]:
        """Start ``server`` again; a server that will not start is reported (the run then
        cannot finish), not left to a dead thread."""
        for attempt in range(1, attempts + 1):
            try:
                server.start()
                return {"restart_attempts": attempt} if attempt > 1 else {}
            except Exception as exc:  # reported in the figures
                error = f"{type(exc).__name__}: {str(exc)[-300:]}"
                time.sleep(1)
        return {"restart_error": error}

    def stop(self) -> None:
        self._stop.set()


def single_process(corpus: Corpus, tree: EntityTree, secret: str, per_shard: int) -> dict[str, Any]:
    """The same input through one process with its in-memory dedup, into a local store."""
    with tempfile.TemporaryDirectory(prefix="medxiaohe-faults-") as tmp:
        store = open_store(str(Path(tmp) / "store"))
        tree.save(store)
        keys = upload_inputs(store, DATASET, [corpus.folder], secret)
        ingestor = ShardIngestor(store, DATASET, DictionaryTagger(tree), secret)
        for spec in plan_shards(keys, per_shard):
            ingestor.process(ShardSpec(spec.shard_id, spec.keys))
        return audit(store, DATASET, corpus.clusters)


def run(
    work: Path,
    tree: EntityTree,
    documents: int = 10_000,
    per_shard: int = 40,
    seed: int = 0,
    timeout_s: float = 1200,
    task_time_limit_s: float = 30,
) -> dict[str, Any]:
    """The ``faults`` figures: the dataset that two workers wrote under faults, audited. A
    killed worker's shard is delivered again after twice ``task_time_limit_s``."""
    from medxiaohe_services.worker.app import make_app
    from medxiaohe_services.worker.dispatch import run_shards

    rng = random.Random(seed)  # noqa: S311 (the same faults for a seed)
    secret = secrets.token_urlsafe(48)
    corpus = write_corpus(work / "in", documents, seed)
    weed, valkey = Weed(work / "weed"), Valkey(work / "valkey")
    servers: list[Server] = [weed, valkey]
    try:
        weed.start()
        valkey.start()
        bucket = f"faults-{uuid.uuid4().hex[:8]}"
        weed.client().make_bucket(bucket)
        s3 = s3_settings(weed.endpoint, bucket)
        values = {**s3, "broker_url": valkey.url, "deid_secret": secret}
        values |= {"task_time_limit_s": task_time_limit_s, "task_max_deliveries": 10}
        settings = Settings(**values)  # type: ignore[arg-type]
        store = open_store(settings.store_uri, settings)
        tree.save(store)
        keys = upload_inputs(store, DATASET, [corpus.folder], secret)
        specs = [s.as_dict() for s in plan_shards(keys, per_shard)]
        env = clean_env(**{f"MEDXIAOHE_{k.upper()}": str(v) for k, v in values.items()})
        workers: list[Server] = [
            CeleryWorker(env, work / f"worker-{i}.log", f"w{i}") for i in range(2)
        ]
        servers += workers
        for worker in workers:
            worker.start()
        faults = Faults({"worker": workers, "valkey": [valkey], "weed": [weed]}, rng)
        faults.total = len(specs)

        def done(_: dict[str, Any]) -> None:
            faults.done += 1

        chaos = threading.Thread(target=faults.run, daemon=True)
        started = time.perf_counter()
        chaos.start()
        error = ""
        try:
            run_shards(make_app(settings), DATASET, specs, done, timeout_s=timeout_s)
        except Exception as exc:  # reported as not finished, with what it holds
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        faults.stop()
        chaos.join(timeout=60)
        got = audit(store, DATASET, corpus.clusters)
    finally:
        for server in servers:
            server.stop()
    alone = single_process(corpus, tree, secret, per_shard)
    same = got.pop("clusters_kept") == alone.pop("clusters_kept")
    return {
        "documents": corpus.documents,
        "files": corpus.files,
        "shards": len(specs),
        "planted": corpus.planted,
        "workers": len(workers),
        "kills": faults.events,
        "finished": not error,
        **({"error": error} if error else {}),
        "seconds": round(seconds, 1),
        "documents_per_s": round(corpus.documents / seconds, 1),
        **{k: v for k, v in got.items() if k != "shards"},
        "single_process": alone,
        "equals_single_process": same and got["kept"] == alone["kept"],
    }
