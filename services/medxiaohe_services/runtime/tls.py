"""TLS material that can change under a running server, and who a verified client is.

cert-manager (or any rotation) rewrites the mounted certificate, key and CA in place; servers
read them again when they change, without a restart: gRPC servers through dynamic credentials
(looked at on every new connection), the predictor's HTTP server by reloading its SSL context.
A half-rotated pair (a new certificate beside the old key) is not loaded until both match.

A client's identity is its certificate's URI subject alternative name when it has exactly one
(a SPIFFE id, e.g. ``spiffe://hospital.example/ns/ris/sa/gateway``), its common name otherwise;
allow lists name it.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def caller_name(uris: Sequence[str], common_names: Sequence[str]) -> str:
    """The caller a verified certificate names: its one URI SAN, else its common name; "" when
    it names several URIs (which one would be ambiguous) or nothing."""
    if uris:
        return uris[0] if len(uris) == 1 else ""
    return common_names[0] if common_names else ""


class CertificateFiles:
    """A server's certificate chain, key and client CA, read again when any of them changes."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.cert, self.key, self.ca = cert, key, ca
        self._stamp: tuple[tuple[int, int], ...] = ()

    def _now(self) -> tuple[tuple[int, int], ...]:
        stats = [p.stat() for p in (self.cert, self.key, self.ca)]
        return tuple((s.st_mtime_ns, s.st_size) for s in stats)

    def changed(self) -> bool:
        """Whether the files differ from what ``read`` last returned (a missing file: no)."""
        try:
            return self._now() != self._stamp
        except OSError:
            return False

    def read(self) -> tuple[bytes, bytes, bytes] | None:
        """(chain, key, CA) when the key matches the certificate; None while they disagree
        (a rotation half done) or a file is missing."""
        try:
            stamp = self._now()
            chain, key, ca = (p.read_bytes() for p in (self.cert, self.key, self.ca))
            public = serialization.load_pem_private_key(key, None).public_key()
            leaf = x509.load_pem_x509_certificate(chain).public_key()
        except (OSError, ValueError, TypeError):
            return None
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if public.public_bytes(*der) != leaf.public_bytes(*der):
            return None
        self._stamp = stamp
        return chain, key, ca

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """mTLS server credentials that pick up new files on the next connection."""
        first = self.read()
        if first is None:
            raise ValueError("the TLS certificate, key and CA cannot be read, or do not match")

        def configuration(material: tuple[bytes, bytes, bytes]) -> object:
            chain, key, ca = material
            return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

        def fetch() -> object | None:
            if not self.changed():
                return None
            material = self.read()
            return configuration(material) if material else None

        return grpc.dynamic_ssl_server_credentials(
            configuration(first), fetch, require_client_authentication=True
        )

    def reload(self, context: ssl.SSLContext) -> bool:
        """Load new files into a live SSL context (new handshakes use them); whether it did."""
        if not self.changed() or self.read() is None:
            return False
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(cafile=str(self.ca))
        return True


class ClientCertProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with the caller the verified client certificate names (its one
    URI SAN, else its common name) in each request's scope (``extensions.tls.client_cn``);
    uvicorn itself does not pass it on."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        cert = (tls.getpeercert() if tls is not None else None) or {}
        names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
        uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
        caller = caller_name(uris, names)
        if caller:
            inner = self.app

            async def app(scope: Any, receive: Any, send: Any) -> None:
                scope.setdefault("extensions", {})["tls"] = {"client_cn": caller}
                await inner(scope, receive, send)

            self.app = app
