"""`ocalab cli` for a class: a short banner, and a piped script runs every line."""
import io
import subprocess
import sys

import pytest

from ocalab.labcli import banner, run_cli
from topologies.catalog import metro


def test_banner_is_short_and_names_what_runs_where(tmp_path):
    plan = metro()
    urls = {"control": "http://198.18.9.2:8000", "origin": "http://198.18.9.3:8080", "api": "http://127.0.0.1:6653"}
    lines = banner(plan, {"link_backend": "relay", "switch_datapath": "user"}, "embedded", urls,
                   tmp_path / "network.json", python="python3")
    text = "\n".join(lines)
    assert len(lines) <= 15, text
    for v in plan.nodes_of(role="viewer"):
        assert f"{v.name} {plan.primary_ip(v.name)}" in text
    assert all(n.name in text for n in plan.nodes_of(role="oca"))
    i1oca1 = plan.primary_ip("i1oca1")
    assert f"i1v1 ping -c 3 {i1oca1}" in text and f"curl -s http://{i1oca1}:8080/health" in text
    assert "curl -s http://" in text and "-m appliances.player --control http://198.18.9.2:8000" in text
    assert str(tmp_path / "network.json") in text and "{" not in text  # details go to the file


def test_banner_without_services_has_no_service_lines():
    plan = metro()
    text = "\n".join(banner(plan, {}, "none", {}, None))
    assert "OCAs" not in text and "appliances.player" not in text and "ping -c 3" in text


class _FakeNet:
    hosts: list = []

    def __contains__(self, name):
        return False

    def __iter__(self):
        return iter(())


def test_piped_script_runs_every_line_and_echoes_it(capsys):
    pytest.importorskip("mininet.cli")
    run_cli(_FakeNet(), stdin=io.StringIO("py print('one')\n\npy print('two')\npy print(len(net.hosts))\n"))
    out = capsys.readouterr().out
    assert out.count("mininet> ") == 3
    assert out.index("one") < out.index("two") and "mininet> py print(len(net.hosts))\n0" in out


@pytest.mark.emulation
def test_ocalab_cli_runs_every_piped_line_in_hosts():
    """A host command no longer swallows the script's later lines (Mininet forwards its stdin to
    a running host command)."""
    script = "i1v1 echo first-line\ni2v1 sleep 0.5\ni2v1 echo second-line\npy print('third-line')\n"
    p = subprocess.run([sys.executable, "-m", "ocalab.cli", "cli", "metro", "--services", "none", "--no-verify"],
                       input=script, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    for word in ("first-line", "second-line", "third-line"):
        assert word in p.stdout, p.stdout[-2000:]
    before_prompt = p.stdout.split("mininet> ")[0].strip().splitlines()
    assert len(before_prompt) <= 15, before_prompt
