"""`ocalab bench reliability`: HTTP conformance, fuzzing, slow/greedy clients (fair share),
tokens, signed commands, integrity and kill-during-fill against real origin/OCA subprocesses on 127.0.0.1.

`run_reliability(out_dir, quick)` starts its own servers (port 0, READY line), runs every
check with bounded counts and time, writes reliability.md and reliability.json into out_dir,
prints a summary table and returns the result dict; `ok` is True iff every pass/fail check
passed. Figures that are speed (latencies) are reported; only functional properties gate `ok`
except the overload p99 bound, which is a documented bench target. It creates no network
namespace and never runs pytest: the checks in COVERED_BY_TESTS belong to the test suite.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

from appliances import tokens
from appliances.content import Catalog
from bench.reliability_commands import check_commands
from bench.reliability_checks import (check_atheris, check_conformance, check_fuzz,
                                      check_tokens, check_traversal)
from bench.reliability_load import (check_conn_cap, check_kill_during_fill, check_overload,
                                    check_slowloris)
from bench.reliability_report import print_summary, write_report
from bench.reliability_servers import Integrity, Servers
from bench.reliability_spec import HEADER_TIMEOUT_S, IDLE_TIMEOUT_S, LOAD_FLAGS, LOAD_LIMITS, SPEC

COVERED_BY_TESTS = {  # what -> the tests that check it (listed in the report, not run here)
    "property tests (hypothesis) of httpcore, ranges, tokens": "tests/test_parsers_fuzz.py",
    "controller restart: flow tables equal to a fresh start, no stale cookies (root)":
        "tests/test_controller_metro.py::test_controller_restart_leaves_fresh_flow_tables",
    "SIGKILLed run + ocalab clean: zero ocalab resources left, decoys untouched (root)":
        "tests/test_clean.py::test_clean_after_sigkill",
}


def _start_servers(servers: Servers, work: Path, canary: bytes) -> tuple[dict[str, int], bytes]:
    """Origin, OCAs (disk, mem, token, load) and a short-timeout origin; (ports, token key)."""
    timeouts = ["--header-timeout-s", str(HEADER_TIMEOUT_S),
                "--idle-timeout-s", str(IDLE_TIMEOUT_S)]
    ports = {"origin": servers.start("origin", "appliances.origin")}
    ports["disk"] = servers.oca("oca-disk", ports["origin"], work / "disk", "--miss", "proxy",
                                "--mem-mb", "0", "--access-log",
                                str(servers.logs / "oca-disk-access.jsonl"), *timeouts)
    (work / "disk" / "canary.txt").write_bytes(canary)
    ports["mem"] = servers.oca("oca-mem", ports["origin"], work / "mem", "--miss", "proxy")
    key = tokens.write_key(work / "token.key")
    ports["tok"] = servers.oca("oca-tok", ports["origin"], work / "tok", "--miss", "proxy",
                               "--token-key", str(work / "token.key"), *timeouts)
    ports["origin-fuzz"] = servers.start("origin-fuzz", "appliances.origin", *timeouts)
    ports["load"] = servers.oca("oca-load", ports["origin"], work / "load", "--miss", "proxy",
                                "--mem-mb", "0", "--max-conns", "48",
                                *LOAD_FLAGS)  # default 10 s header timeout
    ports["cmd"] = servers.oca("oca-cmd", ports["origin"], work / "cmd", "--miss", "redirect")
    return ports, key


def _run_all(servers: Servers, work: Path, integ: Integrity, canary: bytes, quick: bool,
             seed: int) -> dict:
    """Every check against freshly started servers; one result dict per check."""
    p, key = _start_servers(servers, work, canary)
    n_fuzz, canaries = 2000 if quick else 10000, (canary, b"root:x:0:0:")

    def sign(path: str) -> str:
        return tokens.sign(key, "/".join(path.split("/")[:3]) + "/", "127.0.0.0/8",
                           int(time.time()) + 600)
    return {
        "conformance": check_conformance({"origin": p["origin"], "oca-disk": p["disk"],
                                          "oca-mem": p["mem"]}, integ),
        "fuzz": check_fuzz(p["disk"], servers, "oca-disk", n_fuzz, seed, integ, canaries),
        "traversal": check_traversal(p["disk"], canaries),
        "fuzz_origin": check_fuzz(p["origin-fuzz"], servers, "origin-fuzz", n_fuzz // 5,
                                  seed + 1, integ, canaries),
        "fuzz_oca_tok": check_fuzz(p["tok"], servers, "oca-tok", n_fuzz // 5, seed + 2, integ,
                                   canaries, sign),
        "slowloris": check_slowloris(p["disk"], 32 if quick else 96, integ, seed),
        "conn_cap": check_conn_cap(p["load"], 48, 16),
        "overload": check_overload(p["load"], integ, 16 if quick else 32,
                                   4.0 if quick else 10.0, seed, LOAD_LIMITS),
        "commands": check_commands(p["cmd"], servers.command_key, p["origin"]),
        "tokens": check_tokens(p["tok"], key, 150 if quick else 1000,
                               5000 if quick else 50000, seed, integ),
        "kill_during_fill": check_kill_during_fill(servers, p["origin"], work,
                                                   2 if quick else 10, seed, integ),
        "atheris": check_atheris(20000 if quick else 300000, 5 if quick else 20),
    }


def run_checks(out_dir: Path, quick: bool, seed: int = 1) -> dict:
    """Start servers, run every check, stop servers; the raw result dict (`ok` = all passed)."""
    work = out_dir / "reliability-work"
    work.mkdir(parents=True, exist_ok=True)
    integ, servers = Integrity(Catalog(SPEC)), Servers(out_dir)
    canary = f"CANARY-{random.Random(seed).getrandbits(64):016x}".encode()
    (work / "canary.txt").write_bytes(canary)
    res: dict = {"quick": quick, "seed": seed}
    t0 = time.monotonic()
    try:
        res.update(_run_all(servers, work, integ, canary, quick, seed))
        alive = {name: servers.alive(name) for name in servers.procs}
    finally:
        codes = servers.stop()
    tracebacks = servers.tracebacks()
    res["servers"] = {"alive_at_end": alive, "exit_codes": codes, "stderr_tracebacks": tracebacks,
                      "ok": all(alive.values()) and all(c == 0 for c in codes.values())
                      and not any(tracebacks.values())}
    res["integrity"] = integ.to_dict()
    res["covered_by_tests"] = dict(COVERED_BY_TESTS)
    res["duration_s"] = round(time.monotonic() - t0, 1)
    res["ok"] = all(v.get("ok", True) for v in res.values() if isinstance(v, dict))
    if res["ok"]:  # stores are tens of MB; keep them only to debug a failure
        shutil.rmtree(work)
    res["work_dir"] = None if res["ok"] else str(work)
    res["server_logs"] = str(servers.logs)
    return res


def run_reliability(out_dir: Path, quick: bool = False) -> dict:
    """Run every reliability/security check; write reliability.md/.json; return the dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = run_checks(out_dir, quick)
    write_report(out_dir, res)
    print_summary(out_dir, res)
    return res
