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


def secure_channel(
    target: str, ca: Path, cert: Path | None = None, key: Path | None = None
) -> grpc.Channel:
    """A blocking channel that verifies the server against ``ca`` and presents cert/key."""
    return grpc.secure_channel(target, channel_credentials(ca, cert, key))
