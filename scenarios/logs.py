"""Every reader of the logs and tables scenarios save, and every join between them.

Errors are handled one way: a malformed row (a CSV row with too many fields, a JSON line that
does not parse) raises LogError naming the file and line; a missing optional file reads as
empty. Run-folder tables are read as pandas DataFrames (`read_table`), the players' and
servers' own logs as lists of dicts (`read_rows`, `read_jsonl`): those rows are tagged and
saved again as they are.

Joins of a chunk (the player's row) with an access-log row (the server's) use one window,
JOIN_WINDOW_S, and pick the row nearest in time; a 503 joins the latest prior steering decision.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

# the server logs when its last byte enters the socket, the player when it arrives: a full
# socket buffer on a slow emulated link puts seconds between them (nearest in time still wins)
JOIN_WINDOW_S = 30.0


class LogError(ValueError):
    """A malformed row in a log or table; the message names the file and line."""


# ---- files --------------------------------------------------------------------------------
def read_table(path: Path, optional: bool = True, text: bool = False) -> pd.DataFrame:
    """A CSV table as a DataFrame; a missing (when optional) or empty file is an empty one.

    Numbers parse as Python's float() does (pandas' default parser rounds correctly), so
    figures match the text; with `text` every cell stays a string and an empty cell is ""."""
    path = Path(path)
    if not path.exists():
        if optional:
            return pd.DataFrame()
        raise FileNotFoundError(f"{path}: table missing")
    if path.stat().st_size == 0:
        return pd.DataFrame()
    kw = {"dtype": str, "keep_default_na": False} if text else {}
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.ParserError as e:  # names the line ("Expected 9 fields in line 5, saw 10")
        raise LogError(f"{path}: {e}") from None


def read_rows(path: Path, optional: bool = True) -> list[dict]:
    """A CSV log as a list of dicts of strings (csv.DictReader's shape)."""
    return read_table(path, optional=optional, text=True).to_dict("records")


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines log; a missing file has none, blank lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LogError(f"{path}:{n}: not a JSON record ({e.msg})") from None
    return out


def sessions(path: Path) -> list[dict]:
    """A player's sessions (sessions-<host>.jsonl) without the per-session server list."""
    rows = read_jsonl(path)
    for s in rows:
        s.pop("servers", None)
    return rows


def segment_requests(logs: Path) -> list[tuple[str, dict]]:
    """(log name, record) of every segment request (/v/...) in the access logs in `logs`;
    the log name is the file's (`<server>.access.jsonl`), in file order."""
    out = []
    for path in sorted(Path(logs).glob("*.access.jsonl")):
        name = path.name.split(".")[0]
        out += [(name, r) for r in read_jsonl(path) if str(r.get("path", "")).startswith("/v/")]
    return out


def read_access(logs: Path, arm: str) -> list[dict]:
    """Segment requests of every access log in `logs` (OCAs and origin), tagged with `arm`."""
    return [{"arm": arm, "server": r["server"], "ts": r["ts"], "client": r["client"], "method": r["method"],
             "path": r["path"], "status": r["status"], "cache": r["cache"], "bytes": r["bytes"]}
            for _, r in segment_requests(logs)]


def read_steering(path: Path, arm: str) -> list[dict]:
    """One row per steering decision of the control plane (logs/steering.jsonl)."""
    return [_decision(d, arm) for d in read_jsonl(path)]


def _decision(d: dict, arm: str) -> dict:
    reasons = d.get("reasons") or {}

    def names(key: str) -> str:
        return " ".join(n for n, r in reasons.items() if r.get(key))
    return {"arm": arm, "ts": d["ts"], "viewer": d["viewer"], "account": d["account"],
            "title": d["title"], "first": d["ranked"][0] if d["ranked"] else "",
            "ranked": " ".join(d["ranked"]), "overloaded": names("overloaded"),
            "health_missed": names("health_miss"), "content_missed": names("content_miss"),
            # OCAs the controller left out (health misses), name=why
            "excluded": " ".join(f"{n}={why}" for n, why in sorted((d.get("excluded") or {}).items())),
            "policy": next((r.get("policy") for r in reasons.values() if r.get("policy")), ""),
            "fallback": int(any(r.get("steering") == "local-fallback" for r in reasons.values()))}


# ---- one run's logs as tidy rows ----------------------------------------------------------
def day_tables(logs: Path, tags: dict, t0: float, window_end: float) -> dict[str, list]:
    """Sessions, segment requests per OCA and upstream fills of one run (fill, flashcrowd);
    t_s is seconds since t0, `in_window` whether a fill began before window_end."""
    out: dict[str, list] = {"sessions": [], "requests": [], "fills": []}
    for f in sorted(Path(logs).glob("sessions-*.jsonl")):
        for s in sessions(f):
            s.pop("errors", None)
            out["sessions"].append({**tags, "t_s": round(s["started_unix"] - t0, 3), **s})
    for oca, r in segment_requests(logs):
        row = {**tags, "oca": oca, "client": r["client"], "t_s": round(r["ts"] - t0, 3), "path": r["path"],
               "status": r["status"], "bytes": r["bytes"], "cache": r["cache"]}
        out["requests"].append(row)
        if oca != "origin" and r["cache"] == "fill":
            out["fills"].append({**tags, "oca": oca, "t_s": row["t_s"], "kind": "pull",
                                 "bytes": r["bytes"], "in_window": r["ts"] < window_end})
    for f in sorted(Path(logs).glob("*.fill.jsonl")):
        oca = f.name.split(".")[0]
        for r in read_jsonl(f):
            if r.get("status") == "ok":
                out["fills"].append({**tags, "oca": oca, "t_s": round(r["ts"] - t0, 3), "kind": "push",
                                     "bytes": r["bytes"], "in_window": r["ts"] < window_end})
    return out


def viewer_tables(svc, arm: str, viewers: list[str], tables: dict) -> None:
    """Chunks (server resolved), sessions and segment access-log rows of one arm into `tables`
    (failover, steering)."""
    access = read_access(svc.logs, arm)
    chunks = []
    for v in viewers:
        client = svc.plan.primary_ip(v)
        chunks += [{"arm": arm, "host": v, "client": client, **r} for r in read_rows(svc.logs / f"chunks-{v}.csv")]
        for s in sessions(svc.logs / f"sessions-{v}.jsonl"):
            s["errors"] = len(s.get("errors") or [])
            tables["sessions"].append({"arm": arm, "host": v, **s})
    tiers = {o["name"]: o["tier"] for o in svc.dep["ocas"]} | {"origin": "origin"}
    tables["chunks"] += resolve_servers(chunks, access, tiers)
    tables["access"] += access


# ---- joins ----------------------------------------------------------------------------------
def segment_path(chunk: dict) -> str:
    return f"/v/{chunk['title']}/{chunk['kbps']}/{chunk['index']}"


def _index(access: list[dict], key, statuses: tuple[int, ...]) -> dict[tuple, list[dict]]:
    index: dict[tuple, list[dict]] = {}
    for r in access:
        if int(r["status"]) in statuses:
            index.setdefault(key(r), []).append(r)
    return index


def nearest(rows: list[dict], t: float, window_s: float = JOIN_WINDOW_S) -> dict | None:
    """The row whose `ts` is nearest t (the first of ties) if within window_s, else None."""
    best = min(rows, key=lambda r: abs(float(r["ts"]) - t), default=None)
    return best if best is not None and abs(float(best["ts"]) - t) <= window_s else None


def attach_cache(chunks: list[dict], access: list[dict], client: str) -> list[dict]:
    """Each chunk with `cache` (hit, miss, ...) from the serving server's access-log row (200
    or 206) for the same client and path nearest in time (`unmatched` if none). Pure."""
    index = _index([r for r in access if r["client"] == client], lambda r: (r["server"], r["path"]), (200, 206))
    out = []
    for c in chunks:
        best = nearest(index.get((c["server"], segment_path(c)), []), float(c["time"]))
        out.append({**c, "cache": best["cache"] if best else "unmatched"})
    return out


def resolve_servers(chunks: list[dict], access: list[dict], tiers: dict[str, str]) -> list[dict]:
    """Each chunk with `pathway` (what the player fetched) and `server`/`tier` (who sent the bytes).

    A chunk whose pathway is not a known location (the anycast address) gets as `server` the
    node its response named (`node`, the X-Ocalab-Node header) and, as an independent
    cross-check, `log_server`: the server of the 200 access-log row with the same client, path
    and byte count (a whole body) nearest the chunk's time, "" if none. Without a node header
    the log join decides; a chunk neither names keeps server "unresolved". Pure."""
    index = _index(access, lambda r: (r["client"], r["path"]), (200,))
    out = []
    for c in chunks:
        c = {**c, "pathway": c["server"], "log_server": ""}
        if c["server"] not in tiers:
            cands = [r for r in index.get((c["client"], segment_path(c)), [])
                     if int(r.get("bytes", c["bytes"])) == int(c["bytes"])]
            best = nearest(cands, float(c["time"]))
            c["log_server"] = best["server"] if best else ""
            node = c.get("node") or ""
            c["server"] = node if node in tiers else (c["log_server"] or "unresolved")
            c["tier"] = tiers.get(c["server"], "unknown")
        out.append(c)
    return out


def join_misses(access: list[dict], decisions: list[dict]) -> list[dict]:
    """Each 503 to a GET (a viewer's health miss at the OCA) with the latest steering decision
    for the same viewer address and title made before it: whether that decision ranked the
    refusing OCA first and whether it already knew it was overloaded or unhealthy. Pure."""
    out = []
    for r in access:
        if int(r["status"]) != 503 or r.get("method", "GET") != "GET":
            continue
        title = str(r["path"]).split("/")[2]
        prior = [d for d in decisions if d["viewer"] == r["client"] and d["title"] == title
                 and float(d["ts"]) <= float(r["ts"])]
        d = max(prior, key=lambda d: float(d["ts"]), default=None)
        out.append({"arm": r["arm"], "ts": r["ts"], "server": r["server"], "client": r["client"],
                    "path": r["path"], "decision_ts": d["ts"] if d else "",
                    "ranked_first": int(bool(d) and d["first"] == r["server"]),
                    "known_overloaded": int(bool(d) and r["server"] in d["overloaded"].split()),
                    "known_unhealthy": int(bool(d) and r["server"] in d["health_missed"].split())})
    return out


def of_arm(table: pd.DataFrame, arm: str) -> pd.DataFrame:
    """The rows of one arm (none if the table is empty and so has no columns)."""
    return table[table["arm"] == arm] if "arm" in table else table


def text_table(rows: list[dict], cols: list[str]) -> str:
    """`rows` as right-aligned text columns `cols`, each as wide as its widest cell."""
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in cols]
    return "\n".join(["  ".join(f"{c:>{w}s}" for c, w in zip(cols, widths))] +
                     ["  ".join(f"{str(r[c]):>{w}s}" for c, w in zip(cols, widths)) for r in rows])
