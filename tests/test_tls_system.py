"""Loopback system over TLS 1.3 (issue 17): origin, 2 OCAs and the control plane serve https
with lab-CA certificates; fills (control -> OCA pushes, OCA -> OCA -> origin pulls) and
heartbeats go over https; players with the right CA play every segment verified; a player
trusting another CA fails its session naming the certificate problem; an OCA with an expired
certificate is refused by the players, which fall back to the next OCA."""
from __future__ import annotations

import csv
import datetime as dt
import json
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from appliances.tls import client_context
from appliances.tokens import write_key
from harness.pki import LabCA
from test_system_loopback import CATALOG, CATALOG_FLAGS, Procs, free_port

pytestmark = pytest.mark.integration
N_SEGMENTS = 4


@pytest.fixture
def procs(tmp_path):
    ps = Procs(tmp_path)
    yield ps
    ps.stop_all()


def write_certs(folder: Path, expired: set[str]) -> Path:
    """ca.pem and <name>.crt/.key for 127.0.0.1; names in `expired` expired a day ago."""
    ca = LabCA()
    (folder / "ca.pem").write_bytes(ca.cert_pem)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    for name in ("origin", "oca1", "oca2", "control"):
        issued = ca.issue(name, ["localhost"], ["127.0.0.1"], 3600,
                          now=old if name in expired else None)
        (folder / f"{name}.crt").write_bytes(issued.cert_pem)
        (folder / f"{name}.key").write_bytes(issued.key_pem)
    return folder / "ca.pem"


def tls_flags(folder: Path, name: str) -> list[str]:
    return ["--tls-cert", str(folder / f"{name}.crt"), "--tls-key", str(folder / f"{name}.key"),
            "--ca-file", str(folder / "ca.pem")]


def start_tls_world(tmp_path: Path, procs: Procs, expired: set[str] = frozenset()) -> dict:
    ca = write_certs(tmp_path, expired)
    key, cmd_key = tmp_path / "key.hex", tmp_path / "command.key"
    write_key(key)
    write_key(cmd_key)
    ports = {n: free_port() for n in ("origin", "oca1", "oca2", "control")}
    url = {n: f"https://127.0.0.1:{p}" for n, p in ports.items()}
    deployment = {
        "ocas": [{"name": "oca1", "tier": "embedded", "url": url["oca1"], "serves": ["127.0.0.0/8"],
                  "distance_hops": 1, "rtt_ms": 1.0},
                 {"name": "oca2", "tier": "ixp", "url": url["oca2"], "serves": ["127.0.0.0/8"],
                  "distance_hops": 3, "rtt_ms": 5.0}],
        "origin": {"name": "origin", "url": url["origin"], "tier": "origin"},
        "catalog": CATALOG, "regions": {"lo": {"prefixes": ["127.0.0.0/8"], "preference_seed": 7}}}
    (tmp_path / "deployment.json").write_text(json.dumps(deployment))
    origin_flags = tls_flags(tmp_path, "origin")[:4]  # the origin fetches nothing
    procs.start("origin", ["appliances.origin", "--listen", f"127.0.0.1:{ports['origin']}",
                           *origin_flags, *CATALOG_FLAGS])
    procs.start("control", ["appliances.control", "--listen", f"127.0.0.1:{ports['control']}",
                            "--deployment", str(tmp_path / "deployment.json"),
                            "--token-key", str(key), "--command-key", str(cmd_key),
                            "--fill-rate-mbps", "800", "--push-fill",
                            "--fill-segments-per-title", str(N_SEGMENTS),
                            *tls_flags(tmp_path, "control")])
    for name, upstream in (("oca2", url["origin"]), ("oca1", url["oca2"])):
        procs.start(name, ["appliances.oca", "--listen", f"127.0.0.1:{ports[name]}",
                           "--name", name, "--upstream", upstream,
                           "--store", str(tmp_path / f"store-{name}"), "--capacity-mb", "80",
                           "--miss", "proxy", "--token-key", str(key),
                           "--command-key", str(cmd_key), "--cache-control", url["control"],
                           "--heartbeat-s", "0.5", *tls_flags(tmp_path, name), *CATALOG_FLAGS])
    return {**url, "ca": ca}


def get_json(url: str, ca: Path) -> dict:
    with urllib.request.urlopen(url, timeout=10, context=client_context(ca)) as r:
        return json.loads(r.read())


def wait_filled(url: dict, names: tuple[str, ...], timeout_s: float = 30.0) -> None:
    """Until each OCA's pushed plan is done (pulled over https from its fill sources)."""
    deadline = time.monotonic() + timeout_s
    while True:
        st = {n: get_json(f"{url[n]}/fill/status", url["ca"]) for n in names}
        if all(s.get("plan_id", 0) >= 1 and s.get("state") in ("done", "idle") for s in st.values()):
            return
        assert time.monotonic() < deadline, st
        time.sleep(0.3)


def play(procs: Procs, tmp_path: Path, control: str, ca: Path, tag: str) -> tuple[int, list, str]:
    """3 viewers with the CA `ca`: (exit code, sessions, stderr); chunks-<tag>.csv in tmp_path."""
    chunk_log, session_log = tmp_path / f"chunks-{tag}.csv", tmp_path / f"sessions-{tag}.jsonl"
    player = procs.start(f"player-{tag}", [
        "appliances.player", "--control", control, "--viewers", "3", "--titles", "t0000,t0001",
        "--segments", str(N_SEGMENTS), "--chunk-log", str(chunk_log), "--session-log",
        str(session_log), "--speed", "8", "--max-wall-s", "40", "--account-prefix", tag,
        "--ca-file", str(ca)], ready=False)
    rc = player.wait(timeout=60)
    player.stderr.seek(0)
    sessions = [json.loads(line) for line in session_log.read_text().splitlines()]
    return rc, sessions, player.stderr.read()


def test_tls_world_plays_and_refuses_a_foreign_ca(tmp_path, procs):
    url = start_tls_world(tmp_path, procs)
    wait_filled(url, ("oca1", "oca2"))
    assert get_json(f"{url['control']}/health", url["ca"])["catalog_check"] in ("ok", "pending")
    rc, sessions, err = play(procs, tmp_path, url["control"], url["ca"], "good")
    assert rc == 0, err[-3000:]
    assert all(s["status"] == "ok" and s["segments_verified"] == N_SEGMENTS
               and s["hash_failures"] == 0 for s in sessions), sessions
    # handshakes measured apart: a new https connection has a TCP connect and a TLS time; the
    # viewers share one player process, so later viewers resume the first one's sessions
    with open(tmp_path / "chunks-good.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    new = [r for r in rows if r["conn"] != "reused"]
    assert new and {r["conn"] for r in new} <= {"tls", "tls_resumed"}
    assert all(float(r["connect_ms"]) > 0 and float(r["tls_ms"]) > 0 for r in new)
    assert all(r["connect_ms"] == r["tls_ms"] == "" for r in rows if r["conn"] == "reused")
    assert all(s["control_conn"] in ("tls", "tls_resumed") for s in sessions)
    assert all(s["first_conn"] in ("tls", "tls_resumed") and float(s["first_tls_ms"]) > 0
               for s in sessions)
    other = tmp_path / "other"
    other.mkdir()
    rc, sessions, err = play(procs, tmp_path, url["control"], write_certs(other, set()), "bad")
    assert rc != 0 and sessions and all(s["status"] == "failed" for s in sessions)
    assert all("certificate verify failed" in s["error"] for s in sessions), [s["error"] for s in sessions]
    control_port = int(url["control"].rsplit(":", 1)[1])
    for payload in (b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01garbage" * 50):
        with socket.create_connection(("127.0.0.1", control_port), timeout=15) as s:
            s.sendall(payload)
            try:
                assert b"HTTP/1.1" not in s.recv(65536)  # closed, nothing in clear text
            except ConnectionResetError:
                pass
    time.sleep(0.5)
    for name in ("origin", "oca1", "oca2", "control"):
        procs.procs[name].stderr.seek(0)
        err = procs.procs[name].stderr.read()
        assert "Traceback" not in err and "SSL" not in err, (name, err[-2000:])


def test_expired_oca_certificate_is_refused_and_players_fall_back(tmp_path, procs):
    url = start_tls_world(tmp_path, procs, expired={"oca1"})
    with pytest.raises(urllib.error.URLError) as info:
        get_json(f"{url['oca1']}/health", url["ca"])
    assert isinstance(info.value.reason, ssl.SSLCertVerificationError)
    rc, sessions, err = play(procs, tmp_path, url["control"], url["ca"], "exp")
    assert rc == 0, err[-3000:]
    assert all(s["status"] == "ok" for s in sessions), sessions
    errors = [e for s in sessions for e in s["errors"]]
    assert errors and all("certificate has expired" in e for e in errors), errors
