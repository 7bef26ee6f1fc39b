"""Free TCP ports on 127.0.0.1."""

from __future__ import annotations

import socket


def free_port(below: int = 55535) -> int:
    """A port that is free now and below ``below`` (SeaweedFS adds 10000 for its gRPC ports)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port < below:
            return port
