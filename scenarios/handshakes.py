"""Connection set-up figures of one arm and their check against round trips (pure, issue 17).

Inputs: the arm's chunks (players' rows: conn, connect_ms, tls_ms; appliances.conntiming) and
paths (per viewer host: its main server and the ping RTT to it on a quiet machine). Only new
connections from a host to its own main server count, each paired with that path's RTT.

The check: TLS 1.3's full handshake costs one round trip (ClientHello out, the server's flight
back; the client's Finished leaves with the request). A resumed one costs one too: CPython's ssl
has no 0-RTT early data, so resumption saves the certificate work, not a round trip (0 extra
RTTs over the full handshake). The tolerance is measured, not guessed: the TCP connect of the
same connections is exactly one round trip too, so |median(connect_ms - rtt_ms)| is what the
players' own clock, the emulator and the loaded machine add to one round trip; to it come the
fidelity gate's per-RTT tolerance max(0.5 ms, 5%) and HANDSHAKE_CPU_MS for the crypto work of
both ends (a full handshake on loopback, CPU and all, takes about 1 ms here).
"""
from __future__ import annotations

import pandas as pd

HANDSHAKE_CPU_MS = 2.0  # at most this much client+server crypto work in one handshake (ECDSA P-256)
FIELDS = ("tcp_connect_ms", "handshake_ms", "handshake_rtts", "resumed_ms", "handshakes",
          "resumed", "handshake_tol_ms", "handshake_check")


def _median(xs: pd.Series, digits: int = 2):
    xs = pd.to_numeric(xs, errors="coerce").dropna()
    return round(float(xs.median()), digits) if len(xs) else ""


def new_connections(chunks: pd.DataFrame, paths: pd.DataFrame) -> pd.DataFrame:
    """The chunks that opened a connection to their host's main server, with that path's rtt_ms."""
    if chunks.empty or "conn" not in chunks or paths.empty:
        return pd.DataFrame(columns=["conn", "connect_ms", "tls_ms", "rtt_ms"])
    new = chunks[chunks["conn"].isin(("tcp", "tls", "tls_resumed"))]
    main = paths[["host", "server", "rtt_ms"]]
    out = new.merge(main, on=["host", "server"], how="inner")
    for c in ("connect_ms", "tls_ms", "rtt_ms"):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return out


def arm_figures(chunks: pd.DataFrame, paths: pd.DataFrame) -> dict:
    """tcp_connect_ms, handshake_ms (full TLS), resumed_ms, their counts, handshake_rtts (full
    handshake in path RTTs) and the tolerance and verdict of the round-trip check; "" where the
    arm has no such connection (plain HTTP: handshake figures "")."""
    c = new_connections(chunks, paths)
    full, resumed = c[c["conn"] == "tls"], c[c["conn"] == "tls_resumed"]
    out = {k: "" for k in FIELDS}
    if c.empty:
        return out
    out["tcp_connect_ms"] = _median(c["connect_ms"])
    out["handshakes"], out["resumed"] = len(full), len(resumed)
    if full.empty:
        return out
    rtt = float(full["rtt_ms"].median())
    overhead_ms = abs(float((c["connect_ms"] - c["rtt_ms"]).median()))
    tol = max(0.5, 0.05 * rtt) + overhead_ms + HANDSHAKE_CPU_MS
    full_ms = float(full["tls_ms"].median())
    out.update(handshake_ms=round(full_ms, 2), handshake_rtts=round(full_ms / rtt, 2) if rtt else "",
               handshake_tol_ms=round(tol, 2))
    ok = abs(float((full["tls_ms"] - full["rtt_ms"]).median())) <= tol
    if not resumed.empty:
        out["resumed_ms"] = _median(resumed["tls_ms"])
        ok = ok and abs(float((resumed["tls_ms"] - resumed["rtt_ms"]).median())) <= tol
    out["handshake_check"] = "ok" if ok else "off"
    return out


def lines(rows: list[dict]) -> list[str]:
    """One headline line per arm with handshake figures, then the order check. Pure."""
    have = [r for r in rows if r.get("handshake_ms") not in ("", None)]
    if not have:
        return []
    out = []
    for r in have:
        resumed = (f", resumed {r['resumed_ms']} ms over {r['resumed']} connections"
                   if r.get("resumed_ms") not in ("", None) else ", no resumed connections")
        out.append(f"TLS 1.3 handshake {r['arm']}: {r['handshake_ms']} ms = {r['handshake_rtts']} RTT "
                   f"(rtt {r['rtt_ms']} ms, tcp connect {r['tcp_connect_ms']} ms, "
                   f"{r['handshakes']} full{resumed}); 1 RTT each within "
                   f"{r['handshake_tol_ms']} ms: {r['handshake_check']}")
    by = {r["arm"]: float(r["handshake_ms"]) for r in have}
    order = [a for a in ("embedded", "ixp", "origin") if a in by]
    if len(order) > 1:
        held = all(by[a] < by[b] for a, b in zip(order, order[1:]))
        out.append(f"handshake_ms {' < '.join(order)}: {'yes' if held else 'NO'}")
    return out
