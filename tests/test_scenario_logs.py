"""The scenarios' one set of log readers (error handling, shapes) and the clients they run in
hosts (`python -m scenarios.hostcmd`), on loopback (no root)."""
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from appliances import commands
from scenarios import logs


def test_a_missing_optional_table_or_log_reads_as_empty(tmp_path):
    assert logs.read_table(tmp_path / "none.csv").empty
    assert logs.read_rows(tmp_path / "none.csv") == []
    assert logs.read_jsonl(tmp_path / "none.jsonl") == []
    (tmp_path / "empty.csv").write_text("")  # write_csv's file for a table without rows
    assert logs.read_table(tmp_path / "empty.csv", optional=False).empty
    with pytest.raises(FileNotFoundError, match="none.csv"):
        logs.read_table(tmp_path / "none.csv", optional=False)


def test_a_malformed_row_names_the_file_and_line(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(logs.LogError, match=r"t\.csv.*line 3"):
        logs.read_table(tmp_path / "t.csv")
    (tmp_path / "x.jsonl").write_text('{"ts": 1}\n\n{"ts": 2, "cut\n')  # a writer killed mid-line
    with pytest.raises(logs.LogError, match=r"x\.jsonl:3: not a JSON record"):
        logs.read_jsonl(tmp_path / "x.jsonl")


def test_text_rows_keep_cells_as_written(tmp_path):
    (tmp_path / "c.csv").write_text("time,kbps,node\n100.10,750,\n")
    assert logs.read_rows(tmp_path / "c.csv") == [{"time": "100.10", "kbps": "750", "node": ""}]
    table = logs.read_table(tmp_path / "c.csv")
    assert table["time"].tolist() == [100.1] and table["node"].isna().all()


def test_segment_requests_and_sessions_shapes(tmp_path):
    (tmp_path / "i1oca1.access.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"server": "i1oca1", "ts": 5.0, "client": "198.18.1.10", "method": "GET", "path": "/v/t0001/750/0",
         "status": 200, "cache": "hit", "bytes": 10},
        {"server": "i1oca1", "ts": 6.0, "client": "198.18.1.10", "method": "GET", "path": "/health",
         "status": 200, "cache": "none", "bytes": 3})) + "\n")
    (tmp_path / "sessions-i1v1.jsonl").write_text(json.dumps({"status": "ok", "servers": ["x"], "errors": []}) + "\n")
    [row] = logs.read_access(tmp_path, "a")
    assert row["arm"] == "a" and row["path"] == "/v/t0001/750/0"
    assert logs.sessions(tmp_path / "sessions-i1v1.jsonl") == [{"status": "ok", "errors": []}]


def test_the_join_window_bounds_the_nearest_row():
    access = [{"server": "s", "client": "c", "path": "/v/t/750/0", "status": 200, "cache": "hit",
               "ts": 100.0 + logs.JOIN_WINDOW_S + 1}]
    chunk = {"server": "s", "title": "t", "kbps": 750, "index": 0, "time": 100.0}
    assert logs.attach_cache([chunk], access, "c")[0]["cache"] == "unmatched"
    access[0]["ts"] = 100.0 + logs.JOIN_WINDOW_S
    assert logs.attach_cache([chunk], access, "c")[0]["cache"] == "hit"


HOSTCMD_KEY = b"h" * 32


class _Oca(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get(commands.MAC_HEADER) is not None:  # signed: must verify
            verdict = commands.CommandVerifier(HOSTCMD_KEY).verify(
                "POST", self.path, raw, {k.lower(): v for k, v in self.headers.items()},
                time.time())
            if verdict is not commands.CommandResult.OK:
                self.send_response(403)
                self.end_headers()
                return
        body = json.loads(raw)
        self.send_response(202 if self.path == "/fill" and body == {"segments": []} else 400)
        self.end_headers()

    def do_HEAD(self):
        self.send_response(200 if self.path.startswith("/v/") else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def oca_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Oca)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_hostcmd_runs_as_a_module(tmp_path, oca_url):
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"segments": []}))
    out = subprocess.run([sys.executable, "-m", "scenarios.hostcmd", "post-fill", oca_url, str(body)],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "202"
    key = tmp_path / "command.key"
    key.write_text(HOSTCMD_KEY.hex())
    out = subprocess.run([sys.executable, "-m", "scenarios.hostcmd", "post-fill", oca_url, str(body),
                          str(key)], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "202", out.stderr  # signed as appliances.commands verifies
    key.write_text(("ab" * 32))
    out = subprocess.run([sys.executable, "-m", "scenarios.hostcmd", "post-fill", oca_url, str(body),
                          str(key)], capture_output=True, text=True, timeout=30)
    assert "403" in out.stderr  # a wrong key is refused
    assert subprocess.run([sys.executable, "-m", "scenarios.hostcmd"], capture_output=True).returncode == 2
