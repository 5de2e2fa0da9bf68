"""scenarios.handshakes (pure): new connections to each host's main server paired with its RTT,
full and resumed TLS handshakes judged as one round trip within the measured tolerance."""
import pandas as pd

from scenarios import handshakes

PATHS = pd.DataFrame([{"host": "h1", "server": "oca1", "rtt_ms": 10.0},
                      {"host": "h2", "server": "oca1", "rtt_ms": 10.0}])


def chunk(host, server, conn, connect="", tls=""):
    return {"host": host, "server": server, "conn": conn, "connect_ms": connect, "tls_ms": tls}


def test_full_and_resumed_handshakes_of_one_rtt_pass():
    ch = pd.DataFrame([chunk("h1", "oca1", "tls", 10.4, 10.9), chunk("h1", "oca1", "reused"),
                       chunk("h2", "oca1", "tls_resumed", 10.3, 10.6),
                       chunk("h2", "origin", "tls", 80.0, 81.0)])  # not h2's main server
    f = handshakes.arm_figures(ch, PATHS)
    assert (f["handshakes"], f["resumed"], f["handshake_ms"], f["resumed_ms"]) == (1, 1, 10.9, 10.6)
    assert f["handshake_rtts"] == 1.09 and f["handshake_check"] == "ok"
    assert f["handshake_tol_ms"] == round(0.5 + 0.35 + handshakes.HANDSHAKE_CPU_MS, 2)


def test_two_round_trips_fail_the_check():
    ch = pd.DataFrame([chunk("h1", "oca1", "tls", 10.2, 20.5)])
    f = handshakes.arm_figures(ch, PATHS)
    assert f["handshake_rtts"] == 2.05 and f["handshake_check"] == "off"
    ch = pd.DataFrame([chunk("h1", "oca1", "tls", 10.2, 10.5),
                       chunk("h2", "oca1", "tls_resumed", 10.2, 20.5)])
    assert handshakes.arm_figures(ch, PATHS)["handshake_check"] == "off"


def test_plain_http_and_old_tables_have_no_handshake_figures():
    plain = handshakes.arm_figures(pd.DataFrame([chunk("h1", "oca1", "tcp", 10.2)]), PATHS)
    assert plain["tcp_connect_ms"] == 10.2 and plain["handshake_ms"] == "" and plain["handshakes"] == 0
    old = handshakes.arm_figures(pd.DataFrame([{"host": "h1", "server": "oca1"}]), PATHS)
    assert set(old.values()) == {""}


def test_lines_check_the_order_of_arms():
    rows = [{"arm": a, "handshake_ms": ms, "handshake_rtts": 1.0, "rtt_ms": ms, "tcp_connect_ms": ms,
             "handshakes": 4, "resumed_ms": "", "resumed": 0, "handshake_tol_ms": 2.6,
             "handshake_check": "ok"} for a, ms in (("origin", 60.0), ("ixp", 12.0), ("embedded", 3.0))]
    out = handshakes.lines(rows)
    assert out[-1] == "handshake_ms embedded < ixp < origin: yes" and len(out) == 4
    rows[1]["handshake_ms"] = 70.0
    assert handshakes.lines(rows)[-1].endswith("NO")
    assert handshakes.lines([{"arm": "origin", "handshake_ms": ""}]) == []
