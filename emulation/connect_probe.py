"""TCP connect times, measured inside an emulated host:

    python -m emulation.connect_probe HOST PORT COUNT

prints a JSON list of COUNT connect times in ms (SYN to SYN-ACK as the client sees it). A failed
connect ends the probe with a traceback and a non-zero exit status.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time

CONNECT_TIMEOUT_S = 5.0
PAUSE_S = 0.02  # between connects, so the previous connection's teardown is out of the way


def connect_times_ms(host: str, port: int, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        s = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        out.append((time.perf_counter() - t) * 1000)
        s.close()
        time.sleep(PAUSE_S)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emulation.connect_probe", description=__doc__.split("\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("count", type=int)
    a = p.parse_args(argv)
    print(json.dumps(connect_times_ms(a.host, a.port, a.count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
