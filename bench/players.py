"""`ocalab bench players`: CPU seconds the Python player spends per chunk and per session, and
what the OCA that serves it spends, without the emulated network (no machine lock, no root).

On 127.0.0.1: an origin, one OCA filled with every segment the players ask for (so it serves
hits, its cheapest path), and a control plane whose steering lists that OCA, then the origin.
The players reach the OCA through `bench.pace_proxy` (PACE_MBPS per connection), so bytes
arrive spread over each transfer as over an emulated link; unpaced loopback hands a player a
whole segment in a few reads and hides the per-wake-up cost that dominates on metro.
Each step runs the real `appliances.player` as a child process with N sessions and the
settings of `ocalab bench scale` (its ladder, segments, ramp, buffer and ABR; `speed` only
compresses wall time). Figures: the player's rusage (utime + stime, read with os.wait4, so they
include its start-up and imports), the servers' /proc CPU over the step, per chunk and per
session. Steps alternate over `repeats` so slow drift of a shared machine spreads evenly.
`python -m bench.players --compare /work/main` runs another checkout's player on the same
servers, interleaved; QoE and median download time per run show that both saw the same network.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.links import proc_cpu_s
from bench.scale import ABR, MAX_BUFFER_S, RAMP_S, SEGMENTS, ladder
from bench.scale_verdict import qoe
from scenarios.logs import sessions as sessions_of

REPO = Path(__file__).resolve().parents[1]
N_TITLES = 10  # every one filled into the OCA: whole titles of SEGMENTS segments
STEPS, QUICK_STEPS = (50, 150), (20,)
REPEATS, QUICK_REPEATS = 3, 1
PACE_MBPS = 20.0  # per connection: bytes reach the player a packet or two per wake-up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, data: dict | None = None) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class World:
    """Origin, OCA and control plane on loopback; `stop()` ends exactly these processes."""

    def __init__(self, work: Path, pace_mbps: float = 0.0, profile: Path | None = None) -> None:
        self.work, self.procs, self.pace_mbps, self.profile = work, {}, pace_mbps, profile
        self.catalog_flags = ["--titles", str(N_TITLES), "--duration-s", str(SEGMENTS * 4),
                              "--catalog-seed", "1",
                              "--ladder-kbps", ",".join(map(str, ladder()))]

    def _start(self, name: str, args: list[str], python_opts: tuple[str, ...] = ()) -> str:
        err = open(self.work / f"{name}.stderr", "w")
        p = subprocess.Popen([sys.executable, *python_opts, "-m", *args], stdout=subprocess.PIPE, stderr=err,
                             text=True, cwd=REPO)
        self.procs[name] = p
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and p.poll() is None:
            if sel.select(timeout=0.2) and (line := p.stdout.readline()).startswith("READY "):
                return "http://" + line.split()[1]
        raise RuntimeError(f"{name} did not start; see {self.work / (name + '.stderr')}")

    def start(self) -> None:
        from appliances.tokens import write_key
        key, cmd_key = self.work / "key.hex", self.work / "command.key"
        write_key(key)
        write_key(cmd_key)
        ports = {n: _free_port() for n in ("oca", "control", "pace")}
        self.url = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        listed = self.url["pace" if self.pace_mbps else "oca"]  # the OCA URL players are given
        self.url["origin"] = self._start("origin", ["appliances.origin", "--listen", "127.0.0.1:0",
                                                    *self.catalog_flags])
        spec = {"seed": 1, "n_titles": N_TITLES, "duration_s": SEGMENTS * 4,
                "ladder_kbps": list(ladder())}
        (self.work / "deployment.json").write_text(json.dumps({
            "ocas": [{"name": "oca1", "tier": "embedded", "url": listed,
                      "serves": ["127.0.0.0/8"], "distance_hops": 1, "rtt_ms": 1.0}],
            "origin": {"name": "origin", "url": self.url["origin"], "tier": "origin"},
            "catalog": spec, "regions": {"lo": {"prefixes": ["127.0.0.0/8"], "preference_seed": 7}}}))
        self._start("control", [
            "appliances.control", "--listen", f"127.0.0.1:{ports['control']}",
            "--deployment", str(self.work / "deployment.json"), "--token-key", str(key),
            "--command-key", str(cmd_key), "--push-fill", "--fill-rate-mbps", "2000",
            "--fill-segments-per-title", str(SEGMENTS), "--warm-titles", str(N_TITLES)])
        if self.pace_mbps:  # before the OCA: the control plane pushes its fill plan through it
            self._start("pace", ["bench.pace_proxy", "--listen", f"127.0.0.1:{ports['pace']}",
                                 "--upstream", f"127.0.0.1:{ports['oca']}",
                                 "--rate-mbps", f"{self.pace_mbps:g}"])
        prof = ("-m", "cProfile", "-o", str(self.profile / "oca.prof")) if self.profile else ()
        self._start("oca", [
            "appliances.oca", "--listen", f"127.0.0.1:{ports['oca']}", "--name", "oca1",
            "--upstream", self.url["origin"], "--store", str(self.work / "store"),
            "--capacity-mb", "400", "--miss", "proxy", "--token-key", str(key),
            "--command-key", str(cmd_key), "--cache-control", self.url["control"],
            "--heartbeat-s", "0.5", *self.catalog_flags], prof)
        self._wait_filled()

    def _wait_filled(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            st = _get_json(self.url["oca"] + "/fill/status")
            if st.get("state") in ("done", "window_closed") and st.get("total"):
                if st["failed"] or st["no_room"]:
                    raise RuntimeError(f"OCA fill incomplete: {st}")
                return
            time.sleep(0.3)
        raise RuntimeError(f"OCA fill did not finish in {timeout_s:g} s: {st}")

    def server_cpu_s(self) -> dict[str, float]:
        return {n: proc_cpu_s(p.pid) for n, p in self.procs.items()}

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM all, then SIGKILL whatever still runs after grace_s in all."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.terminate()
        deadline = time.monotonic() + grace_s
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def run_step(world: World, n: int, speed: float, tag: str, profile: Path | None = None,
             player_repo: Path = REPO) -> dict:
    """One player process with n sessions; its CPU and the servers' CPU over its life
    (`profile`: run it under cProfile, writing player-<tag>.prof there; `player_repo`: the
    checkout whose appliances.player runs, to compare two versions on the same servers)."""
    chunks, sessions = world.work / f"chunks-{tag}.csv", world.work / f"sessions-{tag}.jsonl"
    prof = ["-m", "cProfile", "-o", str(profile / f"player-{tag}.prof")] if profile else []
    argv = [sys.executable, *prof, "-m", "appliances.player", "--control", world.url["control"],
            "--viewers", str(n), "--workload", "zipf", "--seed", str(n), "--abr", ABR,
            "--segments", str(SEGMENTS), "--chunk-log", str(chunks), "--session-log", str(sessions),
            "--speed", f"{speed:g}", "--ramp-s", f"{RAMP_S / speed:g}",
            "--max-buffer-s", f"{MAX_BUFFER_S:g}", "--max-wall-s", "600", "--account-prefix", tag]
    srv0, t0 = world.server_cpu_s(), time.monotonic()
    with open(world.work / f"player-{tag}.stderr", "wb") as err:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=player_repo,
                             env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    wall_s, srv1 = time.monotonic() - t0, world.server_cpu_s()
    if p.returncode != 0:
        raise RuntimeError(f"player exited {p.returncode}; see {world.work}/player-{tag}.stderr")
    rows = max(0, len(chunks.read_text().splitlines()) - 1)
    with open(chunks, newline="") as f:  # the same network for every version: download times agree
        download_ms = sorted(float(r["download_ms"]) for r in csv.DictReader(f))
    player_s = ru.ru_utime + ru.ru_stime
    server = {k: round(srv1[k] - srv0[k], 3) for k in srv1}
    return {"player_repo": str(player_repo), "sessions": n, "chunks": rows, "speed": speed, "wall_s": round(wall_s, 2),
            "player_cpu_s": round(player_s, 3), "player_user_s": round(ru.ru_utime, 3),
            "player_cpu_ms_per_chunk": round(player_s * 1000 / max(1, rows), 3),
            "player_cpu_ms_per_session": round(player_s * 1000 / n, 2),
            "server_cpu_s": server, "qoe": qoe(sessions_of(sessions)),
            "download_ms_p50": download_ms[len(download_ms) // 2] if download_ms else None,
            "oca_cpu_ms_per_chunk": round(server["oca"] * 1000 / max(1, rows), 3)}


def _summary(runs: list[dict]) -> dict:
    by_n: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        by_n.setdefault((r["player_repo"], r["sessions"]), []).append(r)
    out = {}
    for (repo, n), rs in sorted(by_n.items()):
        def med(key: str) -> float:
            vals = sorted(r[key] for r in rs)
            return vals[len(vals) // 2]
        out[f"{n} sessions, {repo}"] = {"runs": len(rs), "player_cpu_ms_per_chunk_median": med("player_cpu_ms_per_chunk"),
                       "player_cpu_ms_per_session_median": med("player_cpu_ms_per_session"),
                       "oca_cpu_ms_per_chunk_median": med("oca_cpu_ms_per_chunk"),
                       "download_ms_p50_median": med("download_ms_p50")}
    return out


def measure(steps: tuple[int, ...], repeats: int, speed: float, pace_mbps: float = 0.0,
            profile: Path | None = None, player_repos: tuple[Path, ...] = (REPO,)) -> dict:
    """Each repeat runs every step with every player_repo, interleaved."""
    with tempfile.TemporaryDirectory(prefix="ocalab-bench-players-") as tmp:
        world = World(Path(tmp), pace_mbps, profile)
        try:
            world.start()
            runs = []
            for rep, n, (k, repo) in itertools.product(range(repeats), steps,
                                                       enumerate(player_repos)):
                r = run_step(world, n, speed, f"r{rep}n{n}p{k}", profile, repo)
                runs.append(r)
                print(f"  {n:>4} sessions ({repo}): player {r['player_cpu_ms_per_chunk']} ms "
                      f"CPU/chunk ({r['player_cpu_ms_per_session']} ms/session, {r['chunks']} "
                      f"chunks, {r['wall_s']} s wall); OCA {r['oca_cpu_ms_per_chunk']} ms CPU/chunk; "
                      f"download p50 {r['download_ms_p50']} ms, startup p50 "
                      f"{r['qoe']['startup_p50_s']} s, {r['qoe']['mean_kbps']} kbit/s",
                      flush=True)
        finally:
            world.stop()
    return {"steps": list(steps), "repeats": repeats, "speed": speed, "pace_mbps": pace_mbps,
            "segments": SEGMENTS,
            "ladder_kbps": list(ladder()), "abr": ABR, "runs": runs, "summary": _summary(runs)}


def run_bench_players(out_dir: Path, quick: bool = False) -> dict:
    """Speed 1 (the scale bench's wall clock) unless quick; bench.run saves the result."""
    del out_dir  # the result is all; the work folder is temporary
    return {"players": measure(QUICK_STEPS if quick else STEPS,
                               QUICK_REPEATS if quick else REPEATS, 4.0 if quick else 1.0, PACE_MBPS)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.players", description=__doc__)
    p.add_argument("--sessions", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--pace-mbps", type=float, default=PACE_MBPS,
                   help="pace the OCA's bytes to each player connection (0: straight loopback)")
    p.add_argument("--compare", type=Path, nargs="*", default=[], metavar="CHECKOUT",
                   help="also run the player of these checkouts, interleaved (e.g. /work/main)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="run the players and the OCA under cProfile, profiles into DIR")
    a = p.parse_args(argv)
    res = measure(tuple(a.sessions), a.repeats, a.speed, a.pace_mbps, a.profile,
                  (REPO, *a.compare))
    print(json.dumps(res["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
