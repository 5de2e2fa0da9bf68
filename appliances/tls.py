"""TLS contexts of the appliances (stdlib only; the lab CA that makes the files is harness.pki).

Invariants:
- Servers and clients speak TLS 1.3 only; server contexts keep OpenSSL's default of sending
  session tickets after the handshake, so reconnecting clients can resume.
- A client context trusts only the given CA file and checks the server's name or IP SAN.
"""
from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A TLS 1.3-only server context (session tickets on: OpenSSL sends them by default)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx


def client_context(ca_file: str | Path) -> ssl.SSLContext:
    """A TLS 1.3 client context trusting only `ca_file`, checking the name or IP SAN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


def server_context_from_args(args) -> ssl.SSLContext | None:
    """The context for `--tls-cert/--tls-key`, or None (plain HTTP) when neither is given."""
    cert, key = getattr(args, "tls_cert", None), getattr(args, "tls_key", None)
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    return server_context(cert, key)


def add_server_args(p) -> None:
    """The serving flags: --tls-cert PATH --tls-key PATH (default: plain HTTP)."""
    p.add_argument("--tls-cert", default=None, metavar="PATH",
                   help="PEM certificate: serve TLS 1.3 only (default plain HTTP)")
    p.add_argument("--tls-key", default=None, metavar="PATH", help="PEM key of --tls-cert")
