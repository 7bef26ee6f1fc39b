"""The de-identification secret and the keyed pseudonyms made with it.

Every pseudonym the platform stores (patient keys, record ids, file names in object keys, ids in
audit lines) is an HMAC-SHA256 of the identifier keyed by ``MEDXIAOHE_DEID_SECRET``, at full
length: without the secret, hashing every possible MRN recovers nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from medxiaohe.common.errors import InvalidInput
from medxiaohe.common.settings import Settings

MIN_SECRET_BYTES = 32
SECRET_PATH = Path("secrets", "deid-secret")  # under the embedded home


def pseudonym(secret: str, value: str) -> str:
    """The keyed, full-length pseudonym of an identifier (64 hex digits)."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def check_secret(secret: str) -> str:
    """The secret, if it is long enough to key pseudonyms and date shifts."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise InvalidInput(
            f"MEDXIAOHE_DEID_SECRET must be set to a random value of at least {MIN_SECRET_BYTES} "
            "bytes (e.g. `openssl rand -base64 48`); it keys every pseudonym and date shift, so "
            "keep it in a Kubernetes Secret"
        )
    return secret


def required_secret(settings: Settings) -> str:
    """The configured secret; processes that see PHI refuse to start without one."""
    return check_secret(settings.deid_secret.get_secret_value())


def home_secret(home: Path) -> str:
    """The embedded runtime's secret: generated into ``home`` on first use (mode 0600)."""
    path = home / SECRET_PATH
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        os.replace(tmp, path)
    return check_secret(path.read_text().strip())


def home_or_configured_secret(settings: Settings, home: Path) -> str:
    """The configured secret; a local-folder store is the embedded runtime's, so without one
    the home's generated secret keys it (the same one `medxiaohe up` uses)."""
    if settings.deid_secret.get_secret_value() or settings.store_uri.startswith("s3://"):
        return required_secret(settings)
    return home_secret(home)
