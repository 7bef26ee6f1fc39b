"""Rotated certificates reach a live SSL context (the predictor's HTTP server reloads this way)."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

from cryptography import x509

from medxiaohe_services.runtime.certs import write_dev_pki
from medxiaohe_services.runtime.tls import CertificateFiles, caller_name


def served_issuer(context: ssl.SSLContext, ca: Path, client: tuple[Path, Path]) -> str:
    """Handshake a client trusting ``ca`` with ``context``; the server certificate's issuer."""
    ours, theirs = socket.socketpair()
    server = context.wrap_socket(ours, server_side=True, do_handshake_on_connect=False)
    handshake = threading.Thread(target=server.do_handshake)
    handshake.start()
    trusting = ssl.create_default_context(cafile=str(ca))
    trusting.check_hostname = False
    trusting.load_cert_chain(*client)
    with trusting.wrap_socket(theirs) as tls:
        der = tls.getpeercert(binary_form=True)
    handshake.join(timeout=10)
    server.close()
    assert der is not None
    return x509.load_der_x509_certificate(der).issuer.rfc4514_string()


def test_a_live_context_takes_rotated_files_and_skips_a_half_rotation(tmp_path: Path) -> None:
    old = write_dev_pki(tmp_path / "old", clients=["ris"], ca_name="Old CA")
    new = write_dev_pki(tmp_path / "new", clients=["ris"], ca_name="New CA")
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    for name, source in (("tls.crt", old.server.cert), ("tls.key", old.server.key)):
        shutil.copy(source, mounted / name)
    shutil.copy(old.ca, mounted / "ca.crt")
    files = CertificateFiles(mounted / "tls.crt", mounted / "tls.key", mounted / "ca.crt")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(old.ca))
    context.load_cert_chain(old.server.cert, old.server.key)
    files.read()
    assert not files.reload(context)  # nothing changed
    old_client = (old.clients["ris"].cert, old.clients["ris"].key)
    assert served_issuer(context, old.ca, old_client) == "CN=Old CA"
    shutil.copy(new.server.cert, mounted / "tls.crt")  # the key is still the old one
    assert not files.reload(context)
    shutil.copy(new.server.key, mounted / "tls.key")
    shutil.copy(new.ca, mounted / "ca.crt")
    assert files.reload(context)
    new_client = (new.clients["ris"].cert, new.clients["ris"].key)
    assert served_issuer(context, new.ca, new_client) == "CN=New CA"


def test_a_uri_san_names_the_caller_when_it_is_the_only_one() -> None:
    assert caller_name(["spiffe://h/ns/ris"], ["ris-gateway"]) == "spiffe://h/ns/ris"
    assert caller_name([], ["ris-gateway"]) == "ris-gateway"
    assert caller_name(["spiffe://h/a", "spiffe://h/b"], ["ris"]) == ""  # ambiguous: no one


def test_the_predictor_guard_lets_only_http_and_lifespan_through() -> None:
    """A websocket (or any other) scope used to reach KServe's app unauthenticated."""
    import asyncio

    from medxiaohe_services.model.guard import Guard

    reached: list[str] = []

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        reached.append(str(scope["type"]))

    guard = Guard(app, allow={}, tokens={}, max_body=1, max_pending=1)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    for kind in ("websocket", "anything"):
        asyncio.run(guard({"type": kind, "path": "/v2/models"}, receive, send))
    assert reached == []
    assert sent == [{"type": "websocket.close", "code": 1008}]
    asyncio.run(guard({"type": "lifespan"}, receive, send))
    assert reached == ["lifespan"]
