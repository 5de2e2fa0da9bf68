"""Command authentication check: every kind of bad `POST /fill` against an OCA started with
--command-key must be refused with 403, a valid signed one accepted (202) exactly once, the
refusals counted in /health, and the read-only endpoints open without a signature.
"""
from __future__ import annotations

import json
import secrets
import time

from appliances import commands
from bench.reliability_servers import http_get

BAD_KINDS = ("unsigned", "malformed", "forged_mac", "forged_body", "wrong_key", "expired",
             "future", "replayed")
COUNTER_OF = {"unsigned": "unsigned", "malformed": "malformed", "forged_mac": "forged",
              "forged_body": "forged", "wrong_key": "forged", "expired": "expired",
              "future": "expired", "replayed": "replayed"}  # kind -> commands_refused_<x>


def _attempts(key: bytes, plan: bytes, now: float) -> dict[str, tuple[dict, bytes]]:
    """Headers and body of each bad kind but `replayed` (sent after the valid command)."""
    def sign(k: bytes = key, body: bytes = plan, at: float = now) -> dict:
        return commands.sign(k, "POST", "/fill", body, at)
    good = sign()
    off_s = 2 * commands.WINDOW_S
    return {"unsigned": ({}, plan),
            "malformed": ({**good, commands.TS_HEADER: "yesterday"}, plan),
            "forged_mac": ({**good, commands.MAC_HEADER: secrets.token_hex(32)}, plan),
            "forged_body": (sign(body=plan.replace(b"100", b"999")), plan),
            "wrong_key": (sign(k=secrets.token_bytes(32)), plan),
            "expired": (sign(at=now - off_s), plan), "future": (sign(at=now + off_s), plan)}


def check_commands(port: int, key: bytes, origin_port: int) -> dict:
    """Each bad kind once, the valid command, then its replay; outcome per kind."""
    plan = json.dumps({"segments": [["t0000", 235, 0]], "rate_mbps": 100,
                       "sources": [f"http://127.0.0.1:{origin_port}"]}).encode()
    now = time.time()
    status = {kind: http_get(port, "/fill", headers, "POST", body)[0]
              for kind, (headers, body) in _attempts(key, plan, now).items()}
    valid = commands.sign(key, "POST", "/fill", plan, now)
    status["valid"] = http_get(port, "/fill", valid, "POST", plan)[0]
    status["replayed"] = http_get(port, "/fill", valid, "POST", plan)[0]
    health_st, _, health = http_get(port, "/health")
    fill_st, _, fill = http_get(port, "/fill/status")
    counters = json.loads(health).get("counters", {}) if health_st == 200 else {}
    want = {f"commands_refused_{c}": list(COUNTER_OF.values()).count(c)
            for c in set(COUNTER_OF.values())}
    counted = {k: counters.get(k, 0) for k in want}
    bad_accepted = sum(status[k] < 300 for k in BAD_KINDS)
    plans_run = json.loads(fill).get("plan_id") if fill_st == 200 else None
    return {"status": status, "fill_commands_accepted_bad": bad_accepted,
            "bad_refused_403": sum(status[k] == 403 for k in BAD_KINDS),
            "bad_attempts": len(BAD_KINDS), "valid_accepted": status["valid"] == 202,
            "refusals_counted": counted, "plans_run": plans_run,
            "read_only_open": health_st == 200 and fill_st == 200,
            "ok": (bad_accepted == 0 and all(status[k] == 403 for k in BAD_KINDS)
                   and status["valid"] == 202 and counted == want and plans_run == 1
                   and health_st == 200 and fill_st == 200)}
