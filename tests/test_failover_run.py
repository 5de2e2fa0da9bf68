"""`ocalab run failover --quick` end to end on the emulated metro (root): asserts directions on
the saved tables, not timings."""
from __future__ import annotations

import csv
import os

import pytest

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]


def _rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_failover_quick(tmp_path):
    from ocalab.cli import main
    assert main(["run", "failover", "--quick", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.glob("failover-*"))
    by = {(r["arm"], r["event"]): r for r in _rows(run_dir / "summary.csv")}
    assert set(by) == {(a, e) for a in ("manifest", "anycast") for e in ("embedded_kill", "ixp_kill")}
    sessions = _rows(run_dir / "sessions.csv")
    assert sessions and all(s["status"] == "ok" for s in sessions)  # every viewer survived both kills
    chunks = _rows(run_dir / "chunks.csv")
    # every chunk names the server that sent it (X-Ocalab-Node), and where the access-log join
    # finds the request too, both agree
    assert all(c["server"] != "unresolved" and c["node"] == c["server"] for c in chunks)
    assert all(c["log_server"] in ("", c["server"]) for c in chunks)
    assert sum(c["log_server"] == c["server"] for c in chunks if c["pathway"] == "anycast") >= \
        0.9 * sum(c["pathway"] == "anycast" for c in chunks)
    for arm in ("manifest", "anycast"):
        emb, ixp = by[(arm, "embedded_kill")], by[(arm, "ixp_kill")]
        # everyone watched from the embedded OCA when it died, and every one of them recovered
        assert int(emb["viewers_affected"]) >= 1 and emb["recovered"] == emb["viewers_affected"]
        # a dead OCA answers no request sent after its kill (bodies already in its socket
        # buffers may still drain: victim_mb_after)
        assert int(emb["victim_requests_after"]) == 0 == int(ixp["victim_requests_after"])
        # with both OCAs dead only the origin is left, across transit: more transit than before
        assert float(ixp["origin_share_after"]) > 0.8
        assert float(ixp["extra_transit_mb"]) > 1.0
        # the kernel's transit counters over the same phase carried at least those bytes
        # (they also count headers, ACKs and OCA fills)
        assert float(ixp["transit_mb_after"]) >= 0.9 * float(ixp["origin_mb_after"])
    # manifest fallback goes to the next location, the IXP OCA (no transit); anycast players try
    # the anycast address again and the controller steers the new connection to the IXP OCA,
    # so viewers are on it when it dies in turn
    assert float(by[("manifest", "embedded_kill")]["ixp_share_after"]) > 0.5
    assert float(by[("anycast", "embedded_kill")]["ixp_share_after"]) > 0.5
    assert int(by[("anycast", "ixp_kill")]["viewers_affected"]) >= 1
    assert float(by[("manifest", "embedded_kill")]["extra_transit_mb"]) < \
        float(by[("manifest", "ixp_kill")]["extra_transit_mb"])
