"""Client channels with mTLS, for the demo, tests and operators' scripts."""

from __future__ import annotations

from pathlib import Path

import grpc


def channel_credentials(
    ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


# A client pings an idle connection every 60 s (the servers allow one every 30 s), so a
# connection a load balancer or a dead peer dropped is noticed before the next call.
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def secure_channel(
    target: str, ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.Channel:
    """A blocking channel that verifies the server against ``ca``, presents cert/key and keeps
    its connection alive."""
    return grpc.secure_channel(target, channel_credentials(ca, cert, key), options=KEEPALIVE)
