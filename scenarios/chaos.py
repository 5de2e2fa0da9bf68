"""Scenario `chaos`: viewers of every ISP play continuously (sessions start throughout the run)
while a fault runner applies the seeded schedule of scenarios.chaos_plan, one fault at a time:
an OCA SIGKILLed then restarted, a link black-holed then up, extra delay and loss on a link then
cleared, the control plane (its host's services: playback/steering API and the OCA prober)
SIGKILLed then restarted, the os-ken controller SIGKILLed then restarted.

Behaviour under test, stated:
- controller: every OVS bridge runs fail mode `secure` (emulation.build); the installed flows
  stay while the controller is away, so forwarding of the (proactive) plan continues; on restart
  the controller deletes its cookies' flows and installs them again. The events table records
  the flow tables' difference before the kill / during / after restart (stale and missing flows).
- control plane: sessions already playing go on (the OCAs verify URL tokens with their own key;
  nothing on the data path calls the control plane); a session starting meanwhile tries login
  and manifest 3 times (appliances.player_session) and then fails cleanly, recorded as status
  `failed` with the refused connection as its error. The player keeps no steering answer across
  sessions, so no stale answer is used; a session already playing keeps its own manifest.

Saved tables (every row has `arm` = "chaos"): events.csv (one row per fault: scheduled_s,
start/applied/end/restored unix times, kind, target, params and detail as JSON, controller
flow checks), chunks.csv, sessions.csv, failures.csv (each recorded failed attempt: viewer,
segment index, pathway, error), access.csv. `summarize(run_dir)` writes summary.csv from them
(no root): one row per fault plus a `baseline` row for the warm-up before the first fault.
"""
from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import pandas as pd

from harness.rundir import table_path, write_csv
from harness.runner import Scenario
from scenarios import chaos_plan
from scenarios.logs import read_jsonl, read_table, viewer_tables

ARM = "chaos"
# a fault's window runs from its start until SETTLE_S after it was undone: a fetch that timed
# out during the fault, or a refill of the buffer, completes a little after (< chaos_plan.GAP_S)
SETTLE_S = 5.0
ERROR_RE = re.compile(r"^seg (\d+) (\S+): (.*)$")  # appliances.player_session: "seg N pathway: why"
HASH_ERROR = "SHA-256 mismatch"
CONTROL_SERVICES = ("probe", "control")  # the control host's services, in start order
CONTROL_PLANE_BEHAVIOUR = ("sessions playing continue on their manifest (the data plane does not "
                           "call the control plane); a session starting during the kill tries login "
                           "3 times, then fails cleanly (status failed); no stale steering answer is used")


def _settings(quick: bool) -> dict:
    ladder = [235, 375, 560, 750, 1050, 1750]  # a light ladder: 2 cores carry ~15 sessions at once
    if quick:
        return {"quick": True, "duration_s": 115.0, "sessions_per_host": 8, "ramp_s": 115.0,
                "segments": 10, "max_buffer_s": 10.0,
                "catalog": {"seed": 1, "n_titles": 6, "duration_s": 40, "ladder_kbps": ladder}}
    return {"quick": False, "duration_s": 400.0, "sessions_per_host": 26, "ramp_s": 400.0,
            "segments": 10, "max_buffer_s": 10.0,
            "catalog": {"seed": 1, "n_titles": 12, "duration_s": 40, "ladder_kbps": ladder}}


def check_plan(plan) -> None:
    """A PlanError/ValueError before any namespace exists if the plan cannot hold the schedule."""
    chaos_plan.schedule(plan, 1, _settings(True)["duration_s"], True)


# ---- the run (root) -------------------------------------------------------------------------

class FaultRunner(threading.Thread):
    """Applies `events` (chaos_plan.FaultEvent, times from t0) one at a time and undoes each after
    its duration; one row per fault in `rows`. An exception is kept in `error` (the caller
    raises it); `halt` stops the runner early, undoing the current link fault."""

    def __init__(self, net, svc, events: list, t0: float) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.net, self.svc, self.events, self.t0 = net, svc, events, t0
        self.rows: list[dict] = []
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            for i, ev in enumerate(self.events):
                if self.halt.wait(max(0.0, self.t0 + ev.time_s - time.time())):
                    return
                self._one(i, ev)
        except BaseException as exc:  # kept for the main thread, which raises it
            self.error = exc

    def _one(self, i: int, ev) -> None:
        row = {"arm": ARM, "fault": f"f{i}", "kind": ev.kind, "target": ev.target,
               "scheduled_s": ev.time_s, "duration_s": ev.duration_s,
               "params": json.dumps(ev.params, sort_keys=True), "start_unix": time.time()}
        print(f"chaos: +{row['start_unix'] - self.t0:.1f} s {ev.kind} {ev.target} for {ev.duration_s:g} s",
              flush=True)
        detail = self._apply(ev)
        row["applied_unix"] = time.time()
        halted = self.halt.wait(max(0.0, row["start_unix"] + ev.duration_s - time.time()))
        row["end_unix"] = time.time()
        if halted and ev.kind not in ("link_down", "link_impair"):  # teardown stops the rest
            detail.pop("before", None)
            self.rows.append({**row, "detail": json.dumps(detail), "restored_unix": None})
            return
        detail.update(self._undo(ev, detail))
        row["restored_unix"] = time.time()
        print(f"chaos: +{row['restored_unix'] - self.t0:.1f} s {ev.kind} {ev.target} undone "
              f"({row['restored_unix'] - row['end_unix']:.1f} s)", flush=True)
        self.rows.append({**row, **_flow_columns(detail), "detail": json.dumps(detail, sort_keys=True)})

    def _apply(self, ev) -> dict:
        if ev.kind == "oca_kill":
            self.svc.kill(ev.target, signal.SIGKILL)
            return {"killed": [ev.target]}
        if ev.kind == "link_down":
            self.net.link_down(ev.target)
            return {}
        if ev.kind == "link_impair":
            self.net.impair(ev.target, extra_delay_ms=ev.params["extra_delay_ms"], loss_pct=ev.params["loss_pct"])
            return {}
        if ev.kind == "control_plane_kill":
            killed = [s for s in CONTROL_SERVICES if s in self.svc.launched]
            for s in killed:
                self.svc.kill(s, signal.SIGKILL)
            return {"killed": killed}
        if ev.kind == "controller_kill":
            before = self.net.flow_tables()
            self.net.controller_proc().send_signal(signal.SIGKILL)
            self.net.controller_proc().wait(10)
            during = self.net.flow_tables()
            return {"fail_modes": sorted(set(self.net.fail_modes().values())), "before": before,
                    "flows_before": _n_flows(before), "flows_kept_during": int(during == before)}
        raise ValueError(f"unknown fault kind {ev.kind!r}")

    def _undo(self, ev, detail: dict) -> dict:
        if ev.kind == "oca_kill":
            self.svc.restart(ev.target)
        elif ev.kind == "link_down":
            self.net.link_up(ev.target)
        elif ev.kind == "link_impair":
            self.net.impair(ev.target, extra_delay_ms=0.0, loss_pct=0.0)
        elif ev.kind == "control_plane_kill":
            for s in detail["killed"]:
                self.svc.restart(s)
        elif ev.kind == "controller_kill":
            self.net.restart_controller()
            before, after = detail.pop("before"), self.net.flow_tables()
            return {"flows_after": _n_flows(after), **flow_diff(before, after)}
        return {}


def flow_diff(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict:
    """Stale flows (after a restart, absent before the kill) and missing ones, summed over the
    bridges; flows compared without counters (dump-flows --no-stats). Pure."""
    names = set(before) | set(after)
    return {"stale_flows": sum(len(set(after.get(b, [])) - set(before.get(b, []))) for b in names),
            "missing_flows": sum(len(set(before.get(b, [])) - set(after.get(b, []))) for b in names)}


def _n_flows(tables: dict[str, list[str]]) -> int:
    return sum(len(v) for v in tables.values())


def _flow_columns(detail: dict) -> dict:
    keys = ("flows_before", "flows_kept_during", "flows_after", "stale_flows", "missing_flows")
    return {k: detail.get(k, "") for k in keys} | {"fail_mode": " ".join(detail.get("fail_modes", []))}


def body(net, run_dir: Path, cfg: dict, seed: int, tables: dict) -> dict:
    from harness.services import STEADY_STATE, ServiceOptions, Services
    events = chaos_plan.schedule(net.plan, seed, cfg["duration_s"], cfg["quick"])
    svc = Services(net, run_dir / "arms" / ARM, ServiceOptions(
        arm="embedded", catalog=cfg["catalog"], capacity_rules=cfg["capacity"], miss=cfg["miss"],
        stage_tiers=STEADY_STATE, history={"seed": seed}, fill_segments_per_title=cfg["segments"],
        abr=cfg["abr"]))
    viewers = [v.name for v in net.plan.nodes_of(role="viewer")]
    runner = None
    try:
        svc.start()
        fail_modes = net.fail_modes()
        t0 = time.time()
        runner = FaultRunner(net, svc, events, t0)
        runner.start()
        procs = _start_players(svc, viewers, cfg, seed, t0)
        runner.join(cfg["duration_s"] + 120)
        if runner.error is not None:
            raise runner.error
        if runner.is_alive():
            raise RuntimeError("chaos: the fault runner did not finish its schedule in time")
        svc.wait_players(procs, cfg["ramp_s"] + 200)
    finally:
        if runner is not None:
            runner.halt.set()
            runner.join(60)
        svc.stop()
    tables["events"] += runner.rows
    viewer_tables(svc, ARM, viewers, tables)
    tables["failures"] += failure_rows(svc.logs, viewers)
    return {"schedule": [e.to_json() for e in events], "fail_modes": fail_modes,
            "control_plane_kill": CONTROL_PLANE_BEHAVIOUR, "playback_t0_unix": t0}


def _start_players(svc, viewers: list[str], cfg: dict, seed: int, t0: float) -> list:
    """One player process per viewer host, each starting `sessions_per_host` sessions spread over
    ramp_s (= the schedule's duration, so sessions start inside every fault); the hosts' starts are
    staggered so that a session starts every ramp/(N*hosts) s."""
    n = cfg["sessions_per_host"]
    step_s = cfg["ramp_s"] / n / len(viewers)
    procs = []
    for k, v in enumerate(viewers):
        time.sleep(max(0.0, t0 + k * step_s - time.time()))
        procs.append(svc.play(v, n, cfg["segments"], seed * 1000 + k, ramp_s=cfg["ramp_s"],
                              max_wall_s=cfg["duration_s"] + 150, max_buffer_s=cfg["max_buffer_s"]))
    return procs


def failure_rows(logs: Path, viewers: list[str]) -> list[dict]:
    """One row per failed attempt the players recorded (appliances.player_session keeps the first
    20 of a session as "seg N pathway: error")."""
    rows = []
    for v in viewers:
        for s in read_jsonl(logs / f"sessions-{v}.jsonl"):
            for text in s.get("errors") or []:
                m = ERROR_RE.match(text)
                if m is None:
                    raise ValueError(f"sessions-{v}.jsonl: {s['viewer']}: unparsed error {text!r}")
                rows.append({"arm": ARM, "host": v, "viewer": s["viewer"], "index": int(m[1]),
                             "pathway": m[2], "error": m[3], "hash_failure": int(HASH_ERROR in m[3])})
    return rows


# ---- pure summary ---------------------------------------------------------------------------

def prepare(chunks: pd.DataFrame, sessions: pd.DataFrame, failures: pd.DataFrame):
    """(chunks, sessions, failures) with the columns the windows need. Chunks get `failed_before`
    (the player recorded a failed attempt for that segment), `recovered` (the fetch that ended a
    failure or a stall), `disturbed` (also any fallback not caused by a content miss) and `moved`
    (served by another tier than the session's first location); sessions get `first_chunk`
    (unix time of their first chunk, NaN if none); failures get `t_unix` (when the segment was
    finally fetched, or the session ended) and `bytes` (that segment's size). Pure."""
    ch = chunks.copy()
    fl = failures.copy() if not failures.empty else pd.DataFrame(
        columns=["viewer", "index", "error", "hash_failure"])
    keys = set(zip(fl["viewer"], fl["index"].astype(int)))
    ch["failed_before"] = [(v, int(i)) in keys for v, i in zip(ch["viewer"], ch["index"])]
    reason = ch["fallback_reason"].fillna("") if "fallback_reason" in ch else pd.Series("", index=ch.index)
    ch["recovered"] = ch["failed_before"] | (ch["rebuffer_s"] > 0)
    ch["disturbed"] = ch["recovered"] | ((ch["fallback"] == 1) & (reason != "content_miss"))
    tiers = dict(zip(ch["server"], ch["tier"])) | {"origin": "origin"}
    ss = sessions.copy()
    first_tier = dict(zip(ss["viewer"], ss["first_location"].map(tiers)))
    ch["moved"] = ch["tier"] != ch["viewer"].map(first_tier)
    ss["first_chunk"] = ss["viewer"].map(ch.groupby("viewer")["time"].min())
    at = ch.set_index(["viewer", "index"])
    seg = at[~at.index.duplicated()]
    ended = dict(zip(ss["viewer"], ss["ended_unix"]))
    fl["t_unix"] = [seg["time"].get((v, int(i)), ended.get(v)) for v, i in zip(fl["viewer"], fl["index"])]
    mean_bytes = ch.groupby("viewer")["bytes"].mean()
    fl["bytes"] = [seg["bytes"].get((v, int(i)), mean_bytes.get(v, 0)) for v, i in zip(fl["viewer"], fl["index"])]
    return ch, ss, fl


def window_figures(ch: pd.DataFrame, ss: pd.DataFrame, fl: pd.DataFrame, a: float, b: float,
                   next_a: float) -> dict:
    """The figures of one fault window [a, b] (unix s; b = undone + SETTLE_S) from prepare()'s
    tables; next_a: when the next fault starts (a session ending before it is charged to this one).
    - affected: sessions with a disturbed chunk in the window, or ending not ok in it;
    - recovery_s: from a until the last fetch that ended a failure or stall in the window, and
      until the first session started after the window's last failed start got its first chunk
      (None if none did); 0 when no session noticed the fault;
    - lost: sessions that had their first chunk before a and ended not ok in [a, next_a);
    - moved: bytes from another tier than the session's first location, in the window and in
      the window of the same length before a. Pure."""
    win = ch[(ch["time"] >= a) & (ch["time"] <= b)]
    before = ch[(ch["time"] >= 2 * a - b) & (ch["time"] < a)]
    bad_end = (ss["status"] != "ok") & ss["ended_unix"].between(a, b)
    affected = set(win.loc[win["disturbed"], "viewer"]) | set(ss.loc[bad_end, "viewer"])
    started = ss[ss["started_unix"].between(a, b)]
    failed_starts = started[(started["status"] != "ok") & started["first_chunk"].isna()]
    rec = win.loc[win["recovered"], "time"]
    recovery = float(rec.max()) - a if len(rec) else 0.0
    if len(failed_starts):
        later = ss[(ss["started_unix"] > failed_starts["started_unix"].max()) & ss["first_chunk"].notna()]
        recovery = max(recovery, float(later["first_chunk"].min()) - a) if len(later) else None
    lost = ss[(ss["first_chunk"] < a) & (ss["status"] != "ok") & (ss["ended_unix"] >= a)
              & (ss["ended_unix"] < next_a)]
    hashes = fl[(fl["hash_failure"] == 1) & fl["t_unix"].between(a, b)]
    moved, moved_before = int(win.loc[win["moved"], "bytes"].sum()), int(before.loc[before["moved"], "bytes"].sum())
    return {"window_s": round(b - a, 3),
            "sessions_playing": int(((ss["first_chunk"] <= b) & (ss["ended_unix"] >= a)).sum()),
            "sessions_affected": len(affected), "sessions_started": len(started),
            "starts_failed": len(failed_starts), "sessions_lost": len(lost),
            "recovery_s": None if recovery is None else round(recovery, 3),
            "rebuffer_s": round(float(win["rebuffer_s"].sum()), 3),
            "failed_fetches": int(win["failed_before"].sum()),
            "fallback_chunks": int((win["fallback"] == 1).sum()),
            "moved_mb": round(moved / 1e6, 3), "moved_mb_before": round(moved_before / 1e6, 3),
            "moved_extra_mb": round((moved - moved_before) / 1e6, 3),
            "hash_failures": len(hashes), "corrupted_bytes": int(hashes["bytes"].sum())}


def fault_rows(events: pd.DataFrame, chunks: pd.DataFrame, sessions: pd.DataFrame,
               failures: pd.DataFrame) -> list[dict]:
    """One row per fault (events in time order) plus a first `baseline` row: the warm-up from the
    first chunk to the first fault, judged the same way. Pure."""
    ch, ss, fl = prepare(chunks, sessions, failures)
    ev = events.sort_values("start_unix", kind="stable").to_dict("records")
    starts = [float(e["start_unix"]) for e in ev] + [float("inf")]
    t_first = float(ch["time"].min()) if len(ch) else starts[0]
    rows = [{"fault": "baseline", "kind": "none", "target": "", "params": "{}",
             "start_unix": round(t_first, 3), "end_unix": round(starts[0], 3),
             **window_figures(ch, ss, fl, t_first, starts[0], starts[0]),
             "hash_failures_run": int(ss["hash_failures"].sum())}]
    for i, e in enumerate(ev):
        done = e.get("restored_unix")
        end = float(e["end_unix"]) if done is None or pd.isna(done) else float(done)
        a = float(e["start_unix"])
        extra = {k: e[k] for k in ("stale_flows", "missing_flows", "flows_kept_during", "fail_mode")
                 if k in e and not (isinstance(e[k], float) and pd.isna(e[k]))}
        rows.append({"fault": e["fault"], "kind": e["kind"], "target": e["target"], "params": e["params"],
                     "start_unix": round(a, 3), "end_unix": round(end, 3),
                     **window_figures(ch, ss, fl, a, end + SETTLE_S, starts[i + 1]), **extra})
    return rows


def _count(x) -> int:
    """A count from a summary row, also as read back from CSV: 0 for a blank (None, "", NaN)."""
    return 0 if x is None or x == "" or pd.isna(x) else int(x)


def verdict(rows: list[dict]) -> tuple[bool, str]:
    """PASS iff no corrupted byte was served (no hash failure anywhere in the run) and no session
    that had started playing was lost to a control-plane kill."""
    corrupt = sum(_count(r.get("corrupted_bytes")) for r in rows)
    hashes = sum(_count(r.get("hash_failures_run")) for r in rows)
    lost = sum(_count(r.get("sessions_lost")) for r in rows if r["kind"] == "control_plane_kill")
    ok = corrupt == 0 and hashes == 0 and lost == 0
    return ok, (f"chaos verdict: {'PASS' if ok else 'FAIL'}: corrupted bytes served {corrupt} "
                f"(hash failures in the run {hashes}; must be 0), started sessions lost to the "
                f"control-plane kill {lost} (must be 0)")


def summarize(run_dir: Path) -> list[dict]:
    """summary.csv (one row per fault and a baseline row) from the saved tables; no root."""
    events, chunks, sessions = (read_table(table_path(run_dir, n), optional=False)
                                for n in ("events", "chunks", "sessions"))
    failures = read_table(table_path(run_dir, "failures"))
    rows = fault_rows(events, chunks, sessions, failures)
    write_csv(run_dir / "summary.csv", rows)
    return rows


COLUMNS = ("fault", "kind", "target", "sessions_playing", "sessions_affected", "starts_failed",
           "sessions_lost", "recovery_s", "rebuffer_s", "moved_extra_mb", "corrupted_bytes")


def format_table(rows: list[dict]) -> str:
    """The summary as text, the controller's flow checks, and the verdict line."""
    table = pd.DataFrame(rows, columns=list(COLUMNS)).to_string(index=False, na_rep="-")
    notes = [f"controller kill: fail mode {r.get('fail_mode', '?')}, flows kept while away "
             f"{_int(r.get('flows_kept_during'))}, stale after restart {_int(r.get('stale_flows'))}, "
             f"missing {_int(r.get('missing_flows'))}" for r in rows if r["kind"] == "controller_kill"]
    return "\n".join([table, *notes, verdict(rows)[1]])


def _int(x) -> str:
    """A count read back from CSV (a float when its column has blanks) as text; "?" if absent."""
    return "?" if x is None or x == "" or pd.isna(x) else str(int(x))


STABLE = ("kind", "target")  # the seeded schedule; every other figure depends on timing

SCENARIO = Scenario(
    name="chaos", settings=_settings, body=body, summarize=summarize, format_table=format_table,
    tables=("events", "chunks", "sessions", "failures", "access"), key=("fault",), stable=STABLE,
    check_plan=check_plan, manifest=lambda cfg: {"arms": (ARM,)})


def run(a) -> int:
    from harness.runner import run as run_scenario
    return run_scenario(a, SCENARIO)
