"""Lab PKI: a per-run CA issuing short-lived ECDSA P-256 server certificates (issue 17).

Invariants:
- One CA per run: a fresh key each time, never reused between runs; its key only lives in
  memory and in the folder given to `write_pki` (the services' scratch folder, removed at stop).
- A server certificate names its host in DNS SANs and its addresses in IP SANs (clients check
  the IP SAN when they connect by address), is signed by the CA and valid from
  `now - SKEW_S` for `valid_s` seconds.
- The TLS contexts that use these files live in `appliances.tls` (stdlib only).
Files written by `write_pki(folder, servers)`: `ca.pem`, and per server `<name>.crt` and
`<name>.key` (the key 0600).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SKEW_S = 300  # certificates start this long before `now` (clock skew between hosts)
CA_VALID_S = 2 * 86400
SERVER_VALID_S = 86400


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ocalab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class LabCA:
    """A self-signed CA that issues server certificates."""

    def __init__(self, cn: str = "ocalab lab CA", valid_s: int = CA_VALID_S,
                 now: dt.datetime | None = None) -> None:
        now = now or _now()
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(cn)
        ski = x509.SubjectKeyIdentifier.from_public_key(self._key.public_key())
        self.cert = (x509.CertificateBuilder()
                     .subject_name(self.name).issuer_name(self.name)
                     .public_key(self._key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(seconds=SKEW_S))
                     .not_valid_after(now + dt.timedelta(seconds=valid_s))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                                  False, False), critical=True)
                     .add_extension(ski, critical=False)
                     .sign(self._key, hashes.SHA256()))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, dns: list[str] = (), ips: list[str] = (),
              valid_s: int = SERVER_VALID_S, now: dt.datetime | None = None) -> Issued:
        """A server certificate for `cn` with the DNS names and IP addresses as SANs."""
        if not dns and not ips:
            raise ValueError(f"certificate {cn!r} needs at least one DNS name or IP address")
        now = now or _now()
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(a))
                                                  for a in ips]
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (x509.CertificateBuilder()
                .subject_name(_name(cn)).issuer_name(self.name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(seconds=SKEW_S))
                .not_valid_after(now + dt.timedelta(seconds=valid_s))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                    ca_ski), critical=False)
                .sign(self._key, hashes.SHA256()))
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class ServerSpec:
    """Who gets a certificate: a file-safe name, its DNS names and its IP addresses."""
    name: str
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()


def write_pki(folder: Path, servers: list[ServerSpec], ca: LabCA | None = None,
              valid_s: int = SERVER_VALID_S) -> dict[str, tuple[Path, Path]]:
    """Write ca.pem and each server's <name>.crt/.key into `folder`; {name: (crt, key)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca = ca or LabCA()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    out: dict[str, tuple[Path, Path]] = {}
    for s in servers:
        if not s.name or "/" in s.name or s.name.startswith(".") or s.name in out:
            raise ValueError(f"bad or repeated server name {s.name!r}")
        issued = ca.issue(s.name, list(s.dns), list(s.ips), valid_s)
        crt, key = folder / f"{s.name}.crt", folder / f"{s.name}.key"
        crt.write_bytes(issued.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(issued.key_pem)
        out[s.name] = (crt, key)
    return out
