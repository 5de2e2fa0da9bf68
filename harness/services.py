"""Place the appliances in a built network: origin and control plane in the cloud region, OCAs in
their hosts, players in viewer hosts. Every process goes through the network's ProcessGroup
(tracked by handle and in the ledger) and is stopped with the network.

Arms select which OCAs exist: `origin` (none), `ixp` (IXP site only), `embedded` (all).
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from appliances import tokens
from emulation.build import Network, read_ready
from emulation.linkemu import EmulationError
from topologies.plan import Plan
from topologies.routes import l3_path, path_delay_ms

ARMS = ("origin", "ixp", "embedded")
FILL_MODES = ("none", "network")
STEADY_STATE = ("ixp", "embedded")  # stage_tiers of a serve experiment: every OCA starts filled
# Appliances and players run at nice WORKLOAD_NICE. When the CPUs are busy something waits; it
# must be the workload (which the run's QoE and host_cpu record), never the emulated network:
# relays are SCHED_FIFO, OVS runs at nice -10, and the kernel's softirq threads at nice 0.
WORKLOAD_NICE = 10
NICE = ("nice", "-n", str(WORKLOAD_NICE))
from contracts.deployment import CONTROL_PORT, OCA_PORT  # noqa: E402 (re-exported)


@dataclass(frozen=True)
class ServiceOptions:
    arm: str = "embedded"
    catalog: dict = field(default_factory=lambda: {"seed": 1, "n_titles": 100, "duration_s": 120})
    capacity_mb: float = 2000.0           # every OCA's store, unless capacity_rules sizes it
    capacity_rules: dict | None = None    # tier -> harness.sizing rule ("head:0.9", "1"); None: capacity_mb
    miss: str = "content_miss"            # OCA miss mode: content_miss (Open Connect) | proxy | redirect
    fill: str = "none"                    # none | network (the control plane pushes plans at start)
    stage_tiers: tuple[str, ...] = ()     # tiers whose stores hold their plan before start (harness.staging)
    launch_titles: tuple[str, ...] = ()   # released today: in no history, no staged store
    history: dict | None = None           # past days' trace {seed, sessions_per_region, drift, days, skip_days}; None: plans
                                          # use today's popularity (fill scenario's truth-based baseline)
    # the history the staged plans come from, e.g. `history` a night ago (skip_days 1), so a
    # store holds last night's plan and tonight's push moves only the change (Open Connect's
    # nightly fill); None: `history` (the stores hold tonight's plan already)
    stage_history: dict | None = None
    lru_tiers: tuple[str, ...] = ()       # stage_tiers staged with yesterday's LRU state, not a plan
    fill_rate_mbps: dict | None = None    # tier -> each OCA's fill rate cap (deployment fill_rate_mbps)
    fill_segments_per_title: int | None = None
    steering: str = "manifest"            # manifest (controller ranks OCA URLs) | anycast (SDN)
    oca_args: tuple[str, ...] = ()        # extra OCA flags, e.g. ("--max-streams", "4")
    control_args: tuple[str, ...] = ()    # extra control-plane flags, e.g. ("--fill-window-s", "60")
    abr: str = "bba"                      # players' ABR (appliances.abr.ALGORITHMS)
    warm_titles: int | None = None        # manifests the control plane precomputes (None: all)
    wait_warm: bool = True                # start() returns only when they are done
    tls: bool = False                     # https everywhere (lab CA in the scratch folder); False: http
    media_dir: str | None = None          # a media build (appliances.media_encode) served instead of
                                          # `catalog`; players then read the DASH MPD

    def __post_init__(self) -> None:
        if self.arm not in ARMS:
            raise ValueError(f"arm: {self.arm!r} is not one of {ARMS}")
        if self.fill not in FILL_MODES:
            raise ValueError(f"fill: {self.fill!r} is not one of {FILL_MODES}")
        if not set(self.stage_tiers) <= set(STEADY_STATE):
            raise ValueError(f"stage_tiers: {self.stage_tiers!r} names a tier not in {STEADY_STATE}")
        if not set(self.lru_tiers) <= set(self.stage_tiers):
            raise ValueError(f"lru_tiers: {self.lru_tiers!r} names a tier not in stage_tiers")
        for tier, rate in (self.fill_rate_mbps or {}).items():
            if tier not in STEADY_STATE or isinstance(rate, bool) or not isinstance(rate, (int, float)) \
                    or not rate > 0:
                raise ValueError(f"fill_rate_mbps: {tier}={rate!r} needs a tier of {STEADY_STATE} and a rate > 0")
        if self.lru_tiers and self.history is None:
            raise ValueError("lru_tiers: an LRU state is replayed from history, which is None")
        if self.capacity_rules is not None:
            from harness.sizing import parse_rule
            for tier, rule in self.capacity_rules.items():
                parse_rule(rule, f"{tier}_capacity")
        if self.steering not in ("manifest", "anycast"):
            raise ValueError(f"steering: {self.steering!r} is not manifest or anycast")
        from appliances.abr import ALGORITHMS
        if self.abr not in ALGORITHMS:
            raise ValueError(f"abr: {self.abr!r} is not one of {ALGORITHMS}")
        if self.tls and self.steering == "anycast":  # certificates carry no anycast address yet
            raise ValueError("tls: anycast steering over https is not supported yet")
        if self.media_dir and (self.fill != "none" or self.stage_tiers or self.capacity_rules):
            raise ValueError("media_dir: fills, staging and capacity rules assume one ladder for "
                             "every title; per-title ladders do not support them yet")
        from appliances.oca import MISS_MODES
        if self.miss not in MISS_MODES:  # fail here, not as an OCA that never prints READY
            raise ValueError(f"miss: {self.miss!r} is not one of {MISS_MODES}")


def _catalog_args(catalog: dict) -> list[str]:
    from contracts.catalog import format_ladder
    flags = {"seed": "--catalog-seed", "n_titles": "--titles", "duration_s": "--duration-s",
             "zipf_alpha": "--zipf-alpha", "ladder_kbps": "--ladder-kbps"}
    out: list[str] = []
    for k, v in catalog.items():
        if k not in flags:
            raise ValueError(f"catalog: unknown key {k!r}; known: {', '.join(flags)}")
        out += [flags[k], format_ladder(v) if k == "ladder_kbps" else str(v)]
    return out


def isp_prefixes(plan: Plan) -> dict[str, str]:
    """ISP domain -> the LAN prefix its viewers live in."""
    from topologies.bgp import viewer_prefixes
    return viewer_prefixes(plan)


def ocas_for_arm(plan: Plan, arm: str) -> list:
    tiers = {"origin": (), "ixp": ("ixp",), "embedded": ("ixp", "embedded")}[arm]
    return [n for n in plan.nodes_of(role="oca") if n.tier in tiers]


def scheme(opts: ServiceOptions) -> str:
    return "https" if opts.tls else "http"


def deployment(plan: Plan, opts: ServiceOptions) -> dict:
    """The control plane's deployment description, derived from the plan (hops and RTT too)."""
    prefixes = isp_prefixes(plan)
    sch = scheme(opts)
    origin_ip = plan.primary_ip(plan.nodes_of(role="origin")[0].name)
    ocas = []
    for n in ocas_for_arm(plan, opts.arm):
        ip = plan.primary_ip(n.name)
        serves = [prefixes[n.domain]] if n.tier == "embedded" else sorted(prefixes.values())
        viewer = next(v.name for v in plan.nodes_of(role="viewer")
                      if prefixes[v.domain] in serves)
        ocas.append({"name": n.name, "tier": n.tier, "url": f"{sch}://{ip}:{OCA_PORT}", "serves": serves,
                     "distance_hops": len(l3_path(plan, viewer, ip)),
                     "rtt_ms": round(2 * path_delay_ms(plan, viewer, ip), 3),
                     "capacity_mb": opts.capacity_mb,
                     **({"fill_rate_mbps": opts.fill_rate_mbps[n.tier]}
                        if n.tier in (opts.fill_rate_mbps or {}) else {})})
    regions = {d: {"prefixes": [p], "preference_seed": 10 + i} for i, (d, p) in enumerate(sorted(prefixes.items()))}
    return {"ocas": ocas, "origin": {"name": "origin", "url": f"{sch}://{origin_ip}:{OCA_PORT}", "tier": "origin"},
            "catalog": catalog_of(opts), "regions": regions}


def catalog_of(opts: ServiceOptions) -> dict:
    """The deployment's catalog spec: the media build's when there is one."""
    if not opts.media_dir:
        return opts.catalog
    from appliances.media import MediaCatalog
    return json.loads(MediaCatalog(opts.media_dir).spec.to_json())


# The OCAs' stores (hundreds of MB) and the token key live here, not in the run folder: a
# run folder keeps only what the analysis reads. /var/tmp is on disk where /tmp may be RAM.
SCRATCH_ROOT = Path(os.environ.get("OCALAB_SCRATCH_DIR", "/var/tmp"))


class Services:
    """The appliance processes of one arm inside `net`. Logs and deployment.json go to
    `run_dir`; the OCAs' stores and the token key go to a scratch folder (`scratch`) that
    start() creates and stop() removes, so call stop() in a `finally` once start() was called."""

    def __init__(self, net: Network, run_dir: Path, opts: ServiceOptions) -> None:
        self.net, self.plan, self.opts = net, net.plan, opts
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.scratch: Path | None = None
        self.store: Path | None = None
        self.key_file: Path | None = None
        self.command_key_file: Path | None = None  # the control plane signs commands with it
        self.tls_files: dict[str, tuple[Path, Path]] = {}  # service -> (cert, key), opts.tls
        self.ca_file: Path | None = None
        self.control_url = ""
        self.origin_url = ""
        self.procs = net.process_group()
        self.dep: dict = {}
        self.staged: dict[str, dict] = {}  # name -> what harness.staging wrote (stage_tiers)
        self.launched: dict[str, tuple[str, list[str]]] = {}  # label -> (host, argv): restart()

    def _start(self, label: str, host: str, argv: list[str], timeout_s: float = 30) -> str:
        err = open(self.logs / f"{label}.stderr", "ab")  # appended: a restart keeps the first run's
        proc = self.procs.start(label, [*NICE, sys.executable, "-m", *argv], node=self.net.host(host),
                                    stdout=__import__("subprocess").PIPE, stderr=err)
        self.launched[label] = (host, argv)
        line = read_ready(proc, label, timeout_s)
        return line.split()[1]

    def proc(self, label: str):
        """The newest process started as `label` (an OCA's name, "control", "probe", "origin")."""
        procs = [p for lbl, p in self.procs.procs if lbl == label]
        if not procs:
            raise EmulationError(f"no service {label!r} was started")
        return procs[-1]

    def kill(self, label: str, sig: int = 9):
        """Send `sig` (default SIGKILL) to the service's newest process, by its handle, and wait
        for it to end; returns its Popen."""
        proc = self.proc(label)
        proc.send_signal(sig)
        proc.wait(10)
        return proc

    def restart(self, label: str, timeout_s: float = 60) -> None:
        """Start `label` again with the argv of its first start, in the same host, once its
        process has ended (kill() first); the logs it appends to keep the earlier records.
        The control plane's manifests are warm again before this returns."""
        if self.proc(label).poll() is None:
            raise EmulationError(f"restart({label!r}): its process is still running")
        host, argv = self.launched[label]
        self._start(label, host, argv, timeout_s)
        if label == "control" and self._warm_titles() and self.opts.wait_warm:
            self.wait_warm(timeout_s)

    def _make_scratch(self) -> None:
        if self.scratch is not None:
            raise RuntimeError("Services.start() called twice")
        SCRATCH_ROOT.mkdir(parents=True, exist_ok=True)
        self.scratch = Path(tempfile.mkdtemp(prefix="ocalab-services-", dir=SCRATCH_ROOT))
        if self.procs.ledger is not None:  # the ledger names every leftover of a killed run
            self.procs.ledger.add("dirs", str(self.scratch))
        self.store = self.scratch / "store"
        self.key_file = self.scratch / "token.key"
        self.command_key_file = self.scratch / "command.key"

    def _make_pki(self) -> None:
        """opts.tls: a fresh lab CA in the scratch folder (keys die with it), a certificate per
        server naming its addresses (IP SANs), the CA certificate alone copied to the run folder."""
        from harness.pki import ServerSpec, write_pki
        servers = [self.plan.nodes_of(role="origin")[0].name,
                   self.plan.nodes_of(role="control")[0].name,
                   *(n.name for n in ocas_for_arm(self.plan, self.opts.arm))]
        specs = [ServerSpec(n, (n,), tuple(sorted({e.ip.split("/")[0] for e in self.plan.ends_of(n)
                                                   if e.ip}))) for n in dict.fromkeys(servers)]
        self.tls_files = write_pki(self.scratch / "pki", specs)
        self.ca_file = self.scratch / "pki" / "ca.pem"
        shutil.copyfile(self.ca_file, self.logs.parent / "tls-ca.pem")

    def _tls_args(self, name: str, client: bool = True) -> list[str]:
        """--tls-cert/--tls-key of service `name` (+ --ca-file for its own fetches); [] without tls."""
        if not self.opts.tls:
            return []
        cert, key = self.tls_files[name]
        return ["--tls-cert", str(cert), "--tls-key", str(key)] + (
            ["--ca-file", str(self.ca_file)] if client else [])

    def _ca_args(self) -> list[str]:
        return ["--ca-file", str(self.ca_file)] if self.opts.tls else []

    def _prepare(self) -> Path:
        """deployment.json (capacities sized), history.csv, staged stores; the deployment file."""
        from harness import staging
        from harness.sizing import parse_rule
        o = self.opts
        dep = deployment(self.plan, o)
        hist = None
        if o.history is not None and dep["ocas"]:
            h = {**staging.HISTORY_DEFAULTS, **o.history}
            hist = staging.write_history(dep, self.history_file, int(h["seed"]),
                                         int(h["sessions_per_region"]), float(h["drift"]),
                                         skip_titles=o.launch_titles, days=int(h["days"]),
                                         skip_days=int(h["skip_days"]))
        if o.capacity_rules is not None:
            rules = {t: parse_rule(r, f"{t}_capacity") for t, r in o.capacity_rules.items()}
            dep = staging.size_ocas(dep, rules, o.fill_segments_per_title, hist)
        if o.stage_tiers:
            self.staged = staging.stage(dep, o.fill_segments_per_title, self._stage_history(dep, hist),
                                        self.store, self.scratch / "catalog-objects",
                                        skip_titles=o.launch_titles, tiers=o.stage_tiers,
                                        lru_tiers=o.lru_tiers,
                                        trace=staging.read_trace(dep, self.history_file) if o.lru_tiers else None)
        self.dep = dep
        dep_file = self.logs.parent / "deployment.json"
        dep_file.write_text(json.dumps(dep, indent=1))
        return dep_file

    def _stage_history(self, dep: dict, hist: dict | None) -> dict | None:
        """The popularity staged plans come from: `hist`, or the day before yesterday's trace
        (saved as history-staged.csv) when stage_history is set."""
        from harness import staging
        o = self.opts
        if o.stage_history is None or not dep["ocas"]:
            return hist
        h = {**staging.HISTORY_DEFAULTS, **o.stage_history}
        return staging.write_history(dep, self.logs.parent / "history-staged.csv", int(h["seed"]),
                                     int(h["sessions_per_region"]), float(h["drift"]),
                                     skip_titles=o.launch_titles, days=int(h["days"]),
                                     skip_days=int(h["skip_days"]))

    @property
    def history_file(self) -> Path:
        return self.logs.parent / "history.csv"

    def _eviction(self) -> str:
        """An OCA on Open Connect's serve path (content_miss) keeps what its fill plan names:
        `pinned`, so tonight's fill makes room from the titles the plan dropped, never from the
        plan; a pull-through cache (proxy, redirect) is an `lru` cache."""
        return "pinned" if self.opts.miss == "content_miss" else "lru"

    def _bgp_args(self, name: str) -> list[str]:
        """--routing bgp: the OCA reads the prefixes it serves from its BGP speaker."""
        bgp = getattr(self.net, "bgp", None)
        return [] if bgp is None else ["--bgp-vty", str(bgp.dir / name)]

    def _upstream(self, oca: dict) -> str:
        """Pull-through upstream (miss proxy, the ablation): the next tier, as Open Connect's
        fill order, not always the origin: an embedded OCA pulls from the IXP site (which pulls
        from the origin over the backbone), an IXP site from the origin."""
        ixp = [o["url"] for o in self.dep["ocas"] if o["tier"] == "ixp"]
        return ixp[0] if oca["tier"] == "embedded" and ixp else self.origin_url

    def start(self) -> "Services":
        self._make_scratch()
        self.key_file.write_text(secrets.token_hex(32))
        tokens.write_key(self.command_key_file)  # OCAs accept only commands signed with it
        if self.opts.tls:
            self._make_pki()
        sch = scheme(self.opts)
        dep_file = self._prepare()
        dep = self.dep
        media = self.opts.media_dir
        cat = ["--media-dir", media] if media else _catalog_args(self.opts.catalog)
        origin = self.plan.nodes_of(role="origin")[0].name
        origin_ip = self.plan.primary_ip(origin)
        self._start("origin", origin, ["appliances.origin", "--listen", f"{origin_ip}:{OCA_PORT}",
                                       "--access-log", str(self.logs / "origin.access.jsonl"),
                                       *self._tls_args(origin, client=False), *cat])
        self.origin_url = f"{sch}://{origin_ip}:{OCA_PORT}"
        ctl = self.plan.nodes_of(role="control")[0].name
        ctl_ip = self.plan.primary_ip(ctl)
        self.control_url = f"{sch}://{ctl_ip}:{CONTROL_PORT}"
        ctl_argv = ["appliances.control", "--listen", f"{ctl_ip}:{CONTROL_PORT}", "--deployment", str(dep_file),
                    "--token-key", str(self.key_file), "--command-key", str(self.command_key_file),
                    "--telemetry-log", str(self.logs / "telemetry.jsonl"),
                    "--steering-log", str(self.logs / "steering.jsonl"), "--warm-titles", str(self._warm_titles()),
                    *self._tls_args(ctl), *(["--media-dir", media] if media else [])]
        if self.history_file.exists():
            ctl_argv += ["--history", str(self.history_file)]
        if self.opts.fill == "network":
            ctl_argv += ["--push-fill", "--fill-wait-s", "10"]
            for t in self.opts.launch_titles:  # released today: tonight's push carries them first
                ctl_argv += ["--release", t]
            if self.opts.fill_segments_per_title:
                ctl_argv += ["--fill-segments-per-title", str(self.opts.fill_segments_per_title)]
        mgmt_url = self.net.mgmt_url
        if mgmt_url:  # the controller steers: it learns OCA health from a 250 ms prober in ctl
            ctl_argv += ["--steering", mgmt_url + ("/anycast" if self.opts.steering == "anycast" else "")]
        elif self.opts.steering == "anycast":
            raise EmulationError("anycast steering needs the controller (Options(controller=True))")
        ctl_argv += list(self.opts.control_args)
        for o in dep["ocas"]:
            name = o["name"]
            ip = self.plan.primary_ip(name)
            self._start(name, name, ["appliances.oca", "--listen", f"{ip}:{OCA_PORT}", "--name", name,
                                     "--upstream", self._upstream(o), "--store", str(self.store / name),
                                     "--capacity-mb", repr(o["capacity_mb"]), "--miss", self.opts.miss,
                                     "--eviction", self._eviction(),
                                     "--token-key", str(self.key_file), "--cache-control", self.control_url,
                                     "--command-key", str(self.command_key_file),
                                     "--access-log", str(self.logs / f"{name}.access.jsonl"),
                                     "--fill-log", str(self.logs / f"{name}.fill.jsonl"),
                                     *self._tls_args(name), *cat, *self._bgp_args(name),
                                     *self.opts.oca_args])
        if mgmt_url:
            self._start("probe", ctl, ["controller.probe", "--deployment", str(dep_file),
                                       "--push", f"{mgmt_url}/ocas", *self._ca_args()])
        self._start("control", ctl, ctl_argv, timeout_s=60)
        if self._warm_titles() and self.opts.wait_warm:
            self.wait_warm(180)
        return self

    def _warm_titles(self) -> int:
        n = self.opts.warm_titles
        return int(self.opts.catalog.get("n_titles", 100)) if n is None else n

    def wait_warm(self, timeout_s: float) -> None:
        """Wait until the control plane has precomputed its manifests (segment sizes and SHA-256),
        as a production control plane serves them from stored data: startup delay then measures
        the network and the caches, not this emulator's hashing."""
        import time
        deadline = time.monotonic() + timeout_s
        warm: dict = {}
        while time.monotonic() < deadline:
            warm = self._get_json(self.control_url + "/health").get("warm") or {}
            if warm.get("titles_target", 0) > 0 and warm.get("titles_done", -1) >= warm["titles_target"]:
                return
            time.sleep(0.5)
        raise EmulationError(f"control plane manifests not warm after {timeout_s} s: {warm}")

    def fill_push_unix(self, timeout_s: float = 30.0) -> float:
        """When the control plane began its fill push (its /health `fill_push_unix`, the same
        machine's clock): midnight of a fill run. EmulationError if it has not in timeout_s."""
        import time
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            at = self._get_json(self.control_url + "/health").get("fill_push_unix")
            if isinstance(at, (int, float)):
                return float(at)
            time.sleep(0.2)
        raise EmulationError(f"control plane did not start its fill push in {timeout_s} s")

    def play(self, viewer: str, n_viewers: int, segments: int, seed: int, tag: str | None = None,
             titles: str | None = None, ramp_s: float = 0.0, max_wall_s: float = 300, speed: float = 1.0,
             max_buffer_s: float | None = None):
        """Start a player process in `viewer`'s host; returns its Popen (caller waits). Its logs
        are chunks-<tag>.csv and sessions-<tag>.jsonl (tag defaults to the host, so give
        several processes in one host their own tags). ABR: `ServiceOptions.abr`."""
        tag = tag or viewer
        ip = self.plan.primary_ip(viewer)
        argv = [sys.executable, "-m", "appliances.player", "--control", self.control_url,
                "--viewers", str(n_viewers), "--seed", str(seed), "--abr", self.opts.abr,
                "--segments", str(segments), "--chunk-log", str(self.logs / f"chunks-{tag}.csv"),
                "--session-log", str(self.logs / f"sessions-{tag}.jsonl"), "--bind-ip", ip,
                "--account-prefix", tag, "--max-wall-s", str(max_wall_s), "--speed", str(speed),
                "--ramp-s", str(ramp_s), *self._ca_args()]
        argv += ["--titles", titles] if titles else ["--workload", "zipf"]
        if self.opts.media_dir:
            argv += ["--manifest", "dash"]
        if max_buffer_s is not None:  # the player fetches at the media rate once this is full
            argv += ["--max-buffer-s", f"{max_buffer_s:g}"]
        err = open(self.logs / f"player-{tag}.stderr", "wb")
        return self.procs.start(f"player:{tag}", [*NICE, *argv], node=self.net.host(viewer), stdout=err, stderr=err)

    def stop(self) -> None:
        """Stop the processes, then remove the scratch folder (stores, token key, TLS keys)."""
        try:
            self.procs.stop_all()
        finally:
            self._remove_scratch()

    def _remove_scratch(self) -> None:
        if self.scratch is None:
            return
        failed: list[str] = []
        shutil.rmtree(self.scratch, onerror=lambda _fn, path, exc: failed.append(f"{path}: {exc[1]}"))
        if failed:
            print(f"ocalab: could not remove {len(failed)} scratch files, e.g. {failed[0]}",
                  file=sys.stderr, flush=True)
        self.scratch = None

    def server_addr(self, name: str) -> str:
        """Address of a delivery location named in chunk logs (an OCA or the origin)."""
        return self.plan.primary_ip(name)

    def oca_status(self, name: str, path: str) -> dict:
        return self._get_json(f"{scheme(self.opts)}://{self.plan.primary_ip(name)}:{OCA_PORT}{path}")

    def _get_json(self, url: str) -> dict:
        """GET `url` from inside the control host; the JSON body, or {"error": ...}."""
        out = self.net.host(self.plan.nodes_of(role="control")[0].name).cmd(
            f"{sys.executable} -m harness.fetch_json {shlex.quote(url)}"
            + (f" --ca-file {shlex.quote(str(self.ca_file))}" if self.opts.tls else ""))
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            return {"error": out.strip()[-300:]}

    def wait_fill(self, timeout_s: float, names: list[str] | None = None) -> dict:
        """Wait until the fill plan of every OCA (or of those named) is done; name -> fill status."""
        import time
        deadline = time.monotonic() + timeout_s
        status: dict = {}
        names = [o["name"] for o in self.dep["ocas"]] if names is None else names
        while time.monotonic() < deadline:
            status = {n: self.oca_status(n, "/fill/status") for n in names}
            if all(s.get("plan_id", 0) >= 1 and s.get("state") in ("done", "window_closed")
                   for s in status.values()):
                return status
            time.sleep(0.5)
        raise EmulationError(f"fill did not finish in {timeout_s} s: "
                             + json.dumps({k: (v.get('state'), v.get('filled'), v.get('total'))
                                           for k, v in status.items()}))

    def wait_players(self, procs: list, timeout_s: float) -> list[int]:
        """Wait for every player (one shared deadline); their exit codes. A player whose run
        completed with failed sessions (SESSIONS_FAILED) is an outcome, recorded in its session
        summaries; any other non-zero code is a crash and raises EmulationError."""
        import time
        from appliances.player import SESSIONS_FAILED
        deadline = time.monotonic() + timeout_s
        rcs = [p.wait(max(1.0, deadline - time.monotonic())) for p in procs]
        crashed = [rc for rc in rcs if rc not in (0, SESSIONS_FAILED)]
        if crashed:
            raise EmulationError(f"players exited with {crashed}; see {self.logs}/player-*.stderr")
        if any(rcs):
            print(f"{sum(rc == SESSIONS_FAILED for rc in rcs)} of {len(rcs)} player processes had failed "
                  f"sessions (sessions.csv `status` says why)", flush=True)
        return rcs
