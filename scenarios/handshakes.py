"""Connection set-up figures of one arm and their check against round trips (pure, issue 17).

Two sources. The players' rows (chunks: conn, connect_ms, tls_ms; appliances.conntiming) give
what viewers paid under load: only new connections from a host to its own main server count.
The TLS probe of paths.csv (emulation.connect_probe --tls-ca, per viewer host to its main server,
on a quiet machine like the ping and connect probes) gives the protocol's cost: TCP connect,
full and resumed handshakes, medians of a few rounds.

The check (on the probe): TLS 1.3's full handshake costs one round trip (ClientHello out, the
server's flight back; the client's Finished leaves with the request). A resumed one costs one
too: CPython's ssl has no 0-RTT early data, so resumption saves the certificate work, not a
round trip (0 extra RTTs over the full handshake). Both parts are measured, none is assumed:
`fit` regresses the probe's handshakes on the path RTT over every viewer host of the run (paths
from 7 to 104 ms): the slope is the round trips, the intercept the handshake's compute (crypto
and both processes' scheduling). An arm passes when each of its medians, less that compute, is
one path RTT within max(0.5 ms, 5%) (the fidelity gate's) + |median(probe_connect_ms - rtt_ms)|
(what the probe's clock and the emulator add to one round trip: the TCP connect is exactly one).
"""
from __future__ import annotations

import pandas as pd

FIELDS = ("tcp_connect_ms", "handshake_ms", "resumed_ms", "handshakes", "resumed",
          "probe_full_ms", "probe_resumed_ms", "handshake_rtts", "handshake_tol_ms", "handshake_check",
          "fit_full_rtts", "fit_full_compute_ms", "fit_resumed_rtts", "fit_resumed_compute_ms")
PROBE = ("probe_connect_ms", "probe_full_ms", "probe_resumed_ms")
FIT_MIN_SPREAD_MS = 5.0  # the fit needs paths at least this far apart in RTT


def _probe_rows(paths: pd.DataFrame) -> pd.DataFrame:
    if paths.empty or not set(PROBE) <= set(paths):
        return pd.DataFrame(columns=["rtt_ms", *PROBE])
    return paths[["rtt_ms", *PROBE]].apply(pd.to_numeric, errors="coerce").dropna()


def fit(paths: pd.DataFrame) -> dict:
    """Least squares of the probe's full and resumed handshakes on rtt_ms over `paths` (every arm
    of a run): fit_<kind>_rtts (slope: round trips) and fit_<kind>_compute_ms (intercept); {}
    without probe rows or with paths less than FIT_MIN_SPREAD_MS apart."""
    import numpy as np
    p = _probe_rows(paths)
    if len(p) < 3 or float(p["rtt_ms"].max() - p["rtt_ms"].min()) < FIT_MIN_SPREAD_MS:
        return {}
    out = {}
    for kind in ("full", "resumed"):
        slope, intercept = np.polyfit(p["rtt_ms"], p[f"probe_{kind}_ms"], 1)
        out[f"fit_{kind}_rtts"], out[f"fit_{kind}_compute_ms"] = round(float(slope), 3), round(float(intercept), 2)
    return out


def _median(xs: pd.Series, digits: int = 2):
    xs = pd.to_numeric(xs, errors="coerce").dropna()
    return round(float(xs.median()), digits) if len(xs) else ""


def new_connections(chunks: pd.DataFrame, paths: pd.DataFrame) -> pd.DataFrame:
    """The chunks that opened a connection to their host's main server."""
    if chunks.empty or "conn" not in chunks or paths.empty:
        return pd.DataFrame(columns=["conn", "connect_ms", "tls_ms"])
    new = chunks[chunks["conn"].isin(("tcp", "tls", "tls_resumed"))]
    return new.merge(paths[["host", "server"]], on=["host", "server"], how="inner")


def arm_figures(chunks: pd.DataFrame, paths: pd.DataFrame, fitted: dict) -> dict:
    """The players' tcp_connect_ms, handshake_ms (full TLS), resumed_ms and their counts; the
    probe's medians and, given the run's `fit`, the round-trip check (handshake_rtts: the full
    handshake less its compute, in path RTTs); "" where the arm has no such figure (plain HTTP:
    every handshake figure "")."""
    out = {k: "" for k in FIELDS}
    c = new_connections(chunks, paths)
    if not c.empty:
        full, resumed = c[c["conn"] == "tls"], c[c["conn"] == "tls_resumed"]
        out.update(tcp_connect_ms=_median(c["connect_ms"]), handshakes=len(full), resumed=len(resumed),
                   handshake_ms=_median(full["tls_ms"]), resumed_ms=_median(resumed["tls_ms"]))
    p = _probe_rows(paths)
    if p.empty:
        return out
    out.update(probe_full_ms=_median(p["probe_full_ms"]), probe_resumed_ms=_median(p["probe_resumed_ms"]))
    if not fitted:
        return out
    rtt = float(p["rtt_ms"].median())
    tol = max(0.5, 0.05 * rtt) + abs(float((p["probe_connect_ms"] - p["rtt_ms"]).median()))
    rounds = {k: float((p[f"probe_{k}_ms"] - fitted[f"fit_{k}_compute_ms"]).median()) for k in ("full", "resumed")}
    ok = all(abs(v - rtt) <= tol for v in rounds.values())
    out.update(fitted, handshake_rtts=round(rounds["full"] / rtt, 2) if rtt else "",
               handshake_tol_ms=round(tol, 2), handshake_check="ok" if ok else "off")
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
        probe = (f"; quiet probe: full {r['probe_full_ms']} ms, resumed {r['probe_resumed_ms']} ms, "
                 f"less compute {r['handshake_rtts']} RTT (rtt {r['rtt_ms']} ms), each 1 RTT within "
                 f"{r['handshake_tol_ms']} ms: {r['handshake_check']}"
                 if r.get("handshake_check") not in ("", None) else "")
        out.append(f"TLS 1.3 handshake {r['arm']}: players {r['handshake_ms']} ms x{r['handshakes']} "
                   f"(tcp connect {r['tcp_connect_ms']} ms{resumed}){probe}")
    f = have[0]
    if f.get("fit_full_rtts") not in ("", None):
        out.append(f"TLS 1.3 handshakes over every path (quiet probe): full = {f['fit_full_rtts']} x RTT + "
                   f"{f['fit_full_compute_ms']} ms, resumed = {f['fit_resumed_rtts']} x RTT + "
                   f"{f['fit_resumed_compute_ms']} ms (one round trip each; no 0-RTT in CPython's ssl)")
    by = {r["arm"]: float(r["handshake_ms"]) for r in have}
    order = [a for a in ("embedded", "ixp", "origin") if a in by]
    if len(order) > 1:
        held = all(by[a] < by[b] for a, b in zip(order, order[1:]))
        out.append(f"handshake_ms {' < '.join(order)}: {'yes' if held else 'NO'}")
    return out
