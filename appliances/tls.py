"""TLS contexts of the appliances (stdlib only; the lab CA that makes the files is harness.pki).

Invariants:
- Servers and clients speak TLS 1.3 only; server contexts keep OpenSSL's default of sending
  session tickets after the handshake, so reconnecting clients can resume.
- A client context trusts only the given CA file and checks the server's name or IP SAN.
"""
from __future__ import annotations

import ssl
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

# Called with the new SSLObject when a ResumingClientContext starts a client handshake (the TCP
# connection is up): appliances.conntiming sets it per request to split connect from TLS time.
ON_TLS_START: ContextVar[Callable[[ssl.SSLObject], None] | None] = ContextVar(
    "ocalab_on_tls_start", default=None)


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


def _ticketed_session(obj: ssl.SSLObject) -> ssl.SSLSession | None:
    """The session of a past connection if it carries a ticket to resume with, else None."""
    try:
        session = obj.session
    except ValueError:  # OpenSSL cannot encode the session of a failed handshake (i2d failed)
        return None
    return session if session is not None and session.has_ticket else None


class ResumingClientContext(ssl.SSLContext):
    """A client context that offers each server host the newest ticketed TLS session it got from
    it, so a player reconnecting through aiohttp (which has no session parameter) resumes.

    Invariants: sessions are keyed by server_hostname (one server per address in the emulated
    network; a ticket offered to the wrong server only costs a full handshake); the context keeps
    at most SESSION_OBJS_PER_HOST recent connections per host to read tickets from.
    """
    SESSION_OBJS_PER_HOST = 8

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if server_side:
            return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        recent = self.__dict__.setdefault("_recent", {}).setdefault(server_hostname, [])
        if session is None:
            session = next((s for s in map(_ticketed_session, reversed(recent)) if s), None)
        obj = super().wrap_bio(incoming, outgoing, False, server_hostname, session)
        recent.append(obj)
        del recent[:-self.SESSION_OBJS_PER_HOST]
        hook = ON_TLS_START.get()
        if hook is not None:
            hook(obj)
        return obj


def resuming_client_context(ca_file: str | Path | None) -> ResumingClientContext:
    """client_context(ca_file) that also resumes TLS sessions across connections (aiohttp);
    ca_file None: the system's CAs."""
    ctx = ResumingClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if ca_file is None:
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx
