"""Free TCP ports on 127.0.0.1: the one helper the embedded runtime, the model process launcher
and the tests use."""

from __future__ import annotations

import socket


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, below: int = 55535, spaced: int = 0) -> list[int]:
    """``count`` distinct ports free now, each below ``below``; with ``spaced``, each port plus
    ``spaced`` is free too (SeaweedFS puts a server's gRPC port 10000 above its HTTP port)."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port >= below or port in ports or (spaced and not _bindable(port + spaced)):
            continue
        ports.append(port)
    return ports


def free_port(below: int = 55535) -> int:
    """One free port below ``below``."""
    return free_ports(1, below)[0]
