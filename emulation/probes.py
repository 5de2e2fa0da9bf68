"""Measurements taken from packets and counters inside a built network.

Pure parsers (traceroute, ping, counters) are separate from the shells that run the tools in
hosts, so they are tested on saved text.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from topologies.plan import Plan
from topologies.routes import l3_end

_HOP_RE = re.compile(r"^\s*(\d+)\s+(\S+)")


def parse_traceroute(text: str) -> list[str]:
    """Addresses per hop ('*' when a hop did not answer), from `traceroute -n -q 1` output."""
    hops = []
    for line in text.splitlines()[1:]:
        m = _HOP_RE.match(line)
        if m:
            hops.append(m.group(2))
    return hops


def traceroute(net, src: str, dst_addr: str) -> list[str]:
    out = net.host(src).cmd(f"traceroute -n -q 1 -w 2 -m 16 {dst_addr}")
    return parse_traceroute(out)


def ping_rtts(net, src: str, dst_addr: str, count: int = 10) -> list[float]:
    from emulation.fidelity import parse_ping
    out = net.host(src).cmd(f"ping -n -c {count} -i 0.05 -W 1 {dst_addr}")
    return parse_ping(out)


def connect_ms(net, src: str, dst_addr: str, port: int, count: int = 5) -> list[float]:
    """TCP connect times (SYN to SYN-ACK as the client sees it), in ms, measured in host `src`."""
    import json
    proc = net.host(src).popen([sys.executable, "-m", "emulation.connect_probe", dst_addr, str(port), str(count)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"connect probe {src}->{dst_addr}:{port} failed: {err.decode()[-300:]}")
    return json.loads(out)


def tls_handshake_ms(net, src: str, dst_addr: str, port: int, ca_file: str, count: int = 5) -> dict:
    """{"connect_ms", "full_ms", "resumed_ms": [...]} measured in host `src` (connect_probe --tls-ca)."""
    import json
    proc = net.host(src).popen([sys.executable, "-m", "emulation.connect_probe", dst_addr, str(port), str(count),
                                "--tls-ca", str(ca_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"TLS probe {src}->{dst_addr}:{port} failed: {err.decode()[-300:]}")
    return json.loads(out)


def connect_burst_ms(net, src: str, dst_addr: str, port: int, rounds: int, burst: int) -> list[list[float]]:
    """Per round, the kernel-measured handshake RTTs (ms) of `burst` connections opened at once
    from host `src` (new flows, as a traceroute or a flash crowd makes them)."""
    import json
    proc = net.host(src).popen([sys.executable, "-m", "emulation.connect_probe", dst_addr, str(port), str(rounds),
                                "--burst", str(burst)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60 + 10 * rounds)
    if proc.returncode != 0:
        raise RuntimeError(f"connect burst {src}->{dst_addr}:{port} failed: {err.decode()[-300:]}")
    return json.loads(out)


def listen(net, host: str, port: int):
    """A TCP listener in `host` on its primary address (backlog 1024: the kernel completes the
    handshakes, nothing accepts); returns its Popen once it listens (the caller stops it)."""
    code = ("import socket,sys,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1024); print('ready', flush=True)\n"
            "while True:\n    c, _ = s.accept(); c.close()\n")
    proc = net.host(host).popen([sys.executable, "-c", code, net.plan.primary_ip(host), str(port)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"listener in {host}:{port} did not start: {proc.stderr.read().decode()[-300:]}")
    return proc


def link_counters(net) -> dict[str, dict]:
    """Kernel byte counters of every plan link, read at its switch-side interface.

    tx of the switch port = bytes toward the L3 node, rx = bytes from it. Links with no switch
    end are read at the `a` end (tx = a->b).
    """
    plan: Plan = net.plan
    out = {}
    for lk in plan.links:
        if plan.node(lk.b.node).kind == "switch":
            sw, l3 = lk.b, lk.a
        elif plan.node(lk.a.node).kind == "switch":
            sw, l3 = lk.a, lk.b
        else:
            sw, l3 = None, lk.a
        if sw is not None:
            base = Path(f"/sys/class/net/{sw.intf}/statistics")
            tx, rx = int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())
            out[lk.name] = {"cls": lk.cls, "node": l3.node, "to_node_bytes": tx, "from_node_bytes": rx}
        else:
            txt = net.host(l3.node).cmd(f"cat /sys/class/net/{l3.intf}/statistics/tx_bytes "
                                        f"/sys/class/net/{l3.intf}/statistics/rx_bytes").split()
            out[lk.name] = {"cls": lk.cls, "node": l3.node, "to_node_bytes": int(txt[1]),
                            "from_node_bytes": int(txt[0])}
    return out


def kernel_read_point(plan: Plan, lk) -> tuple[str, str]:
    """(end, node): the end of `lk` ("a" or "b") whose interface link_counters reads (the switch
    end, else a) and the L3 node its rows name (to_node = toward it)."""
    if plan.node(lk.b.node).kind == "switch":
        return "b", lk.a.node
    return "a", lk.b.node if plan.node(lk.a.node).kind == "switch" else lk.a.node


def relay_rows(plan: Plan, stats: dict[str, dict]) -> dict[str, dict]:
    """Relay stats files (link name -> stats) as counter rows in link_counters' shape. Pure.

    Wire bytes are taken where the kernel counts them: at the end link_counters reads, a
    direction leaving that end counts the frames the relay read (`bytes_in`), one arriving there
    the frames it sent (`bytes_forwarded`). Payload: the new TCP payload from the relay's
    --payload-sport (`sport_new_payload_bytes`), and every TCP payload copy of any port
    (`tcp_payload_bytes`), both counted on the frames the relay read. `lost_track_count`: holes
    and flows the payload counter forgot (each may undercount the new payload)."""
    out = {}
    for lk in plan.links:
        st = stats.get(lk.name)
        if st is None:
            continue
        end, node = kernel_read_point(plan, lk)
        to_dir = "ba" if node == lk.a.node else "ab"  # the direction toward the L3 node
        from_dir = "ab" if to_dir == "ba" else "ba"
        leaves = "ab" if end == "a" else "ba"  # the direction leaving the end the kernel reads
        wire = {d: st[d]["bytes_in" if d == leaves else "bytes_forwarded"] for d in ("ab", "ba")}
        out[lk.name] = {"cls": lk.cls, "node": node, "relay_pid": st["pid"],
                        "to_node_bytes": wire[to_dir], "from_node_bytes": wire[from_dir],
                        "to_node_payload_bytes": st[to_dir]["sport_new_payload_bytes"],
                        "from_node_payload_bytes": st[from_dir]["sport_new_payload_bytes"],
                        "to_node_tcp_payload_bytes": st[to_dir]["tcp_payload_bytes"],
                        "from_node_tcp_payload_bytes": st[from_dir]["tcp_payload_bytes"],
                        "lost_track_count": sum(st[d]["holes_forgotten"] + st[d]["flows_evicted"]
                                                for d in ("ab", "ba"))}
    return out


def relay_counters(net) -> dict[str, dict]:
    """The relays' own counters per relayed plan link now (relay_rows); {} without relays."""
    return relay_rows(net.plan, net.relay_stats()) if getattr(net, "relay", None) is not None else {}


def controller_counters(net) -> dict[str, dict]:
    """The controller's port-stat counters per plan link, in the shape of `link_counters`
    (to_node = tx of the switch port). Empty if the network runs without the controller."""
    data = net.api("/links") if net.api_url else None
    if not isinstance(data, list):
        return {}
    ends = l3_end(net.plan)
    return {r["name"]: {"cls": r["cls"], "node": ends.get(r["name"], ""), "to_node_bytes": int(r.get("tx_bytes") or 0),
                        "from_node_bytes": int(r.get("rx_bytes") or 0)} for r in data}


def settled_counters(net, timeout_s: float = 10.0) -> tuple[dict[str, dict], dict[str, dict]]:
    """(kernel, controller) counters, read once the controller has polled every link's port
    stats after this call (its polls are 1 s apart, and a busy machine stretches them), so both
    cover the same bytes. Raises TimeoutError naming the stale links after timeout_s."""
    if not net.api_url:
        return link_counters(net), {}
    t = time.time()
    deadline = time.monotonic() + timeout_s
    polled = {r["name"] for r in net.api("/links") if r.get("updated_unix_s")}  # measured links
    while True:
        stale = [r["name"] for r in net.api("/links")
                 if r["name"] in polled and (r.get("updated_unix_s") or 0) <= t]
        if not stale:
            return link_counters(net), controller_counters(net)
        if time.monotonic() > deadline:
            raise TimeoutError(f"controller port stats not refreshed in {timeout_s:g} s: {stale[:5]}")
        time.sleep(0.1)
