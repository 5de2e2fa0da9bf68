"""Benchmark: OCA serving throughput and p99 latency vs nginx on the same files (loopback).

`run_bench_oca(out_dir, quick=False) -> dict` (also `python -m bench.oca [--quick]
[--out DIR]`): fills a temp store with ~2.9 MB segments (5800 kbps x 4 s), starts the OCA
twice (subprocesses, hot set disabled so every hit goes through sendfile: `oca` with the
default 2 sendfile threads, `oca_loop` with asyncio's loop.sendfile, i.e. --sendfile-threads 0)
and Debian's nginx (own temp config, 127.0.0.1,
free port, stopped by pid) serving hard links to the same files, and loads each with 1, 8 and
64 keep-alive clients (threads with blocking sockets) for a fixed time.
Writes `bench_oca.json` into out_dir and prints a table plus the OCA/nginx ratio.
Bounded: < 90 s in total (quick: ~20 s).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from appliances.content import Catalog, CatalogSpec
from appliances.store import Store
from contracts.stats import median, percentile

NGINX = "/usr/sbin/nginx"
LEVELS = (1, 8, 64)
KBPS = 5800


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
            raise RuntimeError(f"nginx exited with {proc.returncode}: {err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


def _read_response(sock: socket.socket, buf: bytearray, view: memoryview) -> int:
    """Read one response (head + Content-Length body); returns body bytes."""
    head = b""
    while b"\r\n\r\n" not in head:
        n = sock.recv_into(buf, 65536)
        if n == 0:
            raise ConnectionError("server closed the connection")
        head += bytes(view[:n])
    head_part, _, rest = head.partition(b"\r\n\r\n")
    status = int(head_part.split(b" ", 2)[1])
    length = None
    for line in head_part.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if status != 200 or length is None:
        raise RuntimeError(f"unexpected response status {status} / length {length}")
    remaining = length - len(rest)
    while remaining > 0:
        n = sock.recv_into(buf, min(len(buf), remaining))
        if n == 0:
            raise ConnectionError("server closed mid-body")
        remaining -= n
    return length


def load(port: int, paths: list[str], clients: int, duration_s: float,
         tls: ssl.SSLContext | None = None) -> dict:
    """Keep-alive GET load from `clients` threads for duration_s; latency per response (over
    TLS with the client context `tls`; its handshake is not timed)."""
    lat_ms: list[list[float]] = [[] for _ in range(clients)]
    nbytes = [0] * clients
    errors: list[str] = []
    stop_at = time.monotonic() + duration_s

    def worker(i: int) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            with (tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw) as s:
                k = i
                while time.monotonic() < stop_at:
                    req = f"GET {paths[k % len(paths)]} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
                    t0 = time.perf_counter()
                    s.sendall(req)
                    nbytes[i] += _read_response(s, buf, view)
                    lat_ms[i].append((time.perf_counter() - t0) * 1000)
                    k += clients
        except (OSError, RuntimeError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    all_lat = [x for lst in lat_ms for x in lst]
    n = len(all_lat)
    return {"clients": clients, "requests": n, "bytes": sum(nbytes), "elapsed_s": round(elapsed, 3),
            "throughput_mbps": round(sum(nbytes) * 8 / elapsed / 1e6, 1),
            "req_per_s": round(n / elapsed, 1),
            "p50_ms": round(median(all_lat), 3) if n else None,
            "p99_ms": round(percentile(all_lat, 99), 3) if n else None,
            "errors": errors[:5], "n_errors": len(errors)}


def _fetch_sha(port: int, path: str) -> str:
    import hashlib
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        return hashlib.sha256(c.getresponse().read()).hexdigest()
    finally:
        c.close()


def _nginx_conf(root: Path, prefix: Path, port: int,
                tls: tuple[Path, Path] | None = None) -> str:
    """nginx.conf serving `root` on 127.0.0.1:port; with tls=(cert, key) TLS 1.3 only."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    ssl_conf = (f"ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n"
                f"        ssl_protocols TLSv1.3;\n        " if tls else "")
    return f"""{user}worker_processes auto;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port}{" ssl" if tls else ""};
        {ssl_conf}root {root};
    }}
}}
"""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _prepare(work: Path, n_segments: int) -> tuple[Path, Path, list[str]]:
    """Store with n segments of title t0000 at 5800 kbps, and an nginx root of hard links."""
    cat = Catalog(CatalogSpec(n_titles=1, duration_s=4 * n_segments))
    store = Store(work / "store", capacity_bytes=1 << 34)
    nroot = work / "nginx_root"
    paths = []
    for i in range(n_segments):
        obj = store.put(("t0000", KBPS, i), cat.segment_bytes("t0000", KBPS, i))
        link = nroot / "v" / "t0000" / str(KBPS) / str(i)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(obj.path, link)
        paths.append(f"/v/t0000/{KBPS}/{i}")
    return work / "store", nroot, paths


def _start_oca(store: Path, n_segments: int,
               extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "appliances.oca", "--listen", "127.0.0.1:0",
           "--upstream", "http://127.0.0.1:9", "--store", str(store), "--capacity-mb", "16384",
           "--mem-mb", "0", "--titles", "1", "--duration-s", str(4 * n_segments),
           "--max-conns", "1024", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        _stop(proc)
        raise RuntimeError(f"OCA did not start: {line!r}")
    return proc, int(line.split(":")[-1])


SERVERS = ("oca", "oca_loop", "nginx")


def _ratios(results: dict, name: str) -> dict:
    out = {}
    for o, n in zip(results[name], results["nginx"]):
        out[str(o["clients"])] = (round(o["throughput_mbps"] / n["throughput_mbps"], 3)
                                  if n["throughput_mbps"] else None)
    return out


def _start_servers(work: Path, store: Path, nroot: Path, n_segments: int,
                   procs: list[subprocess.Popen]) -> dict[str, int]:
    """oca, oca_loop and nginx, each appended to procs as it starts; their ports."""
    ports = {}
    for name, extra in (("oca", ()), ("oca_loop", ("--sendfile-threads", "0"))):
        proc, ports[name] = _start_oca(store, n_segments, extra)
        procs.append(proc)
    prefix = work / "nginx"
    prefix.mkdir()
    ports["nginx"] = _free_port()
    (prefix / "nginx.conf").write_text(_nginx_conf(nroot, prefix, ports["nginx"]))
    nginx = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(nginx)
    _wait_port(ports["nginx"], nginx)
    return ports


def run_bench_oca(out_dir: Path, quick: bool = False) -> dict:
    """Measure oca (default: os.sendfile in 2 worker threads), oca_loop (asyncio loop.sendfile)
    and nginx at 1/8/64 clients; write out_dir/bench_oca.json; return the report dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    duration_s = 1.5 if quick else 4.0
    n_segments = 8 if quick else 16
    t_begin = time.monotonic()
    if not os.access(NGINX, os.X_OK):
        raise RuntimeError(f"nginx binary not found at {NGINX} (Debian package nginx-light)")
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    work = Path(tempfile.mkdtemp(prefix="ocbench-"))
    procs: list[subprocess.Popen] = []
    try:
        store, nroot, paths = _prepare(work, n_segments)
        ports = _start_servers(work, store, nroot, n_segments, procs)
        shas = {name: _fetch_sha(port, paths[0]) for name, port in ports.items()}
        results: dict[str, list] = {name: [] for name in SERVERS}
        for name in SERVERS:
            load(ports[name], paths, 2, 0.5)  # warm-up: page cache, connections
            for clients in LEVELS:
                results[name].append(load(ports[name], paths, clients, duration_s))
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(work, ignore_errors=True)
    report = _report(results, shas, n_segments, duration_s, quick, nginx_version)
    report["total_s"] = round(time.monotonic() - t_begin, 1)
    (out_dir / "bench_oca.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    print(format_table(report))
    return report


def _report(results: dict, shas: dict, n_segments: int, duration_s: float, quick: bool,
            nginx_version: str) -> dict:
    """The bench_oca.json fields but total_s: figures, ratios to nginx and the 0.5 target."""
    ratios, ratios_loop = _ratios(results, "oca"), _ratios(results, "oca_loop")
    n_req = sum(r["requests"] for r in results["oca"])
    return {"benchmark": "oca_vs_nginx", "segment_kbps": KBPS, "segments": n_segments,
            "segment_bytes_mean": round(sum(r["bytes"] for r in results["oca"]) / max(1, n_req)),
            "duration_s_per_level": duration_s, "quick": quick, "levels": list(LEVELS),
            "results": results, "ratio_throughput_oca_over_nginx": ratios,
            "ratio_throughput_oca_loop_over_nginx": ratios_loop,
            "same_bytes_served": len(set(shas.values())) == 1,
            "target": "ratio >= 0.5 at 8 clients",
            "target_met": bool(ratios.get("8") and ratios["8"] >= 0.5),
            "target_met_loop": bool(ratios_loop.get("8") and ratios_loop["8"] >= 0.5),
            "cpu_count": os.cpu_count(), "nginx_version": nginx_version,
            "oca_mode": "disk store, --mem-mb 0: every hit is sent with sendfile; oca is the "
                        "default CLI (non-blocking os.sendfile in 2 worker threads), oca_loop "
                        "uses asyncio loop.sendfile in the event loop (--sendfile-threads 0)"}


def format_table(report: dict) -> str:
    lines = [f"{'server':<12}{'clients':>8}{'req/s':>9}{'Mbit/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'errors':>8}"]
    for name in SERVERS:
        for r in report["results"][name]:
            lines.append(f"{name:<12}{r['clients']:>8}{r['req_per_s']:>9}"
                         f"{r['throughput_mbps']:>10}{r['p50_ms']!s:>9}{r['p99_ms']!s:>9}"
                         f"{r['n_errors']:>8}")
    for label, key, met in (("oca", "ratio_throughput_oca_over_nginx", "target_met"),
                            ("oca_loop", "ratio_throughput_oca_loop_over_nginx",
                             "target_met_loop")):
        ratio = ", ".join(f"{k} clients: {v}" for k, v in report[key].items())
        lines.append(f"{label}/nginx throughput ratio: {ratio}; target (>= 0.5 at 8) met: "
                     f"{report[met]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.oca", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="results/bench_oca", help="output directory")
    args = p.parse_args(argv)
    run_bench_oca(Path(args.out), quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
