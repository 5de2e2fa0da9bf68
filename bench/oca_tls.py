"""Benchmark `ocalab bench oca --tls`: the OCA and nginx serving one segment over TLS 1.3 with the
same lab-CA certificate (loopback), loaded by an external client (wrk) and by the project's own
(bench.oca.load over ssl) at 1, 8 and 64 keep-alive connections.

Per server and level: req/s, Gbit/s, server CPU (user+sys of the process and its children, from
/proc) and cores per Gbit/s; then the OCA/nginx ratio of wrk's throughput. TLS is userspace on
both sides (no kTLS: CONFIG_TLS is off and CPython's ssl has no OP_ENABLE_KTLS), so the OCA
reads and encrypts each body, as nginx does. Writes bench_oca_tls.json into out_dir.
Server variants (`OCA_VARIANTS`) are the levers tried on the OCA's TLS path: `oca` sends from
the disk store (1 MiB preads into the TLS transport), `oca_mem` from its memory hot set. Servers
are measured interleaved, level by level, so the shared machine's noise hits them alike.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from appliances.tls import client_context
from bench.oca import LEVELS, NGINX, _free_port, _nginx_conf, _prepare, _start_oca, _stop, _wait_port, load
from harness.pki import ServerSpec, write_pki

WRK = "/usr/bin/wrk"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OCA_VARIANTS: dict[str, tuple[str, ...]] = {"oca": (), "oca_mem": ("--mem-mb", "64")}


def _pids(root: int) -> list[int]:
    """root and its descendants (nginx's workers)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(x) for x in task.read_text().split()]
    return out


def cpu_s(root: int) -> float:
    """User+system CPU seconds of `root` and its live descendants."""
    total = 0
    for pid in _pids(root):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_wrk(text: str) -> dict:
    """requests, bytes, elapsed_s and errors from wrk's summary. Pure."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read", text)
    if not m:
        raise ValueError(f"wrk printed no summary: {text[-500:]!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests": int(m.group(1)), "elapsed_s": float(m.group(2)) * scale,
            "bytes": int(float(m.group(4)) * _UNITS[m.group(5)]),
            "n_errors": (sum(int(x) for x in errors.groups()) if errors else 0)
            + (int(non2xx.group(1)) if non2xx else 0)}


def _wrk(port: int, path: str, clients: int, duration_s: float) -> dict:
    out = subprocess.run([WRK, "-t", str(min(clients, 2)), "-c", str(clients), "-d",
                          f"{duration_s:g}s", f"https://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=duration_s + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr[-500:]}")
    return parse_wrk(out.stdout)


def _figures(r: dict, cpu: float) -> dict:
    gbps = r["bytes"] * 8 / r["elapsed_s"] / 1e9 if r["elapsed_s"] else 0.0
    return {"requests": r["requests"], "req_per_s": round(r["requests"] / r["elapsed_s"], 1),
            "gbps": round(gbps, 3), "server_cpu_s": round(cpu, 2),
            "cores_per_gbps": round(cpu / r["elapsed_s"] / gbps, 3) if gbps else None,
            "n_errors": r["n_errors"]}


def _measure(pid: int, run) -> dict:
    c0 = cpu_s(pid)
    r = run()
    return _figures(r, cpu_s(pid) - c0)


def run_bench_oca_tls(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for binary in (NGINX, WRK):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} not found (Debian packages nginx-light and wrk: make setup)")
    duration_s, n_segments = (2.0, 4) if quick else (5.0, 8)
    work = Path(tempfile.mkdtemp(prefix="ocbench-tls-"))
    procs: list = []
    results: dict[str, dict] = {}  # server -> client -> one row per level
    try:
        store, nroot, paths = _prepare(work, n_segments)
        cert, key = write_pki(work / "pki", [ServerSpec("bench", ("localhost",), ("127.0.0.1",))])["bench"]
        ctx = client_context(work / "pki" / "ca.pem")
        servers = {}
        for name, extra in OCA_VARIANTS.items():
            proc, port = _start_oca(store, n_segments, ("--tls-cert", str(cert), "--tls-key", str(key), *extra))
            procs.append(proc)
            servers[name] = (proc.pid, port)
        prefix = work / "nginx"
        prefix.mkdir()
        port = _free_port()
        (prefix / "nginx.conf").write_text(_nginx_conf(nroot, prefix, port, (cert, key)))
        nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(nginx)
        _wait_port(port, nginx)
        servers["nginx"] = (nginx.pid, port)
        results = {name: {"wrk": [], "own": []} for name in servers}
        for pid, port in servers.values():
            load(port, paths[:1], 2, 0.5, ctx)  # warm-up: page cache, TLS, the hot set
        for client in ("wrk", "own"):  # interleaved: the shared machine's noise hits every server
            for c in LEVELS:
                for name, (pid, port) in servers.items():
                    run = ((lambda: _wrk(port, paths[0], c, duration_s)) if client == "wrk"
                           else (lambda: load(port, paths[:1], c, duration_s, ctx)))
                    results[name][client].append(_measure(pid, run))
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(work, ignore_errors=True)
    report = {"benchmark": "oca_vs_nginx_tls", "levels": list(LEVELS), "duration_s_per_level": duration_s,
              "quick": quick, "segment": paths[0], "results": results,
              "ratio_wrk_oca_over_nginx": {
                  name: {str(c): (round(o["gbps"] / n["gbps"], 3) if n["gbps"] else None)
                         for c, o, n in zip(LEVELS, results[name]["wrk"], results["nginx"]["wrk"])}
                  for name in OCA_VARIANTS},
              "ratio_cores_per_gbps_oca_over_nginx": {
                  name: {str(c): (round(o["cores_per_gbps"] / n["cores_per_gbps"], 3)
                                  if o["cores_per_gbps"] and n["cores_per_gbps"] else None)
                         for c, o, n in zip(LEVELS, results[name]["wrk"], results["nginx"]["wrk"])}
                  for name in OCA_VARIANTS},
              "cpu_count": os.cpu_count(),
              "tls": "TLS 1.3 userspace on both sides (no kTLS), one lab-CA ECDSA P-256 certificate"}
    (out_dir / "bench_oca_tls.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(format_table(report))
    return report


def format_table(report: dict) -> str:
    lines = [f"{'server':<14}{'client':<6}{'conns':>6}{'req/s':>9}{'Gbit/s':>9}{'cpu s':>8}"
             f"{'cores/Gbps':>11}{'errors':>7}"]
    for name, by in report["results"].items():
        for client, rows in by.items():
            for c, r in zip(report["levels"], rows):
                lines.append(f"{name:<14}{client:<6}{c:>6}{r['req_per_s']:>9}{r['gbps']:>9}"
                             f"{r['server_cpu_s']:>8}{r['cores_per_gbps']!s:>11}{r['n_errors']:>7}")
    for name, ratios in report["ratio_wrk_oca_over_nginx"].items():
        r8 = ratios.get("8")
        short = "" if r8 is None or r8 >= 1 else f" (short of 1.0x by {100 * (1 - r8):.0f}%)"
        cpu = report["ratio_cores_per_gbps_oca_over_nginx"][name]
        lines.append(f"{name}/nginx over TLS (wrk): throughput "
                     + ", ".join(f"{k} conns x{v}" for k, v in ratios.items()) + short
                     + "; cores per Gbit/s " + ", ".join(f"x{v}" for v in cpu.values()))
    return "\n".join(lines)
