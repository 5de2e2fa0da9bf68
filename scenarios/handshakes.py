"""Connection set-up figures of one arm and their check against round trips (pure, issue 17).

Two sources. The players' rows (chunks: conn, connect_ms, tls_ms; appliances.conntiming) give
what viewers paid under load: only new connections from a host to its own main server count.
The TLS probe of paths.csv (emulation.connect_probe --tls-ca, per viewer host to its main server,
on a quiet machine like the ping and connect probes) gives the protocol's cost: TCP connect,
full and resumed handshakes, medians of a few rounds.

The check (on the probe): TLS 1.3's full handshake costs one round trip (ClientHello out, the
server's flight back; the client's Finished leaves with the request). A resumed one costs one
too: CPython's ssl has no 0-RTT early data, so resumption saves the certificate work, not a
round trip (0 extra RTTs over the full handshake). The tolerance is measured: the probe's TCP
connect is exactly one round trip too, so |median(probe_connect_ms - rtt_ms)| is what the
probe's clock and the emulator add to one round trip; to it come the fidelity gate's per-RTT
tolerance max(0.5 ms, 5%) and HANDSHAKE_CPU_MS for the crypto work of both ends (a full
handshake on loopback, CPU and all, takes about 1 ms here).
"""
from __future__ import annotations

import pandas as pd

HANDSHAKE_CPU_MS = 2.0  # at most this much client+server crypto work in one handshake (ECDSA P-256)
FIELDS = ("tcp_connect_ms", "handshake_ms", "resumed_ms", "handshakes", "resumed",
          "probe_full_ms", "probe_resumed_ms", "handshake_rtts", "handshake_tol_ms", "handshake_check")
PROBE = ("probe_connect_ms", "probe_full_ms", "probe_resumed_ms")


def _median(xs: pd.Series, digits: int = 2):
    xs = pd.to_numeric(xs, errors="coerce").dropna()
    return round(float(xs.median()), digits) if len(xs) else ""


def new_connections(chunks: pd.DataFrame, paths: pd.DataFrame) -> pd.DataFrame:
    """The chunks that opened a connection to their host's main server."""
    if chunks.empty or "conn" not in chunks or paths.empty:
        return pd.DataFrame(columns=["conn", "connect_ms", "tls_ms"])
    new = chunks[chunks["conn"].isin(("tcp", "tls", "tls_resumed"))]
    return new.merge(paths[["host", "server"]], on=["host", "server"], how="inner")


def arm_figures(chunks: pd.DataFrame, paths: pd.DataFrame) -> dict:
    """The players' tcp_connect_ms, handshake_ms (full TLS), resumed_ms and their counts; the
    probe's medians and the round-trip check (handshake_rtts: probe_full_ms / rtt_ms); "" where
    the arm has no such figure (plain HTTP: every handshake figure "")."""
    out = {k: "" for k in FIELDS}
    c = new_connections(chunks, paths)
    if not c.empty:
        full, resumed = c[c["conn"] == "tls"], c[c["conn"] == "tls_resumed"]
        out.update(tcp_connect_ms=_median(c["connect_ms"]), handshakes=len(full), resumed=len(resumed),
                   handshake_ms=_median(full["tls_ms"]), resumed_ms=_median(resumed["tls_ms"]))
    if paths.empty or not set(PROBE) <= set(paths):
        return out
    p = paths[["rtt_ms", *PROBE]].apply(pd.to_numeric, errors="coerce").dropna()
    if p.empty:
        return out
    rtt = float(p["rtt_ms"].median())
    tol = max(0.5, 0.05 * rtt) + abs(float((p["probe_connect_ms"] - p["rtt_ms"]).median())) + HANDSHAKE_CPU_MS
    extra = [abs(float((p[k] - p["rtt_ms"]).median())) for k in ("probe_full_ms", "probe_resumed_ms")]
    out.update(probe_full_ms=_median(p["probe_full_ms"]), probe_resumed_ms=_median(p["probe_resumed_ms"]),
               handshake_rtts=round(float(p["probe_full_ms"].median()) / rtt, 2) if rtt else "",
               handshake_tol_ms=round(tol, 2), handshake_check="ok" if max(extra) <= tol else "off")
    return out


def lines(rows: list[dict]) -> list[str]:
    """One headline line per arm with handshake figures, then the order check. Pure."""
    have = [r for r in rows if r.get("handshake_ms") not in ("", None)]
    if not have:
        return []
    out = []
    for r in have:
        resumed = (f", resumed {r['resumed_ms']} ms x{r['resumed']}"
                   if r.get("resumed_ms") not in ("", None) else "")
        probe = (f"; quiet probe: full {r['probe_full_ms']} ms = {r['handshake_rtts']} RTT "
                 f"(rtt {r['rtt_ms']} ms), resumed {r['probe_resumed_ms']} ms, each 1 RTT within "
                 f"{r['handshake_tol_ms']} ms: {r['handshake_check']}"
                 if r.get("handshake_check") not in ("", None) else "")
        out.append(f"TLS 1.3 handshake {r['arm']}: players {r['handshake_ms']} ms x{r['handshakes']} "
                   f"(tcp connect {r['tcp_connect_ms']} ms{resumed}){probe}")
    by = {r["arm"]: float(r["handshake_ms"]) for r in have}
    order = [a for a in ("embedded", "ixp", "origin") if a in by]
    if len(order) > 1:
        held = all(by[a] < by[b] for a, b in zip(order, order[1:]))
        out.append(f"handshake_ms {' < '.join(order)}: {'yes' if held else 'NO'}")
    return out
