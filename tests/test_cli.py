"""The `ocalab` command line, run as a real process: the parts that need no root.

`topo show` (text, --json, --png), `--set` errors, `doctor --json` keys; run as the unprivileged
user `nobody` where possible to prove those parts need no root.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from topologies.catalog import MetroParams, metro
from topologies.plan import Plan

OCALAB = Path(sys.executable).parent / "ocalab"
NOBODY = 65534
CAN_DROP = os.geteuid() == 0 and shutil.which("setpriv") is not None


def ocalab(*args: str, as_nobody: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [str(OCALAB), *args]
    if as_nobody:
        if not CAN_DROP:
            pytest.skip("dropping to nobody needs root and setpriv")
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=full_env, cwd="/")


@pytest.fixture(scope="module", params=[False, True], ids=["self", "nobody"])
def who(request):
    if request.param and not CAN_DROP:
        pytest.skip("dropping to nobody needs root and setpriv")
    return request.param


def test_topo_show_text(who):
    r = ocalab("topo", "show", as_nobody=who)
    assert r.returncode == 0, r.stderr
    plan = metro()
    out = r.stdout
    assert f"hash {plan.plan_hash()}" in out
    assert f"{len(plan.nodes)} nodes, {len(plan.links)} links" in out
    for n in plan.nodes:
        assert f"  {n.name} " in out
    assert "i1v1 -> origin   4 hops: i1br trr cldr origin" in out
    assert "i1v1 -> nfxoca1  3 hops: i1br nfxr nfxoca1" in out
    assert "i1v1 -> i1oca1   1 hops: i1oca1" in out


def test_topo_show_json_round_trips(who):
    r = ocalab("topo", "show", "metro", "--json", as_nobody=who)
    assert r.returncode == 0, r.stderr
    plan = Plan.from_json(r.stdout)
    assert plan == metro() and plan.plan_hash() == metro().plan_hash()


def test_topo_show_set_applies_overrides():
    r = ocalab("topo", "show", "--json", "--set", "isps=2", "--set", "access_delay_ms=4.5")
    assert r.returncode == 0, r.stderr
    plan = Plan.from_json(r.stdout)
    assert plan == metro(MetroParams(isps=2, access_delay_ms=4.5))
    assert plan.plan_hash() != metro().plan_hash()
    assert {lk.delay_ms for lk in plan.links if lk.cls == "access"} == {4.5, 5.0}


def test_topo_show_png(tmp_path):
    png = tmp_path / "metro.png"
    r = ocalab("topo", "show", "--png", str(png), env={"MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert r.returncode == 0, r.stderr
    assert f"wrote {png}" in r.stdout
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 400 and len(data) > 20_000


@pytest.mark.parametrize("args,code,fragments", [
    (["--set", "acces_delay_ms=2"], 2, ["acces_delay_ms", "unknown parameter"]),
    (["--set", "isps=ten"], 2, ["metro.isps"]),
    (["--set", "isps=0"], 2, ["metro.isps"]),
    (["--set", "peering_delay_ms=-3"], 2, ["delay_ms"]),
    (["--set", "loss_pct=100"], 2, ["loss_pct"]),
    (["--set", "isps"], 1, ["key=value", "isps"]),
])
def test_topo_show_bad_set(args, code, fragments):
    r = ocalab("topo", "show", *args)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    for frag in fragments:
        assert frag in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_topo_show_unknown_topology():
    r = ocalab("topo", "show", "mtero")
    assert r.returncode == 2 and "mtero" in r.stderr and "Traceback" not in r.stderr


def test_doctor_json_keys(who):
    r = ocalab("doctor", "--json", as_nobody=who)
    d = json.loads(r.stdout)
    assert {"ok", "link_backend", "switch_datapath", "link_backend_reason",
            "switch_datapath_reason", "versions", "checks"} <= set(d)
    assert r.returncode == (0 if d["ok"] else 1)
    assert {"kernel", "python", "ovs", "iperf3"} <= set(d["versions"])
    names = {c["name"] for c in d["checks"]}
    assert {"root", "netns", "bin:ip", "bin:tc", "bin:ovs-vsctl", "python:mininet",
            "ovs:running"} <= names
    for c in d["checks"]:
        assert set(c) == {"name", "ok", "detail", "fix", "required"}
        assert isinstance(c["ok"], bool) and isinstance(c["detail"], str)
    root = next(c for c in d["checks"] if c["name"] == "root")
    if who:  # as nobody: cannot pass, cannot probe, says why
        assert root["ok"] is False and d["ok"] is False and d["link_backend"] is None
        assert "root" in d["link_backend_reason"]
    elif os.geteuid() == 0:
        assert root["ok"] is True
        assert d["link_backend"] in ("netem", "relay") and d["link_backend_reason"]
        assert d["switch_datapath"] in ("kernel", "user") and d["switch_datapath_reason"]
        assert {"kernel:netem", "kernel:ovs-datapath", "kernel:veth+htb"} <= names


@pytest.mark.parametrize("sub", [["clean"], ["cli"], ["run", "placement"]])
def test_root_commands_refuse_without_root(sub):
    r = ocalab(*sub, as_nobody=os.geteuid() == 0)
    assert r.returncode != 0
    assert "needs root" in r.stderr and "Traceback" not in r.stderr
