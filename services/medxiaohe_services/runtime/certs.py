"""A development PKI: one CA, a server certificate and client certificates (`medxiaohe certs`).

Client identity is the certificate's common name; the allow-lists in Settings name it.
For production, issue certificates from the hospital's PKI or cert-manager instead.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEV_CLIENT = "medxiaohe-dev"


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    ca: Path
    server: CertPaths
    clients: dict[str, CertPaths]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server_names: list[str] | None = None,
    uri: str = "",
    days: int = 365,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer if not ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server_names is not None:
        sans: list[x509.GeneralName] = []
        for host in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        if uri:  # e.g. a SPIFFE id: then it, not the common name, is the caller
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
    return builder.sign(issuer_key, hashes.SHA256())


def write_dev_pki(
    out: Path,
    *,
    clients: list[str] | None = None,
    hosts: list[str] | None = None,
    ca_name: str = "MedXIAOHE dev CA",
    uris: dict[str, str] | None = None,
) -> DevPki:
    """Write ca.pem, server.pem/server-key.pem and <client>.pem/<client>-key.pem into ``out``;
    ``uris`` gives some clients a URI subject alternative name (their identity then)."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(ca_name, ca_key, x509.Name([]), ca_key, ca=True, days=3650)
    ca_path = out / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out / "ca-key.pem", ca_key)

    def leaf(stem: str, cn: str, server_names: list[str] | None) -> CertPaths:
        key = ec.generate_private_key(ec.SECP256R1())
        uri = (uris or {}).get(cn, "")
        cert = _issue(cn, key, ca_cert.subject, ca_key, server_names=server_names, uri=uri)
        paths = CertPaths(out / f"{stem}.pem", out / f"{stem}-key.pem")
        paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(paths.key, key)
        return paths

    names = ["localhost", "127.0.0.1", *(hosts or [])]
    server = leaf("server", "medxiaohe-server", names)
    return DevPki(
        ca=ca_path,
        server=server,
        clients={name: leaf(name, name, None) for name in (clients or [DEV_CLIENT])},
    )


def load_dev_pki(out: Path) -> DevPki | None:
    """The PKI previously written to ``out``, or None when it is incomplete."""
    server = CertPaths(out / "server.pem", out / "server-key.pem")
    clients = {
        p.stem: CertPaths(p, p.with_name(f"{p.stem}-key.pem"))
        for p in sorted(out.glob("*.pem"))
        if not p.stem.endswith("-key") and p.stem not in ("ca", "server")
    }
    paths = [out / "ca.pem", server.cert, server.key] + [c.key for c in clients.values()]
    if not clients or not all(p.is_file() for p in paths):
        return None
    return DevPki(ca=out / "ca.pem", server=server, clients=clients)
