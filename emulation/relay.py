"""Userspace link-emulation relay: a delay line between two interfaces.

Run inside the relay namespace, one process per emulated link:

    python -m emulation.relay --a RA --b RB --delay-ms-ab 10 --delay-ms-ba 10 \
        [--jitter-ms J] [--loss-pct L] [--seed S] [--queue-pkts Q] \
        [--stats-file F] [--ready-file F] [--jitter-dist uniform|normal] [--rt-priority P] \
        [--engine auto|python|native] [--control-file F] [--payload-sport P]

Frames received on --a leave through --b after the a->b delay ("ab"), and
vice versa.  Frames the kernel reports as PACKET_OUTGOING (our own sends) are
never relayed.  Timing: select() sleeps until EARLY_NS before the next due
frame and then sends every frame due by then (no busy polling: an idle or lightly
loaded link costs no CPU between frames); the process runs SCHED_FIFO
(--rt-priority, default 10; 0 = normal) so that busy endpoints do not stretch the
emulated delay.

All timing/loss logic lives in `emulation.delayline`; this module is the thin
IO shell: AF_PACKET sockets, the select() loop, signals, ready and stats files.
Engines: constant-delay links (no jitter, no loss) run the native hot path
(emulation/native/relay.c, built into build/ocalab-relay by `make setup`): this
module validates the command line and execs it, so the pid, signals, ready file
and stats file (with "engine": "native") stay the same. The native engine does
what delayline specifies (tests/test_relay_netns.py checks both engines) with
batched receive and send; it costs about half the CPU per frame.

Run-time faults (both engines): with --control-file, the relay reads that file at start (when
it exists) and again on each SIGUSR1: extra delay and loss per direction, or down (format in
emulation.impair). The signal handler only records the signal (the wakeup pipe here, a flag in
the native engine); the loop applies the file. A bad file is logged on stderr, counted in
`impairment_rejects` and ignored: the relay keeps its previous state and keeps running. Send
SIGUSR1 only once the ready file exists (before that it may end the process).

Live counters (both engines): SIGUSR2 writes the stats file at once and the relay goes on
("final": false; "stats_dumps" counts the writes, "pid" names the writer), so a caller can read
the counters before and after a phase. Each direction also counts the TCP payload of the frames
it reads, new sequence space apart from retransmissions, overall and for segments from
--payload-sport (emulation.tcpcount).

Exit status: 0 after SIGTERM/SIGINT, 2 on bad arguments, 1 on runtime errors
(missing interface, no CAP_NET_RAW, ...), each with a message on stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from emulation.delayline import JITTER_DISTS, DelayLine, LineParams
from emulation.impair import CONTROL_MAX_BYTES, Impairment, parse_control
from emulation.tcpcount import PayloadCounter

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_TPID_VALID = 0x10, 0x40
ETH_P_8021Q = 0x8100
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
ANC_BUF_BYTES = 64
PR_SET_TIMERSLACK = 29
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # asm-generic/socket.h
RECV_BUF_BYTES = 65536
DRAIN_BATCH = 128          # max frames read per socket per wakeup
SOCK_BUF_BYTES = 8 << 20   # SO_RCVBUFFORCE / SO_SNDBUFFORCE request
DEFAULT_RT_PRIORITY = 10
# A frame due within EARLY_NS of now leaves now: the loop sleeps until EARLY_NS before the next
# due frame and never spins. Wake-ups come 10-60 us late, so frames leave within about
# +-EARLY_NS of their due time, and a burst of frames due close together costs one wake-up.
EARLY_NS = 50_000  # the native relay (emulation/native/relay.c) uses the same
ENGINES = ("auto", "python", "native")


class RelayError(RuntimeError):
    """A runtime problem with a message fit for the user."""


@dataclass(frozen=True)
class RelayConfig:
    """Validated command line of one relay process."""

    a: str
    b: str
    ab: LineParams
    ba: LineParams
    seed: int = 0
    stats_file: str | None = None
    ready_file: str | None = None
    rt_priority: int = DEFAULT_RT_PRIORITY
    kernel_outgoing_filter: bool = True  # False: test the pre-4.20 sll_pkttype path
    engine: str = "python"  # python | native (build/ocalab-relay, constant delay only)
    control_file: str | None = None  # run-time faults, re-read on SIGUSR1 (emulation.impair)
    payload_sport: int = 0  # TCP source port whose payload is also counted apart (0: none)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emulation.relay",
                                description="Delay/jitter/loss relay between two interfaces.")
    p.add_argument("--a", required=True, help="interface A side (frames in -> out of --b)")
    p.add_argument("--b", required=True, help="interface B side")
    p.add_argument("--delay-ms-ab", type=float, default=0.0, help="one-way delay a->b (ms)")
    p.add_argument("--delay-ms-ba", type=float, default=0.0, help="one-way delay b->a (ms)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="jitter, each direction (ms)")
    p.add_argument("--jitter-dist", choices=JITTER_DISTS, default="uniform")
    p.add_argument("--loss-pct", type=float, default=0.0, help="Bernoulli loss, each direction (%%)")
    p.add_argument("--seed", type=int, default=0, help="RNG seed (loss, jitter)")
    p.add_argument("--queue-pkts", type=int, default=None, help="drop-tail limit per direction")
    p.add_argument("--stats-file", default=None, help="JSON stats written on exit")
    p.add_argument("--ready-file", default=None, help="written once sockets are bound")
    p.add_argument("--control-file", default=None,
                   help="run-time faults (emulation.impair format): read at start if present "
                        "and on each SIGUSR1")
    p.add_argument("--payload-sport", type=int, default=0,
                   help="also count the TCP payload of segments from this source port (0: none)")
    p.add_argument("--no-kernel-outgoing-filter", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rt-priority", type=int, default=DEFAULT_RT_PRIORITY,
                   help="SCHED_FIFO priority 1-99, 0 = normal scheduling (default %(default)s)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="native: the C hot path (built by `make setup`; no jitter or loss); "
                        "auto: native where it is built and fits, else python (default)")
    return p


def native_binary() -> Path | None:
    """The built native relay, if present and not older than its source."""
    src = Path(__file__).resolve().parent / "native" / "relay.c"
    binary = Path(__file__).resolve().parents[1] / "build" / "ocalab-relay"
    if binary.exists() and os.access(binary, os.X_OK) and \
            (not src.exists() or binary.stat().st_mtime >= src.stat().st_mtime):
        return binary
    return None


def choose_engine(asked: str, ab: LineParams, ba: LineParams, built: bool) -> str:
    """python or native for a link (pure); ValueError when native is asked but cannot serve it."""
    fits = all(p.jitter_ms == 0 and p.loss_pct == 0 for p in (ab, ba))
    if asked == "native" and not fits:
        raise ValueError("--engine native emulates constant delay only (no --jitter-ms, --loss-pct)")
    if asked == "native" and not built:
        raise ValueError("--engine native: build/ocalab-relay is missing or older than its source; "
                         "run `make setup`")
    return "native" if asked == "native" or (asked == "auto" and fits and built) else "python"


def parse_args(argv: list[str] | None = None) -> RelayConfig:
    """Parse and validate; exits with status 2 and a message on bad input."""
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.a == ns.b:
        parser.error(f"--a and --b must differ (both {ns.a!r})")
    for name in (ns.a, ns.b):
        if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
            parser.error(f"invalid interface name {name!r}")
    if not 0 <= ns.rt_priority <= 99:
        parser.error(f"--rt-priority must be within 0..99, got {ns.rt_priority}")
    if not 0 <= ns.payload_sport <= 65535:
        parser.error(f"--payload-sport must be within 0..65535, got {ns.payload_sport}")
    try:
        common = dict(jitter_ms=ns.jitter_ms, loss_pct=ns.loss_pct,
                      queue_pkts=ns.queue_pkts, jitter_dist=ns.jitter_dist)
        ab = LineParams(delay_ms=ns.delay_ms_ab, **common)
        ba = LineParams(delay_ms=ns.delay_ms_ba, **common)
        engine = choose_engine(ns.engine, ab, ba, native_binary() is not None)
    except ValueError as exc:
        parser.error(str(exc))
    return RelayConfig(a=ns.a, b=ns.b, ab=ab, ba=ba, seed=ns.seed,
                       stats_file=ns.stats_file, ready_file=ns.ready_file,
                       rt_priority=ns.rt_priority,
                       kernel_outgoing_filter=not ns.no_kernel_outgoing_filter, engine=engine,
                       control_file=ns.control_file, payload_sport=ns.payload_sport)


def _set_buf(sock: socket.socket, force_opt: int, plain_opt: int, size_bytes: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, force_opt, size_bytes)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain_opt, size_bytes)


def open_rx(ifname: str, kernel_filter: bool = True) -> tuple[socket.socket, bool]:
    """Non-blocking ETH_P_ALL socket on ifname; bool: kernel drops outgoing frames."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        raise RelayError(f"interface {ifname!r} does not exist in this network namespace") from None
    try:
        # protocol 0 until bind(): an ETH_P_ALL socket would queue frames of every interface
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise RelayError("AF_PACKET sockets need root (CAP_NET_RAW)") from None
    ignores_outgoing = False  # pre-4.20 kernel: filter by sll_pkttype instead
    if kernel_filter:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            ignores_outgoing = True
        except OSError:
            pass
    _set_buf(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, SOCK_BUF_BYTES)
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # VLAN tags: with_vlan_tag
    sock.bind((ifname, ETH_P_ALL))  # CPython applies htons() itself
    sock.setblocking(False)
    return sock, ignores_outgoing


def open_tx(ifname: str) -> socket.socket:
    """Blocking send-only socket on ifname (protocol 0: receives nothing)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    _set_buf(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, SOCK_BUF_BYTES)
    sock.bind((ifname, 0))
    return sock


def with_vlan_tag(frame: bytes, ancdata: list) -> bytes:
    """The frame as it was on the wire: the receive path moves an 802.1Q tag into metadata
    (PACKET_AUXDATA); put it back after the MAC addresses (pure)."""
    for level, kind, data in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= AUXDATA.size:
            status, _, _, _, _, tci, tpid = AUXDATA.unpack_from(data)
            if (tci or status & TP_STATUS_VLAN_VALID) and len(frame) >= 12:
                tpid = tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
                return frame[:12] + struct.pack("!HH", tpid, tci) + frame[12:]
    return frame


def _drain_rx(sock: socket.socket, ignores_outgoing: bool, out: list) -> None:
    """Append up to DRAIN_BATCH pending frames (bytes, VLAN tags restored) to out, skipping
    outgoing ones."""
    try:
        recvmsg = sock.recvmsg
        append = out.append
        for _ in range(DRAIN_BATCH):
            frame, anc, _, addr = recvmsg(RECV_BUF_BYTES, ANC_BUF_BYTES)
            if ignores_outgoing or addr[2] != PACKET_OUTGOING:
                append(with_vlan_tag(frame, anc) if anc else frame)
    except BlockingIOError:
        pass
    except OSError as exc:  # interface set down (link failure): keep running
        if exc.errno not in (errno.ENETDOWN, errno.ENXIO):
            raise


def _send_all(send, frames: list, errors: dict, direction: str) -> None:
    """Send frames in order; a failed send drops the frame and is counted in errors."""
    for frame in frames:
        try:
            send(frame)
        except OSError as exc:  # e.g. ENETDOWN while a link is failed, EMSGSIZE
            errors[direction] += 1
            errors["last_error"] = f"{direction}: {exc}"


def _reduce_timer_slack() -> None:
    """Ask for 1 us timer slack so select() timeouts fire on time (best effort)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0) != 0:
        print(f"relay: prctl(PR_SET_TIMERSLACK) failed: errno {ctypes.get_errno()}", file=sys.stderr)


def _set_rt_priority(priority: int) -> None:
    """SCHED_FIFO at priority (0: keep SCHED_OTHER); warns and continues if not permitted.

    Like netem, which runs in softirq context above every process, the relay
    must not wait behind the endpoints' processes for a CPU; it sleeps between
    frames, and the kernel's RT throttling bounds it if it ever spins.
    """
    if priority == 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except OSError as exc:
        print(f"relay: warning: cannot use SCHED_FIFO {priority} ({exc}); delays may "
              "stretch when CPUs are busy", file=sys.stderr)


class Control:
    """The relay's run-time faults: `load()` reads the control file and applies it to both
    lines, or logs why not and keeps the previous state. Never raises."""

    def __init__(self, path: str | None, line_ab: DelayLine, line_ba: DelayLine) -> None:
        self.path, self.lines = path, (line_ab, line_ba)
        self.current = Impairment()
        self.changes = self.rejects = 0

    def load(self, missing_ok: bool = False) -> None:
        if self.path is None:
            self._reject("SIGUSR1 without --control-file")
            return
        try:
            with open(self.path, "rb") as f:
                data = f.read(CONTROL_MAX_BYTES + 1)
            imp = parse_control(data)
        except FileNotFoundError:
            if not missing_ok:
                self._reject(f"{self.path} does not exist")
            return
        except (OSError, ValueError) as exc:
            self._reject(f"{self.path}: {exc}")
            return
        self.lines[0].impair(imp.extra_delay_ms_ab, imp.loss_pct_ab, imp.down)
        self.lines[1].impair(imp.extra_delay_ms_ba, imp.loss_pct_ba, imp.down)
        self.current = imp
        self.changes += 1

    def _reject(self, why: str) -> None:
        self.rejects += 1
        print(f"relay: control file ignored (previous state kept): {why}", file=sys.stderr, flush=True)

    def stats(self) -> dict:
        return {"impairment_changes": self.changes, "impairment_rejects": self.rejects,
                "impairment": asdict(self.current)}


def relay_loop(rx_a, rx_b, tx_a, tx_b, ign_a: bool, ign_b: bool,
               line_ab: DelayLine, line_ba: DelayLine, stop_fd: int,
               control: Control | None = None, tcp: tuple | None = None, dump=None) -> dict:
    """Forward frames until SIGTERM/SIGINT shows on stop_fd (the signal wakeup pipe; SIGUSR1 on
    it reloads `control`, SIGUSR2 calls dump(errors)); `tcp` = (PayloadCounter a->b, b->a) counts
    the frames read. Returns send error counts and the last one."""
    mono = time.monotonic_ns
    sel = select.select
    fa, fb = rx_a.fileno(), rx_b.fileno()
    rlist = [fa, fb, stop_fd]
    send_a, send_b = tx_a.send, tx_b.send
    pop_ab, pop_ba = line_ab.pop_due, line_ba.pop_due
    next_ab, next_ba = line_ab.next_due_ns, line_ba.next_due_ns
    errors: dict = {"ab": 0, "ba": 0, "last_error": None}
    count_ab, count_ba = (tcp[0].count, tcp[1].count) if tcp else (None, None)
    while True:
        horizon = mono() + EARLY_NS
        due_ab, due_ba = next_ab(), next_ba()
        if due_ab is not None and due_ab <= horizon:
            _send_all(send_b, pop_ab(horizon), errors, "ab")
            due_ab = next_ab()
        if due_ba is not None and due_ba <= horizon:
            _send_all(send_a, pop_ba(horizon), errors, "ba")
            due_ba = next_ba()
        if due_ab is None:
            nxt = due_ba
        elif due_ba is None or due_ab < due_ba:
            nxt = due_ab
        else:
            nxt = due_ba
        timeout = None if nxt is None else max(0, nxt - EARLY_NS - mono()) * 1e-9
        ready = sel(rlist, [], [], timeout)[0]
        if not ready:
            continue
        now = mono()
        if fa in ready:
            frames: list = []
            _drain_rx(rx_a, ign_a, frames)
            if frames:
                if count_ab:
                    for frame in frames:
                        count_ab(frame)
                line_ab.push_many(frames, now)
        if fb in ready:
            frames = []
            _drain_rx(rx_b, ign_b, frames)
            if frames:
                if count_ba:
                    for frame in frames:
                        count_ba(frame)
                line_ba.push_many(frames, now)
        if stop_fd in ready:
            signums = os.read(stop_fd, 512)
            if any(n not in (signal.SIGUSR1, signal.SIGUSR2) for n in signums):
                return errors
            if control is not None and signal.SIGUSR1 in signums:
                control.load()
            if dump is not None and signal.SIGUSR2 in signums:
                dump(errors)


def _write_atomic(path: str, text: str) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def run(cfg: RelayConfig) -> dict:
    """Open sockets, signal readiness, relay until SIGTERM/SIGINT; returns stats."""
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    os.set_blocking(stop_r, False)
    signal.set_wakeup_fd(stop_w)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, lambda *_: None)  # the wakeup fd carries the signal number
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1, signal.SIGUSR2})  # see exec_native
    rx_a, ign_a = open_rx(cfg.a, cfg.kernel_outgoing_filter)
    rx_b, ign_b = open_rx(cfg.b, cfg.kernel_outgoing_filter)
    tx_a, tx_b = open_tx(cfg.a), open_tx(cfg.b)
    line_ab = DelayLine(cfg.ab, seed=f"{cfg.seed}:ab")
    line_ba = DelayLine(cfg.ba, seed=f"{cfg.seed}:ba")
    control = Control(cfg.control_file, line_ab, line_ba)
    if cfg.control_file:
        control.load(missing_ok=True)
    _reduce_timer_slack()
    _set_rt_priority(cfg.rt_priority)
    gc.disable()  # the loop makes no reference cycles; avoids collector pauses
    stats = Stats(cfg, line_ab, line_ba, control, ign_a and ign_b)
    if cfg.ready_file:
        _write_atomic(cfg.ready_file, f"{os.getpid()}\n")
    print("READY", flush=True)
    errors = relay_loop(rx_a, rx_b, tx_a, tx_b, ign_a, ign_b, line_ab, line_ba, stop_r, control,
                        stats.tcp, stats.dump)
    for sock in (rx_a, rx_b, tx_a, tx_b):
        sock.close()
    return stats.snapshot(errors, True)


class Stats:
    """The Python engine's stats object (the native engine writes the same keys): `snapshot`
    counts every write in `stats_dumps`; `dump` writes a live one, logging a failure."""

    def __init__(self, cfg: RelayConfig, line_ab: DelayLine, line_ba: DelayLine, control: Control,
                 kernel_filter: bool) -> None:
        self.cfg, self.lines, self.control, self.kernel_filter = cfg, (line_ab, line_ba), control, kernel_filter
        self.tcp = (PayloadCounter(cfg.payload_sport), PayloadCounter(cfg.payload_sport))
        self.started, self.dumps = time.monotonic(), 0

    def snapshot(self, errors: dict, final: bool) -> dict:
        self.dumps += 1
        (ab, ba), (tab, tba) = self.lines, self.tcp
        return {**static_stats(self.cfg), "engine": "python", "pid": os.getpid(), "stats_dumps": self.dumps,
                "final": final, "kernel_outgoing_filter": self.kernel_filter,
                "duration_s": round(time.monotonic() - self.started, 3),
                "ab": {**ab.stats(), "frames_send_errors": errors["ab"], **tab.stats()},
                "ba": {**ba.stats(), "frames_send_errors": errors["ba"], **tba.stats()},
                "last_send_error": errors["last_error"], **self.control.stats()}

    def dump(self, errors: dict) -> None:
        if not self.cfg.stats_file:
            return
        try:
            _write_atomic(self.cfg.stats_file, json.dumps(self.snapshot(errors, False), indent=1) + "\n")
        except OSError as exc:  # a failed live dump is logged; the relay goes on
            print(f"relay: error: {self.cfg.stats_file}: {exc}", file=sys.stderr, flush=True)


def static_stats(cfg: RelayConfig) -> dict:
    """The part of the stats file that the command line fixes (both engines write it)."""
    return {"a": cfg.a, "b": cfg.b, "seed": cfg.seed, "rt_priority": cfg.rt_priority,
            "payload_sport": cfg.payload_sport, "params_ab": asdict(cfg.ab), "params_ba": asdict(cfg.ba)}


def exec_native(cfg: RelayConfig) -> None:
    """Replace this process with the native relay (same pid, signals, ready and stats files)."""
    binary = native_binary()
    if binary is None:
        raise RelayError("the native relay disappeared after the engine was chosen")
    queue = cfg.ab.queue_pkts or 0  # one limit per relay (the CLI has one --queue-pkts)
    # SIGUSR1 and SIGUSR2 stay blocked across exec until the native loop waits with them
    # unblocked: a reload or dump signal that arrives early is held, never fatal
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
    os.execv(binary, [str(binary), cfg.a, cfg.b, str(round(cfg.ab.delay_ms * 1e6)),
                      str(round(cfg.ba.delay_ms * 1e6)), str(queue), str(cfg.rt_priority),
                      "1" if cfg.kernel_outgoing_filter else "0", cfg.stats_file or "-",
                      cfg.ready_file or "-", json.dumps(static_stats(cfg)),
                      cfg.control_file or "-", str(cfg.seed), str(cfg.payload_sport)])


def _read_stats(path: Path) -> dict:
    """The stats file's content, or {} while there is none (written atomically: never partial)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}


def live_stats(relays: dict, timeout_s: float = 5.0) -> dict[str, dict]:
    """Counters of running relays now: name -> (process, stats file) in, name -> stats out.

    Sends each process SIGUSR2 (by its handle, once its ready file exists) and waits until its
    stats file is a dump by that pid newer than the one before the signal. Raises TimeoutError
    naming the relays that did not answer, RuntimeError for one that is not running."""
    before = {}
    for name, (proc, path) in relays.items():
        if proc.poll() is not None:
            raise RuntimeError(f"relay {name} is not running (exit status {proc.returncode})")
        old = _read_stats(path)
        before[name] = old.get("stats_dumps", 0) if old.get("pid") == proc.pid else 0
        proc.send_signal(signal.SIGUSR2)
    out: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(out) < len(relays):
        for name, (proc, path) in relays.items():
            st = {} if name in out else _read_stats(path)
            if st.get("pid") == proc.pid and st.get("stats_dumps", 0) > before[name]:
                out[name] = st
        if len(out) < len(relays):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no live stats in {timeout_s:g} s from {sorted(set(relays) - set(out))[:5]}")
            time.sleep(0.01)
    return out


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    if cfg.engine == "native":
        sys.stdout.flush()
        exec_native(cfg)
    try:
        stats = run(cfg)
    except (RelayError, OSError) as exc:
        print(f"relay: error: {exc}", file=sys.stderr)
        return 1
    if cfg.stats_file:
        _write_atomic(cfg.stats_file, json.dumps(stats, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
