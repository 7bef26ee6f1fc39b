"""Free TCP ports on 127.0.0.1: the one helper the embedded runtime, the model process launcher
and the tests use."""

from __future__ import annotations

import socket
from collections.abc import Iterable


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(
    count: int = 1, below: int = 55535, spaced: int = 0, beside: Iterable[int] = ()
) -> list[int]:
    """``count`` distinct ports free now, each below ``below``.

    With ``spaced``, each port plus ``spaced`` is free too, and no port or port plus ``spaced``
    is another's, ``beside``'s included: SeaweedFS puts a server's gRPC port 10000 above its
    HTTP port and refuses to start when one of its ports is another's gRPC port."""
    offsets = (0, spaced) if spaced else (0,)
    taken = {p + d for p in beside for d in offsets}  # the ports and gRPC ports claimed so far
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        claims = {port + d for d in offsets}
        if port >= below or claims & taken or (spaced and not _bindable(port + spaced)):
            continue
        ports.append(port)
        taken |= claims
    return ports


def free_port(below: int = 55535) -> int:
    """One free port below ``below``."""
    return free_ports(1, below)[0]
