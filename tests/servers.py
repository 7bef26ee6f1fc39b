"""Real servers for tests, started on 127.0.0.1: SeaweedFS (`weed mini`) and the gRPC platform."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from minio import Minio

from medxiaohe.common import ports
from medxiaohe.common.settings import Settings
from medxiaohe_services.runtime.server import Platform, ServiceSpec

S3_KEY, S3_SECRET = "medxiaohe-test", "medxiaohe-test-secret"


def free_ports(count: int) -> list[int]:
    """Free ports whose +10000 is free too (weed mini puts gRPC there), below 45000."""
    return ports.free_ports(count, below=45000, spaced=10000)


@dataclass
class Weed:
    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=S3_KEY, secret_key=S3_SECRET, secure=False)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_weed(
    data_dir: Path,
    s3_port: int | None = None,
    timeout: float = 60.0,
    s3_config: Path | None = None,
) -> Weed:
    """`weed mini` with every port chosen here, credentials set, telemetry and UIs off, and
    volumes enough for a bucket per test whatever the disk's free space.
    ``s3_config`` adds S3 identities (each with its own keys and allowed actions) beside the
    administrator the environment names."""
    binary = shutil.which("weed") or str(Path(__file__).resolve().parents[1] / ".venv/bin/weed")
    master, volume, filer, admin, iceberg, lance, *rest = free_ports(7)
    s3 = s3_port or rest[0]
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        binary,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-admin.port={admin}",
        "-admin.ui=false",
        f"-s3.port.iceberg={iceberg}",
        f"-s3.port.lance={lance}",
        "-webdav=false",
        # A bucket is a collection with volumes of its own, and the tests make one per test.
        # Left to itself, weed mini allows free disk / volume size volumes, so a fuller disk
        # ran out of them mid-suite (500s); volumes are sparse files, so many cost nothing.
        "-volume.max=1000",
        *([f"-s3.config={s3_config}"] if s3_config else []),
    ]
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "PATH": "/usr/bin:/bin"}
    log = (data_dir / "weed.log").open("wb")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    weed = Weed(f"127.0.0.1:{s3}", process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited: {(data_dir / 'weed.log').read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            weed.client().list_buckets()
            return weed
        time.sleep(0.3)
    weed.stop()
    raise RuntimeError("weed mini did not become ready")


class PlatformThread:
    """A Platform serving on its own event loop in a background thread."""

    def __init__(self, settings: Settings, specs: list[ServiceSpec]) -> None:
        self.platform = Platform(settings, specs)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> PlatformThread:
        self._thread.start()
        self.port = self.run(self.platform.start())
        return self

    def run(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __exit__(self, *exc: object) -> None:
        self.run(self.platform.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def serving(thread: PlatformThread, timeout: float = 120) -> bool:
    """Whether the platform reports SERVING within ``timeout`` (its checks run meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        thread.run(thread.platform.check_once())
        if thread.platform.is_serving():
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def running(settings: Settings, specs: list[ServiceSpec]) -> Iterator[PlatformThread]:
    with PlatformThread(settings, specs) as thread:
        yield thread
