"""BGP routing with FRR: zebra and bgpd in every router namespace (`Options.routing="bgp"`).

The configs come from topologies.bgp (pure). Invariants:
- every file of the daemons (configs, pid files, zebra and vty sockets, logs) lies in one scratch
  folder `ocalab-frr-<run>` named in the ledger before it is made, so `ocalab clean` removes it;
  the logs are copied into the network's work folder when the network stops;
- the daemons run in the foreground in the network's process group (ledger-recorded, stopped
  by handle), as Debian's `frr` user (FRR refuses root without the frrvty group);
- start() runs after the fidelity gate (which measures the links on the plan's static routes;
  its relay restarts would expire 3 s hold timers), replaces each router's static routes, and
  returns once every session is Established and every router's BGP routes equal the
  static plan's (topologies.routes); it records both times in Network.timings_s;
- every OCA node runs a receive-only bgpd (-n -Z: no zebra, no kernel routes) in its namespace,
  files under the same folder (ocalab-frr-<run>/<oca>), peering with its domain's router, which
  announces it the prefixes it serves (topologies.bgp.oca_sessions); start() also waits until
  every OCA has learned exactly those. The OCA process reads them (appliances.oca_bgp);
- the IXP route server, if the plan has one (topologies.bgp.route_server), runs bgpd the same
  way (-n -Z, files under ocalab-frr-<run>/<node>); start() waits for its sessions too.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from emulation.linkemu import EmulationError
from contracts.steering import routes_from_frr
from topologies import bgp

VTYSH = "vtysh"
FRR_USER = "frr"


def missing() -> str | None:
    """Why FRR cannot run here, or None."""
    for d in bgp.DAEMONS:
        if not os.access(f"/usr/lib/frr/{d}", os.X_OK):
            return f"/usr/lib/frr/{d} missing (sudo make setup installs Debian's frr)"
    if shutil.which(VTYSH) is None:
        return "vtysh missing (sudo make setup installs Debian's frr)"
    try:
        pwd.getpwnam(FRR_USER)
    except KeyError:
        return f"user {FRR_USER!r} missing (Debian's frr package creates it)"
    return None


class BgpRouting:
    """The FRR daemons of one Network; made by Network when Options.routing is "bgp"."""

    def __init__(self, net) -> None:
        self.net = net
        self.dir: Path | None = None
        self.routers = sorted(bgp.routers_by_domain(net.plan).values())
        self.oca_sessions = bgp.oca_sessions(net.plan)
        rs = bgp.route_server(net.plan)
        self.route_server = rs.node if rs is not None else None  # its node, or None
        self.drops_at_ready: int | None = None  # session_drops() when the network was ready

    def start(self, timeout_s: float = 60.0) -> None:
        why = missing()
        if why:
            raise EmulationError(f"--routing bgp: {why}")
        self.dir = Path(tempfile.gettempdir()) / f"ocalab-frr-{self.net.ledger.run_id}"
        self.net.ledger.add("dirs", str(self.dir))
        self.dir.mkdir(mode=0o755)
        user = pwd.getpwnam(FRR_USER)
        t0 = time.monotonic()
        bgpds = []  # (speaker, process): each answers vtysh once its vty socket exists
        for r in self.routers:
            self._drop_static_routes(r)
            for daemon, text in bgp.render(self.net.plan, r).items():
                proc = self._start_daemon(r, daemon, text, bgp.daemon_argv(self.dir, r, daemon), user)
                if daemon == "zebra":  # bgpd needs zebra's socket to install routes
                    self._wait_file(bgp.daemon_paths(self.dir, r, daemon)["zapi"], proc, f"zebra on {r}",
                                    t0 + timeout_s)
                else:
                    bgpds.append((r, proc))
            self.net.nodes[r].cmd(f"vtysh() {{ command {VTYSH} --vty_socket {self.dir / r} \"$@\"; }}")
        for oca in sorted(self.oca_sessions):
            bgpds.append((oca, self._start_daemon(oca, "bgpd", bgp.render_oca_bgpd(self.net.plan, oca),
                                                  bgp.speaker_argv(self.dir, oca), user)))
        if self.route_server is not None:
            rs = self.route_server
            bgpds.append((rs, self._start_daemon(rs, "bgpd", bgp.render_rs_bgpd(self.net.plan),
                                                 bgp.speaker_argv(self.dir, rs), user)))
            self.net.nodes[rs].cmd(f"vtysh() {{ command {VTYSH} --vty_socket {self.dir / rs} \"$@\"; }}")
        for name, proc in bgpds:
            self._wait_file(self.dir / name / "bgpd.vty", proc, f"bgpd on {name}", t0 + timeout_s)
        self.wait_established(t0, timeout_s)
        self.wait_routes(bgp.expected_routes(self.net.plan), t0, timeout_s, "convergence")
        self.wait_oca_routes({o: set(s.prefixes) for o, s in self.oca_sessions.items()}, t0, timeout_s,
                             "oca_routes")
        self.drops_at_ready = self.session_drops()

    def _start_daemon(self, node: str, daemon: str, conf: str, argv: list[str], user):
        """Write `daemon`'s config in `node`'s folder (the frr user's) and start it there."""
        paths = bgp.daemon_paths(self.dir, node, daemon)
        paths["dir"].mkdir(exist_ok=True)
        os.chown(paths["dir"], user.pw_uid, user.pw_gid)
        paths["conf"].write_text(conf)
        out = open(paths["dir"] / f"{daemon}.out", "ab")
        return self.net.procs.start(f"{daemon}:{node}", argv, node=self.net.nodes[node], stdout=out, stderr=out)

    def _drop_static_routes(self, router: str) -> None:
        """Remove the plan's static routes from `router` (the build and the fidelity gate ran on
        them); a kernel route would otherwise win over zebra's BGP route."""
        lines = [f"ip route del {r.dst} via {r.via}" for r in self.net.plan.routes if r.node == router]
        out, err, rc = self.net.nodes[router].pexec(["sh", "-c", "set -e\n" + "\n".join(lines)])
        if rc != 0:
            raise EmulationError(f"removing static routes on {router} failed: {(err or out).strip()}")

    @staticmethod
    def _wait_file(path: Path, proc, label: str, deadline: float) -> None:
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = b"".join(f.read_bytes()[-800:] for f in sorted(path.parent.glob("*.out")))
                raise EmulationError(f"{label} did not start (exit {proc.poll()}): {out.decode(errors='replace').strip()}")
            time.sleep(0.02)

    # ---- vtysh -------------------------------------------------------------------------
    def vtysh(self, router: str, command: str) -> str:
        """Output of vtysh commands (one a line) on `router` or an OCA speaker (over its vty
        sockets; no namespace needed)."""
        r = subprocess.run([VTYSH, "--vty_socket", str(self.dir / router),
                            *[a for c in command.split("\n") for a in ("-c", c)]],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise EmulationError(f"vtysh on {router}: {command!r}: {(r.stderr or r.stdout).strip()}")
        return r.stdout

    def vtysh_json(self, router: str, command: str) -> dict:
        return json.loads(self.vtysh(router, command + " json") or "{}")

    def ribs(self) -> dict[str, dict[str, str]]:
        """Router -> prefix -> next hop of its selected BGP routes, read from zebra now."""
        return {r: bgp.bgp_routes(self.vtysh_json(r, "show ip route")) for r in self.routers}

    # ---- waiting -----------------------------------------------------------------------
    def wait_established(self, t0: float, timeout_s: float) -> float:
        """Poll until every configured session is Established; returns (and records) the seconds
        since t0 as timings_s["bgp_sessions"]."""
        want = {r: {s.peer_addr for s in ss} for r, ss in bgp.sessions(self.net.plan).items()}
        for s in self.oca_sessions.values():
            want[s.router].add(s.oca_addr)
            want[s.oca] = {s.router_addr}
        missing_now: dict[str, set[str]] = want
        while time.monotonic() < t0 + timeout_s:
            missing_now = {r: want[r] - bgp.established(self.vtysh_json(r, "show bgp ipv4 unicast summary"))
                           for r in want}
            if not any(missing_now.values()):
                took = time.monotonic() - t0
                self.net.timings_s["bgp_sessions"] = round(took, 3)
                return took
            time.sleep(0.1)
        raise EmulationError(f"BGP sessions not Established after {timeout_s:g} s: "
                             + "; ".join(f"{r}: {sorted(m)}" for r, m in missing_now.items() if m))

    def wait_routes(self, want: dict[str, dict[str, str]], t0: float, timeout_s: float,
                    label: str) -> float:
        """Poll until every router's BGP routes equal `want` (router -> prefix -> next hop);
        returns (and records as timings_s["bgp_" + label]) the seconds since t0."""
        diff: list[str] = []
        while time.monotonic() < t0 + timeout_s:
            have = self.ribs()
            diff = [f"{r} {d}" for r in self.routers for d in bgp.rib_diff(want.get(r, {}), have[r])]
            if not diff:
                took = time.monotonic() - t0
                self.net.timings_s[f"bgp_{label}"] = round(took, 3)
                return took
            time.sleep(0.1)
        raise EmulationError(f"BGP routes differ from the plan after {timeout_s:g} s: " + "; ".join(diff[:8]))

    def oca_routes(self, oca: str) -> set[str]:
        """The prefixes `oca`'s speaker has learned now."""
        return {r.prefix for r in routes_from_frr(self.vtysh_json(oca, "show bgp ipv4 unicast"))}

    def wait_oca_routes(self, want: dict[str, set[str]], t0: float, timeout_s: float, label: str) -> float:
        """Poll until each OCA in `want` has learned exactly its prefixes; returns (and records
        as timings_s["bgp_" + label]) the seconds since t0."""
        have: dict[str, set[str]] = {}
        while time.monotonic() < t0 + timeout_s:
            have = {o: self.oca_routes(o) for o in want}
            if have == want:
                took = time.monotonic() - t0
                self.net.timings_s[f"bgp_{label}"] = round(took, 3)
                return took
            time.sleep(0.1)
        raise EmulationError(f"OCA BGP routes after {timeout_s:g} s: want {want}, have {have}")

    def announce_to_oca(self, oca: str, prefix: str, announce: bool) -> None:
        """The ISP announces (or withdraws) `prefix` to `oca`: its router's prefix-list entry is
        permit (deny) and the session is soft-cleared out, so the update leaves at once."""
        s = self.oca_sessions[oca]
        self.vtysh(s.router, "\n".join(["configure terminal", bgp.oca_prefix_list(s, prefix, announce), "end",
                                        f"clear bgp ipv4 unicast {s.oca_addr} soft out"]))

    def peering_speakers(self) -> list[str]:
        """The routers and the route server: the speakers whose sessions carry the AS links."""
        return self.routers + ([self.route_server] if self.route_server else [])

    def session_drops(self) -> int:
        """Sessions dropped so far over the routers and the route server (both sides count a flap)."""
        return sum(bgp.drops(self.vtysh_json(r, "show bgp ipv4 unicast summary")) for r in self.peering_speakers())

    def finish(self) -> None:
        """After the daemons stopped: keep their logs in the work folder, remove the scratch."""
        if self.dir is None or not self.dir.exists():
            return
        if self.net.work_dir is not None:
            for r in self.peering_speakers() + sorted(self.oca_sessions):
                for log in sorted((self.dir / r).glob("*.log")) + sorted((self.dir / r).glob("*.out")):
                    dest = self.net.work_dir / "frr" / r
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(log, dest / log.name)
        shutil.rmtree(self.dir)
