"""Carrier of the relay's interfaces, for links whose two halves are joined by a userspace relay.

On the `relay` link backend a plan link a<->b is two veth pairs, a<->ra and rb<->b, with a relay
process copying frames between ra and rb. The switch port then stays up when the far end of the
link goes down; the relay end facing it loses carrier instead. `LinkWatcher` watches those relay
ends over rtnetlink from inside the relay's network namespace (a thread that `setns`es into it)
and reports every carrier change at once, like an OpenFlow port status for the far end.

`parse_links(data)` is the pure part: rtnetlink messages -> [(ifname, up, deleted)].
Invariants: a relay end counts as up only with IFF_UP and IFF_LOWER_UP; a deleted one is down;
the watcher reports the full state once (a dump) before any change.
"""
from __future__ import annotations

import ctypes
import json
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

NLMSG_HDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
RTATTR = struct.Struct("=HH")
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME = 3
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
RTMGRP_LINK = 0x1
CLONE_NEWNET = 0x40000000
POLL_S = 0.5  # how often the thread checks for stop(); changes are read as they arrive


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_links(data: bytes) -> list[tuple[str, bool, bool]]:
    """(ifname, up, deleted) for every RTM_NEWLINK/RTM_DELLINK in a netlink datagram.
    Raises ValueError on a truncated message or a netlink error answer."""
    out = []
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            raise ValueError(f"truncated netlink message at offset {off} (length {length})")
        body = data[off + NLMSG_HDR.size: off + length]
        if kind == NLMSG_ERROR:
            err = struct.unpack_from("=i", body)[0] if len(body) >= 4 else 0
            if err != 0:
                raise ValueError(f"netlink error {err}")
        elif kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= IFINFOMSG.size:
            _family, _type, _index, flags, _change = IFINFOMSG.unpack_from(body)
            name = _attr_name(body[IFINFOMSG.size:])
            if name is not None:
                deleted = kind == RTM_DELLINK
                out.append((name, not deleted and bool(flags & IFF_UP) and bool(flags & IFF_LOWER_UP), deleted))
        off += _align4(length)
    return out


def _attr_name(attrs: bytes) -> str | None:
    off = 0
    while off + RTATTR.size <= len(attrs):
        alen, atype = RTATTR.unpack_from(attrs, off)
        if alen < RTATTR.size:
            break
        if atype == IFLA_IFNAME:
            return attrs[off + RTATTR.size: off + alen].split(b"\0", 1)[0].decode(errors="replace")
        off += _align4(alen)
    return None


def dump_request(seq: int = 1) -> bytes:
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


@dataclass(frozen=True)
class RelayMap:
    """Where the relay lives and which of its interfaces carry each plan link (a side, b side)."""
    netns: str
    links: dict[str, tuple[str, str]]

    def to_json(self) -> str:
        return json.dumps({"netns": self.netns, "links": {k: list(v) for k, v in sorted(self.links.items())}})

    @classmethod
    def load(cls, path: Path) -> "RelayMap":
        d = json.loads(Path(path).read_text())
        if not isinstance(d, dict) or not isinstance(d.get("netns"), str) or not isinstance(d.get("links"), dict):
            raise ValueError(f"{path}: expected {{'netns': path, 'links': {{link: [a_intf, b_intf]}}}}")
        links = {}
        for name, pair in d["links"].items():
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise ValueError(f"{path}: links[{name!r}] must be two interface names")
            links[name] = (pair[0], pair[1])
        return cls(d["netns"], links)


class LinkWatcher:
    """A daemon thread in the relay's namespace calling on_change({ifname: up}) with the full
    state first, then with each change. Errors are passed to on_error (the app makes them fatal)."""

    def __init__(self, netns: str, on_change: Callable[[dict[str, bool]], None],
                 on_error: Callable[[BaseException], None]) -> None:
        self.netns, self.on_change, self.on_error = netns, on_change, on_error
        self.ready = threading.Event()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask the thread to end (within POLL_S)."""
        self._stop.set()

    def start(self) -> "LinkWatcher":
        threading.Thread(target=self._run, name="ocalab-linkwatch", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self._enter_netns()
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
                s.bind((0, RTMGRP_LINK))
                s.send(dump_request())
                state: dict[str, bool] = {}
                done = False
                while not done:  # the dump, possibly over several datagrams
                    data = s.recv(1 << 16)
                    state.update({n: up for n, up, _ in parse_links(data)})
                    done = _has_done(data)
                self.on_change(state)
                self.ready.set()
                s.settimeout(POLL_S)
                while not self._stop.is_set():
                    try:
                        data = s.recv(1 << 16)
                    except socket.timeout:
                        continue
                    changes = {n: up for n, up, _ in parse_links(data)}
                    if changes:
                        self.on_change(changes)
        except BaseException as e:  # noqa: BLE001 - handed to on_error, which must not swallow it
            self.on_error(e)

    def _enter_netns(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.netns, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({self.netns}): {os.strerror(err)}")
        finally:
            os.close(fd)


def _has_done(data: bytes) -> bool:
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind = NLMSG_HDR.unpack_from(data, off)[:2]
        if kind == NLMSG_DONE:
            return True
        if length < NLMSG_HDR.size:
            return False
        off += _align4(length)
    return False
