"""Services keep the OCAs' stores and the token key out of the run folder: in a scratch folder
that start() makes (named in the ledger) and stop() removes, also when start fails. And the
control-host JSON GET runs as a module (`python -m harness.fetch_json`). No root: the network
is a stand-in whose hosts run the commands on this machine."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emulation.ledger import Ledger, ProcessGroup
from harness import services
from harness.services import ServiceOptions, Services
from topologies.catalog import metro

REPO = Path(__file__).resolve().parent.parent
READY = "import sys, time; print('READY http://127.0.0.1:1', flush=True); time.sleep(60)"


class Host:
    """A stand-in Mininet host: popen and cmd run here, in this tree (cwd)."""

    def __init__(self, started: list, fail: bool) -> None:
        self.started, self.fail = started, fail

    def popen(self, argv, **kw):
        if self.fail:
            raise OSError("no such host")
        self.started.append(argv)
        return subprocess.Popen([sys.executable, "-c", READY], cwd=REPO, **kw)

    def cmd(self, line: str) -> str:
        r = subprocess.run(line, shell=True, capture_output=True, text=True, cwd=REPO, timeout=30)
        return r.stdout + r.stderr


class Net:
    def __init__(self, ledger: Ledger, fail: bool = False) -> None:
        self.plan, self.ledger, self.started = metro(), ledger, []
        self.mgmt_url = None  # as emulation.build.Network without a controller
        self.host_ = Host(self.started, fail)

    def process_group(self) -> ProcessGroup:
        return ProcessGroup(self.ledger)

    def host(self, name: str) -> Host:
        return self.host_


@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "SCRATCH_ROOT", tmp_path / "scratch")
    return Net(Ledger("svc-test", tmp_path / "ledger.json"))


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_stores_and_key_live_in_a_scratch_folder_removed_at_stop(net, tmp_path):
    run_dir = tmp_path / "run" / "arms" / "embedded"
    svc = Services(net, run_dir, ServiceOptions(arm="embedded", warm_titles=0))
    try:
        svc.start()
        scratch = svc.scratch
        assert scratch.parent == tmp_path / "scratch" and svc.key_file == scratch / "token.key"
        assert len(svc.key_file.read_text()) == 64
        ocas = [a for a in net.started if "appliances.oca" in a]
        assert len(ocas) == 4
        for argv in ocas:
            assert Path(_flag(argv, "--store")).parent == scratch / "store"
            assert _flag(argv, "--token-key") == str(scratch / "token.key")
            assert Path(_flag(argv, "--access-log")).parent == run_dir / "logs"
        (scratch / "store" / "i1oca1").mkdir(parents=True)
        (scratch / "store" / "i1oca1" / "object").write_bytes(b"x" * 1000)
    finally:
        svc.stop()
    assert not scratch.exists() and svc.scratch is None
    kept = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert kept == {"deployment.json", "logs/origin.stderr", "logs/control.stderr",
                    *(f"logs/{o}.stderr" for o in ("i1oca1", "i2oca1", "i3oca1", "nfxoca1"))}
    assert json.loads((tmp_path / "ledger.json").read_text())["dirs"] == [str(scratch)]


def test_a_failed_start_leaves_no_scratch_and_no_key(tmp_path, monkeypatch):
    monkeypatch.setattr(services, "SCRATCH_ROOT", tmp_path / "scratch")
    net = Net(Ledger("svc-test", tmp_path / "ledger.json"), fail=True)
    svc = Services(net, tmp_path / "run", ServiceOptions(arm="ixp", warm_titles=0))
    with pytest.raises(OSError):
        try:
            svc.start()
        finally:
            svc.stop()
    assert list((tmp_path / "scratch").iterdir()) == []
    assert not list((tmp_path / "run").rglob("token.key")) and not list((tmp_path / "run").rglob("store"))


def test_stop_before_start_is_harmless(net, tmp_path):
    Services(net, tmp_path / "run", ServiceOptions()).stop()


class _Json(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "state": "done"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_get_json_runs_the_fetch_module_in_the_control_host(net, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Json)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        svc = Services(net, tmp_path / "run", ServiceOptions())
        url = f"http://127.0.0.1:{server.server_port}/fill/status"
        assert svc._get_json(url) == {"path": "/fill/status", "state": "done"}
    finally:
        server.shutdown()
        server.server_close()
    out = svc._get_json(url)  # nothing listens now: the reason, as the error
    assert set(out) == {"error"} and "URLError" in out["error"]


def test_tls_option_serves_https_with_a_lab_ca_whose_keys_stay_in_scratch(net, tmp_path):
    from cryptography import x509
    run_dir = tmp_path / "run" / "arms" / "embedded"
    svc = Services(net, run_dir, ServiceOptions(arm="embedded", warm_titles=0, tls=True))
    try:
        svc.start()
        pki = svc.scratch / "pki"
        by_module = {}
        for argv in net.started:
            by_module.setdefault(argv[argv.index("-m") + 1], []).append(argv)
        (origin,), (control,) = by_module["appliances.origin"], by_module["appliances.control"]
        assert Path(_flag(origin, "--tls-cert")).parent == pki and "--ca-file" not in origin
        assert _flag(control, "--ca-file") == str(pki / "ca.pem")
        assert Path(_flag(control, "--tls-key")).parent == pki
        for argv in by_module["appliances.oca"]:
            assert _flag(argv, "--upstream").startswith("https://")
            assert _flag(argv, "--cache-control") == svc.control_url.replace("http://", "https://")
            assert _flag(argv, "--ca-file") == str(pki / "ca.pem")
            name = _flag(argv, "--name")
            cert = x509.load_pem_x509_certificate(Path(_flag(argv, "--tls-cert")).read_bytes())
            ips = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
            assert svc.plan.primary_ip(name) in {str(i) for i in ips}
        dep = json.loads((run_dir / "deployment.json").read_text())
        assert all(o["url"].startswith("https://") for o in dep["ocas"])
        assert dep["origin"]["url"].startswith("https://") and svc.control_url.startswith("https://")
        svc.play(svc.plan.nodes_of(role="viewer")[0].name, 1, 2, 1)
        player = net.started[-1]
        assert _flag(player, "--ca-file") == str(pki / "ca.pem")
        assert _flag(player, "--control").startswith("https://")
        scratch = svc.scratch
    finally:
        svc.stop()
    assert not scratch.exists()
    assert (run_dir / "tls-ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert not [p for p in run_dir.rglob("*") if p.suffix in (".key", ".crt")]


def test_tls_defaults_off_and_refuses_anycast():
    assert ServiceOptions().tls is False
    with pytest.raises(ValueError, match="anycast"):
        ServiceOptions(tls=True, steering="anycast")


def test_run_tls_on_is_refused_by_scenarios_that_do_not_honour_it():
    import argparse
    from harness.runner import run
    from scenarios.fill import SCENARIO as FILL
    from scenarios.placement import SCENARIO as PLACEMENT
    assert PLACEMENT.tls and not FILL.tls
    with pytest.raises(SystemExit, match="does not support --tls on"):
        run(argparse.Namespace(repeat=1, set=[], tls="on"), FILL)


def test_run_tls_default_is_https_where_honoured():
    from harness.runner import tls_choice
    from scenarios.fill import SCENARIO as FILL
    from scenarios.placement import SCENARIO as PLACEMENT
    assert tls_choice(None, PLACEMENT) is True and tls_choice("off", PLACEMENT) is False
    assert tls_choice(None, FILL) is False and tls_choice("off", FILL) is False
    with pytest.raises(SystemExit, match="does not support --tls on"):
        tls_choice("on", FILL)
