"""The servers a reliability run talks to, and the byte check every response goes through.

`Servers` starts origin/OCA subprocesses on 127.0.0.1 (port 0, READY line), keeps their stderr
under <out>/reliability-logs/ and stops only what it started. `Integrity` compares served
bytes with the catalog; its `mismatches` count only ever grows.
"""
from __future__ import annotations

import hashlib
import http.client
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliances import commands, tokens
from appliances.content import Catalog
from bench.reliability_spec import CAT_FLAGS


class Servers:
    """Subprocess origin/OCAs; stderr to files under logs/; stop() terminates what it started.
    Every OCA verifies commands with `command_key` (a fresh key, file in logs/)."""

    def __init__(self, out_dir: Path) -> None:
        self.logs = out_dir / "reliability-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.command_key_file = self.logs / "command.key"
        self.command_key = tokens.write_key(self.command_key_file)

    def start(self, name: str, module: str, *args: str, timeout_s: float = 20.0) -> int:
        """Run `python -m module` on 127.0.0.1 port 0 with the bench catalog; its port."""
        err = open(self.logs / f"{name}.stderr", "a", encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", module, "--listen", "127.0.0.1:0",
                                 *args, *CAT_FLAGS], stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY "):
            proc.kill()
            proc.wait(timeout=5)
            raise RuntimeError(f"{name} ({module}) did not print READY: {line!r}; see "
                               f"{self.logs / (name + '.stderr')}")
        self.procs[name] = proc
        return int(line.strip().rsplit(":", 1)[1])

    def oca(self, name: str, origin_port: int, store: Path, *flags: str) -> int:
        return self.start(name, "appliances.oca", "--upstream", f"http://127.0.0.1:{origin_port}",
                          "--store", str(store), "--capacity-mb", "256", "--name", name,
                          "--command-key", str(self.command_key_file), *flags)

    def kill(self, name: str) -> None:
        """SIGKILL one server, as a crash would."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_one(self, name: str) -> int:
        """SIGTERM one server; its exit code."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        finally:
            proc.stdout.close()

    def rss_kib(self, name: str) -> int:
        """Resident set size of a running server (from /proc)."""
        for line in Path(f"/proc/{self.procs[name].pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {name}")

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def tracebacks(self) -> dict[str, int]:
        """Tracebacks in each server's stderr log (0 everywhere in a clean run)."""
        return {p.stem: p.read_text(errors="replace").count("Traceback")
                for p in sorted(self.logs.glob("*.stderr"))}

    def stop(self) -> dict[str, int | None]:
        """SIGTERM (then SIGKILL after 10 s) every server still running; exit code by name."""
        codes = {}
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            codes[name] = proc.returncode
            proc.stdout.close()
        self.procs.clear()
        return codes


class Integrity:
    """Verifies served bytes against the catalog manifest (SHA-256 per segment)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.responses = self.bytes = self.mismatches = 0
        self._data: dict[tuple, bytes] = {}

    def data(self, key: tuple) -> bytes:
        """Catalog bytes of `key`, checked once against the title manifest's SHA-256."""
        if key not in self._data:
            data = self.catalog.segment_bytes(*key)
            size, sha = self.catalog.title_manifest(key[0])["segments"][key[1]][key[2]]
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                raise RuntimeError(f"catalog bytes of {key} disagree with the manifest")
            self._data[key] = data
        return self._data[key]

    def check(self, key: tuple, body: bytes, start: int = 0, end: int | None = None) -> bool:
        want = self.data(key)[start:end]
        ok = hashlib.sha256(body).digest() == hashlib.sha256(want).digest()
        self.responses += 1
        self.bytes += len(body)
        self.mismatches += not ok
        return ok

    def add_external(self, responses: int, n_bytes: int, mismatches: int) -> None:
        """Counts from a load generator that compared bytes itself against the catalog."""
        self.responses += responses
        self.bytes += n_bytes
        self.mismatches += mismatches

    def to_dict(self) -> dict:
        return {"responses_verified": self.responses, "bytes_verified": self.bytes,
                "mismatches": self.mismatches, "ok": self.mismatches == 0 and self.responses > 0}


def http_get(port: int, path: str, headers: dict | None = None, method: str = "GET",
             body: bytes | None = None, timeout_s: float = 15.0,
             source_ip: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request on its own connection to 127.0.0.1:port, from
    `source_ip` (another loopback address: another client to the server) when given."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s,
                                   source_address=None if source_ip is None else (source_ip, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()



def post_command(port: int, path: str, body: bytes, key: bytes,
                 now_unix: float | None = None) -> tuple[int, dict, bytes]:
    """POST `body` to `path` signed with the command key, as the control plane sends it."""
    headers = {"Content-Type": "application/json",
               **commands.sign(key, "POST", path, body,
                               time.time() if now_unix is None else now_unix)}
    return http_get(port, path, headers, "POST", body)
