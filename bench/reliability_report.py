"""The reliability report: one pass/fail row per check, written as reliability.md and
reliability.json and printed as a table.

Pure over the result dict of bench.reliability.run_checks, apart from writing the two files.
Checks that the test suite covers instead of this bench (`covered_by_tests`) are listed with
their tests and never counted as passed here.
"""
from __future__ import annotations

import json
from pathlib import Path


def fuzz_figures(f: dict) -> str:
    """One line of figures of a check_fuzz result."""
    return (f"{f['requests']} requests, {f['hangs']} hangs, {f['over_timeout']} over "
            f"{f['late_s']} s (max {f['max_seconds']} s), {f['status_500']} x 500, "
            f"{f['echoes']} echoes, {f['tracebacks']} tracebacks, {f['canary_leaks']} "
            f"outside-store leaks, {f['smuggled']} smuggled, alive {f['alive_after']}, "
            f"correct bytes after {f['correct_bytes_after']}, RSS {f['rss_kib_before']} -> "
            f"{f['rss_kib_after']} KiB"
            + (f", access log {f['access_log']['bytes_per_request']} B/request (longest line "
               f"{f['access_log']['max_line_bytes']} B)" if "access_log" in f else ""))


def _fairness(o: dict) -> str:
    """Legit clients' successes against their fair share (reliability_load.fair_shares)."""
    f = o.get("fairness")
    if not f:
        return ""
    got = "/".join(f"{r['successes']}" for r in f["legit"])
    share = "/".join(f"{r['fair_share']:g}" for r in f["legit"])
    return (f"legit successes {got} vs fair share {share} (min ratio {f['min_ratio']}, "
            f"need {f['required_ratio']}; {f['clients']} clients, {f['successes_total']} "
            f"successes), ")


def _commands(c: dict) -> str:
    """Signed-command check figures (reliability_commands.check_commands)."""
    return (f"fill_commands_accepted_bad: {c['fill_commands_accepted_bad']} "
            f"({c['bad_refused_403']}/{c['bad_attempts']} bad commands refused 403: "
            + ", ".join(f"{k} {v}" for k, v in c["status"].items() if k != "valid")
            + f"), valid command {c['status']['valid']}, refusals counted "
            f"{sum(c['refusals_counted'].values())}, GET /health and /fill/status open "
            f"{c['read_only_open']}")


def summary_rows(res: dict) -> list[tuple[str, bool, str]]:
    """(check, passed, figures) for every check this run made, in report order."""
    c, s, cc = res["conformance"], res["slowloris"], res["conn_cap"]
    o, t, k, i = res["overload"], res["tokens"], res["kill_during_fill"], res["integrity"]
    a = res["atheris"]
    atheris = a.get("skipped") or ", ".join(f"{n}: {v['summary']}" for n, v in a.items()
                                            if isinstance(v, dict))
    return [
        ("HTTP conformance", c["ok"], f"{c['passed']}/{c['checks']} ({c['cases']} cases x "
                                      f"{len(c['targets'])} servers)"),
        *[(f"fuzzing {f['server']}", f["ok"], fuzz_figures(f))
          for f in (res["fuzz"], res["fuzz_origin"], res["fuzz_oca_tok"])],
        ("path traversal", res["traversal"]["ok"], f"{res['traversal']['requests']} shapes, "
         f"{len(res['traversal']['served_outside_store'])} served from outside the store"),
        ("coverage-guided (atheris)", a["ok"], atheris),
        ("slowloris", s["ok"], f"{s['connections']} conns cut p50 {s['cut_p50_s']} s, max "
         f"{s['cut_max_s']} s (header timeout {s['header_timeout_s']} s), not cut {s['not_cut']}; "
         f"legit p99 {s['legit_baseline']['p99_ms']} -> {s['legit_during']['p99_ms']} ms"),
        ("connection cap", cc["ok"], f"{cc['opened']} opened, {cc['held_open']} held, "
         f"{cc['refused_503']} refused 503 + Retry-After"),
        ("overload", o["ok"], f"limits {o['max_streams']} streams / {o['egress_limit_mbps']} "
         f"Mbit/s; greedy {o['greedy']}, legit {o['legit_status']}, {_fairness(o)}legit p99 "
         f"{o['legit_p99_ms']} ms (baseline {o['baseline_p99_ms']}, bound {o['p99_bound_ms']})"),
        ("tokens", t["ok"], f"matrix {t['matrix_accepted']}/{t['matrix_attacks']} attacks "
         f"accepted, mutations {t['socket_mutations_accepted']}/{t['socket_mutations']} (sockets)"
         f" + {t['pure_mutations_accepted']}/{t['pure_mutations']} (pure) accepted"),
        *([("commands", res["commands"]["ok"], _commands(res["commands"]))]
          if "commands" in res else []),
        ("kill during fill", k["ok"], f"{k['trials']} SIGKILLs ({k['kills_mid_object']} mid-object)"
         f", partial objects served {k['partial_served_total']}"),
        ("integrity", i["ok"], f"{i['responses_verified']} responses, {i['bytes_verified']} bytes "
         f"verified, {i['mismatches']} mismatches"),
        ("servers", res["servers"]["ok"], f"exit codes {res['servers']['exit_codes']}, "
         f"tracebacks {sum(res['servers']['stderr_tracebacks'].values())}"),
    ]


def _conformance_lines(c: dict) -> list[str]:
    """The conformance table in markdown: one row per case, one column per server."""
    lines = ["", "## HTTP conformance (RFC 9110), over sockets", "",
             "| case | method | request headers | expect | " + " | ".join(c["targets"]) + " |",
             "|---|---|---|---|" + "---|" * len(c["targets"])]
    for r in c["rows"]:
        req = "; ".join(f"{k}: {v}" for k, v in r["request"].items())
        req = (req[:60] + "...") if len(req) > 63 else req
        req = req.replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['method']} | `{req}` | {r['expect']} | "
                     + " | ".join(str(r[t]) for t in c["targets"]) + " |")
    return lines


def write_report(out_dir: Path, res: dict) -> None:
    """reliability.json (the whole result) and reliability.md (tables) into out_dir."""
    (out_dir / "reliability.json").write_text(json.dumps(res, indent=1, default=str))
    lines = ["# ocalab reliability report", "",
             f"Overall: **{'PASS' if res['ok'] else 'FAIL'}** (quick={res['quick']}, "
             f"seed={res['seed']}, {res['duration_s']} s)", "", "| check | result | figures |",
             "|---|---|---|"]
    lines += [f"| {n} | {'pass' if ok else 'FAIL'} | {fig} |" for n, ok, fig in summary_rows(res)]
    lines += _conformance_lines(res["conformance"])
    f = res["fuzz"]
    lines += ["", "## Fuzzing: responses by category", "", "| category | statuses |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in f["by_category"].items()]
    lines += ["", "## Path traversal shapes (oca-disk)", "", "| target | status |", "|---|---|"]
    lines += [f"| `{r['target']}` | {r['status']} |" for r in res["traversal"]["rows"]]
    t = res["tokens"]
    lines += ["", "## Token matrix", "", "| case | expect | got |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['expect']} | {r['got']} |" for r in t["matrix"]]
    lines += ["", "## Left to the test suite (not run by this bench)", ""]
    lines += [f"- {what}: `{test}`" for what, test in res.get("covered_by_tests", {}).items()]
    k = res["kill_during_fill"]
    lines += ["", "## SIGKILL during fill", "", "| " + " | ".join(k["rows"][0]) + " |",
              "|" + "---|" * len(k["rows"][0])] if k["rows"] else []
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in k["rows"]]
    (out_dir / "reliability.md").write_text("\n".join(lines) + "\n")


def print_summary(out_dir: Path, res: dict) -> None:
    """The summary table, the checks left to the test suite, and the verdict, on stdout."""
    rows = summary_rows(res)
    width = max(len(n) for n, _, _ in rows)
    for name, ok, fig in rows:
        print(f"{name:<{width}}  {'pass' if ok else 'FAIL'}  {fig}")
    for what, test in res.get("covered_by_tests", {}).items():
        print(f"left to the test suite: {what} ({test})")
    print(f"reliability: {'PASS' if res['ok'] else 'FAIL'} in {res['duration_s']} s; "
          f"report {out_dir / 'reliability.md'}")
