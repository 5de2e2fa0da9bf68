"""Traffic figures shared by scenarios: bytes per link class (kernel and controller counters,
and response bodies laid over plan paths), per-second upstream series, cache hit ratios and
startup delays.

Transit and peering are counted at the ISP border's port only (bytes entering or leaving an
ISP), so one transfer is not counted at both ends of an exchange. Pure, except LinkSampler
(which polls a running network).
"""
from __future__ import annotations

import threading
import time

import pandas as pd

from topologies.plan import Plan

UPSTREAM = ("transit", "peering")
HIT = ("hit", "coalesced")  # served from the OCA's store, or joined a pull already in flight
# a segment request an OCA answered from or into its cache, or refused as a content miss
CACHE_OUTCOMES = (*HIT, "miss", "fill", "content_miss")


def counter_delta(before: dict, after: dict) -> list[dict]:
    """Per link, the bytes counted between two counter readings: every `*_bytes` and `*_count`
    field of the `after` row (a link or field new in `after` from 0)."""
    rows = []
    for name, a in after.items():
        b = before.get(name, {})
        rows.append({"link": name, "cls": a["cls"], "node": a["node"],
                     **{k: v - b.get(k, 0) for k, v in a.items() if k.endswith(("_bytes", "_count"))}})
    return rows


def counted(cls: str, role: str | None) -> bool:
    """Whether a link of class `cls` is counted at a node of `role` (see the module docstring)."""
    return cls not in UPSTREAM or role == "border"


def bytes_by_class(rows: list[dict], plan: Plan, prefix: str = "") -> dict[str, int]:
    """Bytes that crossed each link class, counted once per link crossing: the sum of
    `to_node_<prefix>bytes` and `from_node_<prefix>bytes` (ints in `rows`)."""
    out: dict[str, int] = {}
    for r in rows:
        if counted(r["cls"], plan.node(r["node"]).role):
            out[r["cls"]] = out.get(r["cls"], 0) + r[f"to_node_{prefix}bytes"] + r[f"from_node_{prefix}bytes"]
    return out


def border_upstream_bytes(links: pd.DataFrame, roles: dict[str, str]) -> int:
    """Upstream (transit + peering) bytes of a counter-delta table, at ISP border ports."""
    if links.empty:
        return 0
    up = links[links["cls"].isin(UPSTREAM) & (links["node"].map(roles) == "border")]
    return int(up["to_node_bytes"].sum() + up["from_node_bytes"].sum())


def payload_by_class(access: list[dict], plan: Plan, origin: str) -> dict[str, int]:
    """Response-body bytes of every logged transfer, laid over the plan path from the server to
    the client and counted per link class like `bytes_by_class`. A function of the requests
    alone: no headers, retransmissions or probes, so one seeded request set gives the same
    figures every run. `access` rows need server, client and bytes; server "origin" is the plan
    node `origin`. Pure."""
    from topologies.routes import l3_end, path_links
    links = {lk.name: lk for lk in plan.links}
    ends = l3_end(plan)
    owners = {e.addr: n.name for n in plan.nodes for e in plan.ends_of(n.name) if e.addr}
    paths: dict[tuple[str, str], tuple[str, ...]] = {}
    out: dict[str, int] = {}
    for r in access:
        size = int(r["bytes"])
        if not size:
            continue
        src = origin if r["server"] == "origin" else r["server"]
        pair = (src, r["client"])
        if pair not in paths:
            if r["client"] not in owners:
                raise ValueError(f"access log client {r['client']!r} is no address of the plan")
            paths[pair] = path_links(plan, src, r["client"])
        for name in paths[pair]:
            cls = links[name].cls
            if counted(cls, plan.node(ends[name]).role):
                out[cls] = out.get(cls, 0) + size
    return out


def per_second(links_ts: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    """Per-interval bytes per link class from one run's cumulative counter samples.

    Columns t_s (the interval's end), cls, bytes, mbps (normalised by the interval); sorted by
    t_s then cls. A link counts in an interval when both its samples have counters; a counter
    that went backwards counts 0. Transit and peering count at ISP border ports only."""
    cols = ["t_s", "cls", "bytes", "mbps"]
    if links_ts.empty:
        return pd.DataFrame(columns=cols)
    ts = links_ts.drop_duplicates(["t_s", "link"], keep="last")
    total = (ts["to_node_bytes"] + ts["from_node_bytes"]).groupby([ts["t_s"], ts["link"]]).first().unstack()
    links = ts.drop_duplicates("link", keep="last").set_index("link")
    keep = [lk for lk in total.columns if counted(links.at[lk, "cls"], roles.get(links.at[lk, "node"]))]
    delta = total[keep].diff().clip(lower=0).iloc[1:]  # NaN: the link lacks a counter at either end
    by_cls = delta.T.groupby(links.loc[keep, "cls"]).sum(min_count=1).T
    out = by_cls.stack().rename("bytes").reset_index()  # drops the classes no link counted in
    out.columns = ["t_s", "cls", "bytes"]
    dt = pd.Series(total.index, index=total.index).diff()
    out["bytes"] = out["bytes"].astype("int64")
    out["mbps"] = [round(float(b) * 8 / 1e6 / float(dt[t]), 3) for t, b in zip(out["t_s"], out["bytes"])]
    return out.sort_values(["t_s", "cls"], kind="stable").reset_index(drop=True)[cols]


def upstream_mbps(series: pd.DataFrame) -> dict[float, float]:
    """Upstream (transit + peering) Mbit/s per sample time of a `per_second` series."""
    up = series[series["cls"].isin(UPSTREAM)]
    return {float(t): float(v) for t, v in up.groupby("t_s", sort=True)["mbps"].sum().items()}


def hit_ratios(requests: pd.DataFrame) -> tuple[float, float]:
    """(request, byte) hit ratio of OCA segment requests (origin excluded); nan if none. A request
    that joined another's pull in flight (`coalesced`) is a hit: it cost no upstream bytes."""
    rq = _oca_requests(requests)
    if rq.empty:
        return float("nan"), float("nan")
    hits = rq[rq["cache"].isin(HIT)]
    nbytes = int(rq["bytes"].sum())
    return len(hits) / len(rq), (int(hits["bytes"].sum()) / nbytes if nbytes else float("nan"))


def _oca_requests(requests: pd.DataFrame) -> pd.DataFrame:
    if requests.empty:
        return requests
    return requests[(requests["oca"] != "origin") & requests["cache"].isin(CACHE_OUTCOMES)]


def viewer_requests(requests: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """Requests sent by viewers (drops OCA-to-OCA fill traffic); rows without `client` are kept."""
    if "client" not in requests:
        return requests
    viewers = {plan.primary_ip(v.name) for v in plan.nodes_of(role="viewer")}
    client = requests["client"]
    return requests[client.isin(viewers) | client.isna() | (client == "")]


def startup_times(sessions: pd.DataFrame) -> pd.Series:
    """Startup delays (s) of the sessions that began playing. A session that failed before its
    first chunk (a login timed out over a saturated transit link, say) has no startup_s; it is
    counted in sessions_ok, not here."""
    if "startup_s" not in sessions:
        return pd.Series(dtype=float)
    return pd.to_numeric(sessions["startup_s"]).dropna()


def viewers_by_isp(plan: Plan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in plan.nodes_of(role="viewer"):
        out.setdefault(v.domain, []).append(v.name)
    return out


class LinkSampler:
    """Samples net.api('/links') every `period_s` in a thread; rows are cumulative counters."""

    def __init__(self, net, t0: float, tags: dict, period_s: float = 1.0) -> None:
        from topologies.routes import l3_end
        self.net, self.t0, self.tags, self.period_s = net, t0, tags, period_s
        self.rows: list[dict] = []
        self.errors = 0
        self._stop = threading.Event()
        self._nodes = l3_end(net.plan)
        self._thread = threading.Thread(target=self._loop, name="ocalab-link-sampler", daemon=True)

    def __enter__(self) -> "LinkSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.sample()
            nxt += self.period_s
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def sample(self) -> None:
        now = time.time()
        data = self.net.api("/links")
        if not isinstance(data, list):
            self.errors += 1
            return
        t_s = round(now - self.t0, 3)
        for r in data:
            self.rows.append({**self.tags, "t_s": t_s, "unix_s": round(now, 3), "link": r["name"],
                              "cls": r["cls"], "node": self._nodes.get(r["name"], ""),
                              "to_node_bytes": r.get("tx_bytes"), "from_node_bytes": r.get("rx_bytes")})
