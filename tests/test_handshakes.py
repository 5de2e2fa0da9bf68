"""scenarios.handshakes (pure): the players' new connections to each host's main server, and the
quiet probe's full and resumed TLS handshakes judged as one round trip within the measured
tolerance."""
import pandas as pd

from scenarios import handshakes


def paths(full=10.9, resumed=10.6, connect=10.35):
    return pd.DataFrame([{"host": h, "server": "oca1", "rtt_ms": 10.0, "probe_connect_ms": connect,
                          "probe_full_ms": full, "probe_resumed_ms": resumed} for h in ("h1", "h2")])


def chunk(host, server, conn, connect="", tls=""):
    return {"host": host, "server": server, "conn": conn, "connect_ms": connect, "tls_ms": tls}


CHUNKS = pd.DataFrame([chunk("h1", "oca1", "tls", 10.4, 12.9), chunk("h1", "oca1", "reused"),
                       chunk("h2", "oca1", "tls_resumed", 10.3, 11.6),
                       chunk("h2", "origin", "tls", 80.0, 81.0)])  # not h2's main server


def test_players_figures_and_a_one_rtt_probe_pass():
    f = handshakes.arm_figures(CHUNKS, paths())
    assert (f["handshakes"], f["resumed"], f["handshake_ms"], f["resumed_ms"]) == (1, 1, 12.9, 11.6)
    assert f["tcp_connect_ms"] == 10.35 and f["probe_full_ms"] == 10.9 and f["handshake_rtts"] == 1.09
    assert f["handshake_tol_ms"] == round(0.5 + 0.35 + handshakes.HANDSHAKE_CPU_MS, 2)
    assert f["handshake_check"] == "ok"


def test_two_round_trips_fail_the_check():
    assert handshakes.arm_figures(CHUNKS, paths(full=20.5))["handshake_check"] == "off"
    assert handshakes.arm_figures(CHUNKS, paths(resumed=20.5))["handshake_check"] == "off"
    # a slow probe clock widens the tolerance by what it adds to the TCP connect
    assert handshakes.arm_figures(CHUNKS, paths(full=20.5, connect=18.0))["handshake_check"] == "ok"


def test_plain_http_and_old_tables_have_no_handshake_figures():
    plain = pd.DataFrame([{"host": "h1", "server": "oca1", "rtt_ms": 10.0}])
    f = handshakes.arm_figures(pd.DataFrame([chunk("h1", "oca1", "tcp", 10.2)]), plain)
    assert f["tcp_connect_ms"] == 10.2 and f["handshake_ms"] == "" and f["handshake_check"] == ""
    old = handshakes.arm_figures(pd.DataFrame([{"host": "h1", "server": "oca1"}]), plain)
    assert set(old.values()) == {""}


def test_lines_check_the_order_of_arms():
    rows = [{"arm": a, **handshakes.arm_figures(CHUNKS, paths()), "rtt_ms": 10.0, "handshake_ms": ms}
            for a, ms in (("origin", 60.0), ("ixp", 12.0), ("embedded", 3.0))]
    out = handshakes.lines(rows)
    assert out[-1] == "handshake_ms embedded < ixp < origin: yes" and len(out) == 4
    assert "quiet probe: full 10.9 ms = 1.09 RTT" in out[0] and out[0].endswith(": ok")
    rows[1]["handshake_ms"] = 70.0
    assert handshakes.lines(rows)[-1].endswith("NO")
    assert handshakes.lines([{"arm": "origin", "handshake_ms": ""}]) == []
