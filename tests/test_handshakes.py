"""scenarios.handshakes (pure): the players' new connections to each host's main server; the
quiet probe's handshakes regressed on the path RTT (round trips and compute) and each arm's
judged as one round trip within the measured tolerance."""
import pandas as pd

from scenarios import handshakes


def paths(full=12.9, resumed=12.4, connect=10.35):
    return pd.DataFrame([{"host": h, "server": "oca1", "rtt_ms": 10.0, "probe_connect_ms": connect,
                          "probe_full_ms": full, "probe_resumed_ms": resumed} for h in ("h1", "h2")])


RUN = pd.DataFrame([{"rtt_ms": r, "probe_connect_ms": r, "probe_full_ms": r + 3.0,
                     "probe_resumed_ms": r + 2.5} for r in (7.0, 27.0, 104.0)])
FIT = {"fit_full_rtts": 1.0, "fit_full_compute_ms": 3.0, "fit_resumed_rtts": 1.0,
       "fit_resumed_compute_ms": 2.5}


def test_fit_gives_round_trips_and_compute():
    assert handshakes.fit(RUN) == FIT
    two_rtts = RUN.assign(probe_full_ms=RUN["rtt_ms"] * 2 + 3.0)
    assert handshakes.fit(two_rtts)["fit_full_rtts"] == 2.0
    assert handshakes.fit(paths()) == {}  # one RTT: round trips and compute cannot be told apart


def chunk(host, server, conn, connect="", tls=""):
    return {"host": host, "server": server, "conn": conn, "connect_ms": connect, "tls_ms": tls}


CHUNKS = pd.DataFrame([chunk("h1", "oca1", "tls", 10.4, 12.9), chunk("h1", "oca1", "reused"),
                       chunk("h2", "oca1", "tls_resumed", 10.3, 11.6),
                       chunk("h2", "origin", "tls", 80.0, 81.0)])  # not h2's main server


def test_players_figures_and_a_one_rtt_probe_pass():
    f = handshakes.arm_figures(CHUNKS, paths(), FIT)
    assert (f["handshakes"], f["resumed"], f["handshake_ms"], f["resumed_ms"]) == (1, 1, 12.9, 11.6)
    assert f["tcp_connect_ms"] == 10.35 and f["probe_full_ms"] == 12.9 and f["handshake_rtts"] == 0.99
    assert f["handshake_tol_ms"] == 0.85 and f["handshake_check"] == "ok"
    assert handshakes.arm_figures(CHUNKS, paths(), {})["handshake_check"] == ""  # no fit: no verdict


def test_two_round_trips_fail_the_check():
    assert handshakes.arm_figures(CHUNKS, paths(full=22.9), FIT)["handshake_check"] == "off"
    assert handshakes.arm_figures(CHUNKS, paths(resumed=22.4), FIT)["handshake_check"] == "off"
    # a slow probe clock widens the tolerance by what it adds to the TCP connect
    assert handshakes.arm_figures(CHUNKS, paths(full=22.9, connect=20.0), FIT)["handshake_check"] == "ok"


def test_plain_http_and_old_tables_have_no_handshake_figures():
    plain = pd.DataFrame([{"host": "h1", "server": "oca1", "rtt_ms": 10.0}])
    f = handshakes.arm_figures(pd.DataFrame([chunk("h1", "oca1", "tcp", 10.2)]), plain, FIT)
    assert f["tcp_connect_ms"] == 10.2 and f["handshake_ms"] == "" and f["handshake_check"] == ""
    old = handshakes.arm_figures(pd.DataFrame([{"host": "h1", "server": "oca1"}]), plain, {})
    assert set(old.values()) == {""}


def test_lines_check_the_order_of_arms():
    rows = [{"arm": a, **handshakes.arm_figures(CHUNKS, paths(), FIT), "rtt_ms": 10.0, "handshake_ms": ms}
            for a, ms in (("origin", 60.0), ("ixp", 12.0), ("embedded", 3.0))]
    out = handshakes.lines(rows)
    assert out[-1] == "handshake_ms embedded < ixp < origin: yes" and len(out) == 5
    assert "less compute 0.99 RTT" in out[0] and out[0].endswith(": ok")
    assert "full = 1.0 x RTT + 3.0 ms, resumed = 1.0 x RTT + 2.5 ms" in out[3]
    rows[1]["handshake_ms"] = 70.0
    assert handshakes.lines(rows)[-1].endswith("NO")
    assert handshakes.lines([{"arm": "origin", "handshake_ms": ""}]) == []
