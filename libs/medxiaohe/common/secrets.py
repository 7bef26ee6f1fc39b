"""The de-identification secret and the keyed pseudonyms made with it.

Every pseudonym the platform stores (patient keys, record ids, file names in object keys, ids in
audit lines) is an HMAC-SHA256 of the identifier keyed by ``MEDXIAOHE_DEID_SECRET``, at full
length: without the secret, hashing every possible MRN recovers nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import zlib
from collections import Counter
from pathlib import Path

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings

MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 128  # Shannon entropy of its characters, times its length
SECRET_PATH = Path("secrets", "deid-secret")  # under the embedded home


def pseudonym(secret: str, value: str) -> str:
    """The keyed, full-length pseudonym of an identifier (64 hex digits)."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def entropy_bits(secret: str) -> float:
    """An estimate of the secret's entropy, the lower of two: the Shannon entropy of its
    characters times its length (a one-letter run scores 0), and the size of its deflated
    form (a repeated word or digit run compresses)."""
    counts = Counter(secret)
    shannon = -sum(c * math.log2(c / len(secret)) for c in counts.values())
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = len(deflater.compress(secret.encode()) + deflater.flush())
    return min(shannon, 8.0 * deflated)


def check_secret(secret: str, name: str = "MEDXIAOHE_DEID_SECRET") -> str:
    """The secret, if it is long and random enough to key pseudonyms and date shifts."""
    if len(secret.encode()) < MIN_SECRET_BYTES or entropy_bits(secret) < MIN_SECRET_BITS:
        raise InvalidInput(
            f"{name} must be set to a random value of at least {MIN_SECRET_BYTES} bytes and "
            f"{MIN_SECRET_BITS} bits of entropy (e.g. `openssl rand -base64 48`); it keys "
            "pseudonyms, date shifts or checkpoint seals, so keep it in a Kubernetes Secret"
        )
    return secret


def required_secret(settings: Settings) -> str:
    """The configured secret; processes that see PHI refuse to start without one."""
    return check_secret(settings.deid_secret.get_secret_value())


def home_secret(home: Path, name: str = SECRET_PATH.name) -> str:
    """A secret of the embedded runtime: generated into ``home`` on first use (mode 0600);
    processes that race to create it all end up with the one that was linked first."""
    path = home / SECRET_PATH.parent / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)  # fails if another process made it first: theirs wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return check_secret(path.read_text().strip())


def home_or_configured_secret(settings: Settings, home: Path) -> str:
    """The configured secret; a local-folder store is the embedded runtime's, so without one
    the home's generated secret keys it (the same one `medxiaohe up` uses)."""
    if settings.deid_secret.get_secret_value() or settings.store_uri.startswith("s3://"):
        return required_secret(settings)
    return home_secret(home)


def checkpoint_key(settings: Settings, store_uri: str, home: Path = Path(".medxiaohe")) -> bytes:
    """The key that seals training checkpoints: configured (MEDXIAOHE_CHECKPOINT_KEY, from a
    Secret), required for an ``s3://`` store; for a local store, generated into the home once."""
    configured = settings.checkpoint_key.get_secret_value()
    if configured or store_uri.startswith("s3://"):
        return check_secret(configured, "MEDXIAOHE_CHECKPOINT_KEY").encode()
    return home_secret(home, "checkpoint-key").encode()
