"""Origin and OCA over TLS 1.3 as real subprocesses on 127.0.0.1 (issue 17): bytes, ranges and
tokens over https, https upstream pulls trusting the lab CA, clean close of plain HTTP or
garbage on a TLS port, TLS 1.3 session resumption."""
import http.client
import signal
import socket
import ssl
import subprocess
import time

import pytest

from appliances import tokens
from appliances.content import Catalog, CatalogSpec
from appliances.tls import client_context, resuming_client_context
from conftest import start_appliance
from harness.pki import ServerSpec, write_pki

pytestmark = pytest.mark.integration

CAT_FLAGS = ["--catalog-seed", "3", "--titles", "4", "--duration-s", "24"]
CAT = Catalog(CatalogSpec(seed=3, n_titles=4, duration_s=24))


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM, wait; (exit code, stderr)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise
    return proc.returncode, proc.stderr.read()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    files = write_pki(folder, [ServerSpec("origin", ("localhost",), ("127.0.0.1",)),
                               ServerSpec("oca", ("localhost",), ("127.0.0.1",))])
    other = write_pki(folder / "other", [ServerSpec("x", ips=("127.0.0.1",))])
    return {"ca": folder / "ca.pem", "other_ca": folder / "other" / "ca.pem", **files,
            "foreign": other["x"]}


@pytest.fixture(scope="module")
def servers(pki, tmp_path_factory):
    """A TLS origin and a TLS proxy OCA (token checks, files from disk) pulling from it."""
    tmp = tmp_path_factory.mktemp("tls")
    key_file = tmp / "token.key"
    key = tokens.write_key(key_file)
    crt, k = pki["origin"]
    origin, o_port = start_appliance("appliances.origin", "--tls-cert", str(crt),
                                     "--tls-key", str(k), *CAT_FLAGS)
    crt, k = pki["oca"]
    oca, port = start_appliance(
        "appliances.oca", "--upstream", f"https://127.0.0.1:{o_port}", "--ca-file",
        str(pki["ca"]), "--store", str(tmp / "store"), "--capacity-mb", "64", "--mem-mb", "0",
        "--miss", "proxy", "--token-key", str(key_file), "--tls-cert", str(crt),
        "--tls-key", str(k), *CAT_FLAGS)
    yield {"origin": o_port, "oca": port, "key": key}
    for proc in (oca, origin):
        rc, err = stop(proc)
        assert rc == 0 and err == "", err  # nothing on stderr: handshake failures are quiet


def get(port: int, ca, target: str, headers=None):
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=client_context(ca))
    c.request("GET", target, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def signed(servers, title: str) -> str:
    return tokens.sign(servers["key"], f"/v/{title}/", "127.0.0.0/8", int(time.time()) + 60)


def test_origin_serves_over_tls(servers, pki):
    r, data = get(servers["origin"], pki["ca"], "/v/t0000/235/1")
    assert r.status == 200 and data == CAT.segment_bytes("t0000", 235, 1)


def test_oca_serves_segment_and_range_over_tls(servers, pki):
    want = CAT.segment_bytes("t0001", 1750, 2)
    q = signed(servers, "t0001")
    r, data = get(servers["oca"], pki["ca"], f"/v/t0001/1750/2?{q}")  # pulled over https
    assert r.status == 200 and data == want
    for _ in range(2):  # then from the store's file (sendfile threads are bypassed over TLS)
        r, data = get(servers["oca"], pki["ca"], f"/v/t0001/1750/2?{q}", {"Range": "bytes=100-1099"})
        assert r.status == 206 and data == want[100:1100]
        r, data = get(servers["oca"], pki["ca"], f"/v/t0001/1750/2?{q}")
        assert r.status == 200 and data == want


def test_tokens_checked_over_tls(servers, pki):
    assert get(servers["oca"], pki["ca"], "/v/t0002/235/0")[0].status == 403
    other = tokens.sign(servers["key"], "/v/t0002/", "198.18.0.0/24", int(time.time()) + 60)
    assert get(servers["oca"], pki["ca"], f"/v/t0002/235/0?{other}")[0].status == 403


def test_wrong_ca_refused_by_client(servers, pki):
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        get(servers["oca"], pki["other_ca"], "/health")


@pytest.mark.parametrize("payload", [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                                     b"\x00\xff garbage \r\n\r\n" * 20, b""])
def test_plain_http_or_garbage_gets_clean_close(servers, pki, payload):
    for port in (servers["oca"], servers["origin"]):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(payload)
            if not payload:
                s.shutdown(socket.SHUT_WR)
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                got = b""
            assert b"HTTP/1.1" not in got
    assert get(servers["oca"], pki["ca"], "/health")[0].status == 200  # still serving


def _request_over(sock: ssl.SSLSocket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize("which", ["oca", "origin"])
def test_session_resumption(servers, pki, which):
    ctx = client_context(pki["ca"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", servers[which]), timeout=15),
                         server_hostname="127.0.0.1") as s:
        assert s.version() == "TLSv1.3" and not s.session_reused
        assert _request_over(s).startswith(b"HTTP/1.1 200")
        session = s.session  # the server's ticket arrived with the response
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", servers[which]), timeout=15),
                         server_hostname="127.0.0.1", session=session) as s:
        assert s.session_reused
        assert _request_over(s).startswith(b"HTTP/1.1 200")


def test_tls12_client_refused(servers, pki):
    ctx = client_context(pki["ca"])
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", servers["oca"]), timeout=15),
                             server_hostname="127.0.0.1"):
            pass


def test_oca_with_foreign_ca_fails_its_pull(pki, tmp_path, servers):
    """An OCA whose --ca-file is another CA refuses the origin's certificate: the viewer gets
    a 502 or a cut body (the pull is cut-through), never the bytes."""
    crt, k = pki["oca"]
    proc, port = start_appliance(
        "appliances.oca", "--upstream", f"https://127.0.0.1:{servers['origin']}", "--ca-file",
        str(pki["other_ca"]), "--store", str(tmp_path / "s"), "--capacity-mb", "16",
        "--miss", "proxy", "--tls-cert", str(crt), "--tls-key", str(k), *CAT_FLAGS)
    try:
        try:
            assert get(port, pki["ca"], "/v/t0003/235/0")[0].status == 502
        except http.client.IncompleteRead as exc:
            assert exc.partial == b""
    finally:
        rc, err = stop(proc)
    assert rc == 0 and "certificate verify failed" in err


def test_bad_tls_flags_exit_2(pki):
    p = subprocess.run(["python3", "-m", "appliances.origin", "--listen", "127.0.0.1:0",
                        "--tls-cert", str(pki["origin"][0])], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2 and "go together" in p.stderr


def test_fetch_json_over_https(servers, pki, capsys):
    from harness import fetch_json
    url = f"https://127.0.0.1:{servers['origin']}/health"
    assert fetch_json.main([url, "--ca-file", str(pki["ca"])]) == 0
    assert '"role": "origin"' in capsys.readouterr().out
    assert fetch_json.main([url, "--ca-file", str(pki["other_ca"])]) == 1
    assert "certificate verify failed" in capsys.readouterr().err
    assert fetch_json.main([url, "--ca"]) == 2


def test_player_context_resumes_across_aiohttp_connections(servers, pki):
    """The player's context: a new connection (force_close) to the same server resumes, and
    conntiming names each request's connection and splits TCP connect from the TLS handshake."""
    import asyncio
    import aiohttp
    from appliances.conntiming import ConnTiming, trace_config

    async def gets(port: int, force_close: bool) -> tuple[list[bool], list[dict]]:
        ctx = resuming_client_context(pki["ca"])
        conn = aiohttp.TCPConnector(ssl=ctx, force_close=force_close)
        rows = []
        async with aiohttp.ClientSession(connector=conn, trace_configs=[trace_config()]) as http:
            for _ in range(3):
                timing = ConnTiming()
                async with http.get(f"https://127.0.0.1:{port}/health",
                                    trace_request_ctx=timing) as r:
                    rows.append(timing.fields(time.monotonic()))
                    assert r.status == 200
                    await r.read()
        return [o.session_reused for o in ctx._recent["127.0.0.1"]], rows

    reused, rows = asyncio.run(gets(servers["oca"], force_close=True))
    assert reused == [False, True, True]
    assert [r["conn"] for r in rows] == ["tls", "tls_resumed", "tls_resumed"]
    assert all(r["connect_ms"] > 0 and r["tls_ms"] > 0 and r["ttfb_ms"] > 0 for r in rows)
    _, rows = asyncio.run(gets(servers["oca"], force_close=False))  # keep-alive
    assert [r["conn"] for r in rows] == ["tls", "reused", "reused"]
    assert rows[1]["connect_ms"] == rows[1]["tls_ms"] == ""


def test_connect_probe_times_full_and_resumed_handshakes(servers, pki):
    from emulation.connect_probe import main, tls_times_ms
    for port in (servers["oca"], servers["origin"]):
        t = tls_times_ms("127.0.0.1", port, 2, str(pki["ca"]))
        assert all(len(v) == 2 and all(x > 0 for x in v) for v in t.values()), t
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_times_ms("127.0.0.1", servers["oca"], 1, str(pki["other_ca"]))
    with pytest.raises(SystemExit):
        main(["127.0.0.1", str(servers["oca"]), "1", "--burst", "2", "--tls-ca", str(pki["ca"])])
