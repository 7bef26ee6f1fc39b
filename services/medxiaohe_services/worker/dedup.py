"""The dedup index that the workers of a bulk ingest share, in the broker's Redis: a record
one worker kept makes its exact and near duplicates drop on every other worker, as one process
would drop them.

The same MinHash LSH bands as the in-memory index (datasketch's band layout for the same
threshold and permutations): a kept record's signature is added to one Redis set per band, its
signature to a hash, its normalized-text hash to another. A record's check-and-add runs under
a Redis lock per dataset, so two workers cannot both keep a near-duplicate pair. Record names
are keyed pseudonyms (HMAC with the de-identification secret): no record id reaches Redis.
A Redis error is Unavailable, so the shard's task is retried. The index has no persistence of
its own: when Redis restarts without it, the next task rebuilds it from the finished shards."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import redis

from medxiaohe.common.errors import Unavailable
from medxiaohe.common.secrets import pseudonym
from medxiaohe.corpus.steps import NUM_PERM, THRESHOLD, lsh_threshold

PREFIX = "medxiaohe:dedup:"
# A lock whose holder died (a worker killed, or Redis restarted before it was released) is
# free again after this long. It is held over one record's few index reads and writes (the
# signature is computed before), milliseconds: at 60 s every restart of Redis stalled the run.
LOCK_TIMEOUT_S = 10
SEED_TIMEOUT_S = 1800  # rebuilding the index from the finished shards of a large dataset


class RedisIndex:
    """A ``medxiaohe.corpus.steps.DedupIndex`` over ``client`` (redis-py) for one dataset."""

    def __init__(
        self,
        client: Any,
        dataset: str,
        secret: str,
        num_perm: int = NUM_PERM,
        threshold: float = THRESHOLD,
    ) -> None:
        from datasketch import MinHashLSH

        self._ranges = MinHashLSH(threshold=lsh_threshold(threshold), num_perm=num_perm).hashranges
        self._client = client
        self._secret = secret
        self._num_perm = num_perm
        # an index of other permutations (an older release) is not read: it is rebuilt
        self._prefix = PREFIX + pseudonym(secret, f"dataset:{dataset}:{num_perm}")[:24]

    def _name(self, key: str) -> str:
        return pseudonym(self._secret, f"record:{key}")[:32]

    def _bands(self, minhash: Any) -> list[str]:
        values = np.asarray(minhash.hashvalues, dtype=np.uint64)
        return [
            f"{self._prefix}:b{i}:{values[start:end].tobytes().hex()}"
            for i, (start, end) in enumerate(self._ranges)
        ]

    def exact(self, digest: str, key: str) -> str | None:
        with _redis_errors():
            holder = self._client.hget(f"{self._prefix}:digests", digest)
        if holder is None or holder.decode() == self._name(key):
            return None
        return str(holder.decode())

    def similar(self, minhash: Any, key: str) -> list[tuple[str, Any]]:
        from datasketch import MinHash

        with _redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for band in self._bands(minhash):
                pipe.smembers(band)
            names = sorted({n.decode() for found in pipe.execute() for n in found})
            names = [n for n in names if n != self._name(key)]
            signatures = self._client.hmget(f"{self._prefix}:signatures", names) if names else []
        scheme = minhash.scheme  # every signature here was made the same way
        return [
            (name, MinHash(self._num_perm, hashvalues=np.frombuffer(raw, np.uint64), scheme=scheme))
            for name, raw in zip(names, signatures, strict=True)
            if raw is not None
        ]

    def add(self, key: str, minhash: Any, digest: str) -> None:
        name = self._name(key)
        values = np.asarray(minhash.hashvalues, dtype=np.uint64)
        with _redis_errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.hset(f"{self._prefix}:signatures", name, values.tobytes())
            pipe.hsetnx(f"{self._prefix}:digests", digest, name)
            for band in self._bands(minhash):
                pipe.sadd(band, name)
            pipe.execute()

    def ensure_seeded(self, seed: Callable[[], None]) -> None:
        """Run ``seed`` (every finished shard's records into the index) unless this index in
        Redis has been seeded: after a Redis restart lost it, the next shard's task rebuilds it
        before it dedups, while the other tasks wait."""
        marker = f"{self._prefix}:seeded"
        with _redis_errors():
            if self._client.exists(marker):
                return
        with self._locked("seeding", SEED_TIMEOUT_S, SEED_TIMEOUT_S, "is being rebuilt"):
            with _redis_errors():
                if self._client.exists(marker):  # another task seeded it meanwhile
                    return
            seed()
            with _redis_errors():
                self._client.set(marker, b"1")

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self._locked("lock", LOCK_TIMEOUT_S, 2 * LOCK_TIMEOUT_S, "is busy")

    @contextlib.contextmanager
    def _locked(self, name: str, timeout_s: int, wait_s: int, busy: str) -> Iterator[None]:
        """A Redis lock of this index, freed after ``timeout_s`` if its holder died; waited for
        ``wait_s``, then Unavailable (the task is retried)."""
        lock = self._client.lock(
            f"{self._prefix}:{name}", timeout=timeout_s, blocking_timeout=wait_s
        )
        with _redis_errors():
            if not lock.acquire():
                raise Unavailable(f"the shared dedup index {busy}; the shard will be retried")
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):  # expired, or Redis gone: nothing held
                lock.release()


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as exc:
        name = type(exc).__name__
        raise Unavailable(f"the shared dedup index cannot be reached ({name})") from None
