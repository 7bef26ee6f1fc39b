"""Compiling a schema's regular expression against a model's vocabulary, within bounds.

A short caller pattern can determinize into millions of automaton states (``(a|b)*a(a|b){16}``:
131k states on a 322-token vocabulary, each two more characters four times as many), and the
compiler (outlines-core, in Rust) cannot be interrupted in-process. So it runs in a worker
process of its own (``python -m medxiaohe.models.grammar``), started once per vocabulary with
a memory ceiling; a compile that takes longer than ``seconds`` or whose index is larger than
``max_bytes`` is refused (the caller gets InvalidInput, HTTP 400), and the worker is replaced.
"""

from __future__ import annotations

import select
import struct
import subprocess
import sys
import threading
from typing import IO, Any, cast

from medxiaohe.common.errors import InvalidInput

COMPILE_SECONDS = 20.0
MAX_INDEX_BYTES = 256 << 20
WORKER_MEMORY = 4 << 30  # address space of the compile worker
_OK, _ERROR = b"o", b"e"


def _write(stream: IO[bytes], kind: bytes, data: bytes) -> None:
    stream.write(kind + struct.pack(">Q", len(data)) + data)
    stream.flush()


def _read(stream: IO[bytes]) -> tuple[bytes, bytes]:
    header = stream.read(9)
    if len(header) < 9:
        raise EOFError
    data = stream.read(struct.unpack(">Q", header[1:])[0])
    return header[:1], data


def _serve(memory: int, max_bytes: int) -> None:
    """The worker: the vocabulary first, then one regex after another; each answer is the
    index's bytes or why there is none. Out of memory, it dies (Rust aborts)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    from outlines_core import Index, Vocabulary

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    vocabulary = Vocabulary.from_binary(_read(requests)[1])
    while True:
        try:
            regex = _read(requests)[1].decode()
        except EOFError:
            return
        try:
            data = Index(regex, vocabulary).__reduce__()[1][0]
        except (ValueError, TypeError, RuntimeError, MemoryError) as exc:
            _write(replies, _ERROR, str(exc)[:200].encode())
            continue
        if len(data) > max_bytes:
            _write(replies, _ERROR, f"its index is larger than {max_bytes:,} bytes".encode())
        else:
            _write(replies, _OK, data)


class GrammarCompiler:
    """Compiles regular expressions for one vocabulary in a bounded worker process."""

    def __init__(
        self,
        vocabulary: Any,
        seconds: float = COMPILE_SECONDS,
        max_bytes: int = MAX_INDEX_BYTES,
        memory: int = WORKER_MEMORY,
    ) -> None:
        self._vocabulary = bytes(vocabulary.__reduce__()[1][0])
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.memory = memory
        self._lock = threading.Lock()
        self._worker: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self.memory), str(self.max_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        _write(cast(IO[bytes], worker.stdin), _OK, self._vocabulary)
        return worker

    def stop(self) -> None:
        """End the worker (a later compile starts another)."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker.wait(timeout=10)
            for stream in (self._worker.stdin, self._worker.stdout):
                if stream is not None:
                    stream.close()
            self._worker = None

    def compile(self, regex: str) -> Any:
        """The outlines-core Index of ``regex``; InvalidInput past a bound."""
        from outlines_core import Index

        with self._lock:
            kind, value = self._ask(regex)
        if kind != _OK:
            why = value.decode(errors="replace")
            raise InvalidInput(f"response_format's schema is too complex to enforce: {why}")
        return Index.from_binary(value)

    def _ask(self, regex: str) -> tuple[bytes, bytes]:
        if self._worker is None or self._worker.poll() is not None:
            self._stop()
            self._worker = self._start()
        stdin, stdout = cast(IO[bytes], self._worker.stdin), cast(IO[bytes], self._worker.stdout)
        try:
            _write(stdin, _OK, regex.encode())
            if select.select([stdout], [], [], self.seconds)[0]:
                return _read(stdout)
            self._stop()
            return _ERROR, f"it did not compile within {self.seconds:g} s".encode()
        except (EOFError, OSError):  # the worker died: killed past its memory ceiling?
            code = self._worker.wait(timeout=10)
            self._stop()
            if code < 0:  # a signal (Rust aborts when an allocation fails)
                return _ERROR, b"it needs more memory than the compile worker may use"
            return _ERROR, f"the compile worker failed (exit {code})".encode()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
