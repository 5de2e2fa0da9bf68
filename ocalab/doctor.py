"""`ocalab doctor`: can this machine run the testbed, and with which backends (and why)."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass

from emulation import linkemu

BINARIES = {"ip": "iproute2", "tc": "iproute2", "ovs-vsctl": "openvswitch-switch",
            "ovs-ofctl": "openvswitch-switch", "mnexec": "mininet", "iperf3": "iperf3",
            "ping": "iputils-ping", "traceroute": "traceroute", "ethtool": "ethtool"}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr) else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"error: {e}"


def run_checks() -> tuple[list[Check], dict]:
    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", root, "running as root" if root else f"uid {os.geteuid()}",
                        "run with sudo (namespaces, OVS and tc need root)"))
    checks.append(Check("netns", os.path.exists("/proc/self/ns/net"), "network namespaces",
                        "a kernel with CONFIG_NET_NS"))
    for binary, pkg in BINARIES.items():
        path = shutil.which(binary)
        checks.append(Check(f"bin:{binary}", bool(path), path or "missing", f"sudo make setup (apt {pkg})"))
    try:
        import mininet.net  # noqa: F401
        checks.append(Check("python:mininet", True, "importable"))
    except ImportError as e:
        checks.append(Check("python:mininet", False, str(e), "sudo make setup (Debian's mininet + venv "
                            "with --system-site-packages)"))
    try:
        import os_ken  # noqa: F401
        from importlib.metadata import version
        checks.append(Check("python:os-ken", True, version("os-ken")))
    except ImportError as e:
        checks.append(Check("python:os-ken", False, str(e), "sudo make setup"))
    ovs = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True, text=True) \
        if shutil.which("ovs-vsctl") else None
    checks.append(Check("ovs:running", bool(ovs and ovs.returncode == 0),
                        "ovsdb-server and ovs-vswitchd answer" if ovs and ovs.returncode == 0
                        else (ovs.stderr.strip() if ovs else "not installed"),
                        "sudo service openvswitch-switch start (or sudo make setup)"))
    from emulation.relay import native_binary
    native = native_binary()
    checks.append(Check("relay:native", native is not None,
                        f"{native} (constant-delay links run the C hot path)" if native else
                        "build/ocalab-relay missing or older than its source: relays use Python "
                        "(about twice the CPU per frame)", "sudo make setup", required=False))
    from emulation.frr import missing as frr_missing
    no_frr = frr_missing()
    checks.append(Check("routing:frr", no_frr is None, no_frr or _version(["/usr/lib/frr/bgpd", "--version"]),
                        "sudo make setup (apt frr)", required=False))
    info: dict = {"routing": "static", "routing_reason": "the default; --routing bgp "
                  + ("runs FRR's bgpd on every router" if no_frr is None else f"unavailable: {no_frr}")}
    if root:
        htb = subprocess.run(["sh", "-c", "ip netns add ocdoc$$ && ip -n ocdoc$$ link add ocd0 type veth peer name ocd1"
                              " && ip netns exec ocdoc$$ tc qdisc add dev ocd0 root htb; r=$?;"
                              " ip netns del ocdoc$$; exit $r"], capture_output=True, text=True)
        checks.append(Check("kernel:veth+htb", htb.returncode == 0, "HTB qdisc works" if htb.returncode == 0
                            else htb.stderr.strip(), "a kernel with CONFIG_NET_SCH_HTB"))
        netem = linkemu.probe_netem()
        checks.append(Check("kernel:netem", netem.ok, netem.detail, required=False))
        kdp = linkemu.probe_ovs_kernel() if ovs and ovs.returncode == 0 else linkemu.Probe(False, "OVS not running")
        checks.append(Check("kernel:ovs-datapath", kdp.ok, kdp.detail, required=False))
        info["link_backend"], info["link_backend_reason"] = linkemu.choose("auto", netem, "netem", "relay")
        info["switch_datapath"], info["switch_datapath_reason"] = linkemu.choose("auto", kdp, "kernel", "user")
    else:
        info.update(link_backend=None, switch_datapath=None,
                    link_backend_reason="needs root to probe", switch_datapath_reason="needs root to probe")
    info["versions"] = {"kernel": platform.release(), "python": platform.python_version(),
                        "ovs": _version(["ovs-vsctl", "--version"]) if shutil.which("ovs-vsctl") else None,
                        "iperf3": _version(["iperf3", "--version"]) if shutil.which("iperf3") else None}
    return checks, info


def main(as_json: bool = False) -> int:
    checks, info = run_checks()
    ok = all(c.ok for c in checks if c.required)
    if as_json:
        print(json.dumps({"ok": ok, **info, "checks": [asdict(c) for c in checks]}, indent=1))
        return 0 if ok else 1
    for c in checks:
        mark = "ok " if c.ok else ("FAIL" if c.required else "no ")
        line = f"[{mark}] {c.name:22s} {c.detail}"
        if not c.ok and c.fix:
            line += f"\n       fix: {c.fix}"
        print(line)
    print(f"link backend:    {info['link_backend']}  ({info['link_backend_reason']})")
    print(f"switch datapath: {info['switch_datapath']}  ({info['switch_datapath_reason']})")
    print(f"routing:         {info['routing']}  ({info['routing_reason']})")
    print("ocalab can run here." if ok else "ocalab cannot run here: fix the FAIL lines above.")
    return 0 if ok else 1
