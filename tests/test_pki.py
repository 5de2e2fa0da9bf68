"""Lab PKI (harness.pki) and the appliances' TLS contexts: chain, SANs, expiry, foreign CA.

Handshakes run over socket pairs in memory (ssl.MemoryBIO), so no port is opened."""
import datetime as dt
import ipaddress
import ssl
import stat

import pytest
from cryptography import x509

from appliances.tls import client_context, server_context
from harness.pki import LabCA, ServerSpec, write_pki


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, host: str) -> None:
    """Run a TLS handshake in memory; raises ssl.SSLCertVerificationError on a bad chain."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    cli = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    srv = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done_c = done_s = False
    for _ in range(20):
        for obj, done_name in ((cli, "c"), (srv, "s")):
            if (done_name == "c" and done_c) or (done_name == "s" and done_s):
                continue
            try:
                obj.do_handshake()
                if done_name == "c":
                    done_c = True
                else:
                    done_s = True
            except ssl.SSLWantReadError:
                pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
        if done_c and done_s:
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    files = write_pki(folder, [ServerSpec("oca1", ("oca1.lab",), ("198.18.1.10",)),
                               ServerSpec("origin", ("origin.lab",), ("198.19.0.5", "::1"))])
    return folder, files


def test_files_written_and_key_private(pki):
    folder, files = pki
    assert (folder / "ca.pem").exists() and set(files) == {"oca1", "origin"}
    for crt, key in files.values():
        assert crt.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_sans_and_key_type(pki):
    folder, files = pki
    cert = x509.load_pem_x509_certificate(files["origin"][0].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["origin.lab"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.19.0.5"),
                                                        ipaddress.ip_address("::1")]
    assert cert.public_key().curve.name == "secp256r1"
    assert cert.not_valid_after - cert.not_valid_before <= dt.timedelta(days=2)


@pytest.mark.parametrize("host", ["198.18.1.10", "oca1.lab"])
def test_chain_verifies_by_ip_and_name(pki, host):
    folder, files = pki
    handshake(client_context(folder / "ca.pem"), server_context(*files["oca1"]), host)


def test_wrong_ip_is_refused(pki):
    folder, files = pki
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(client_context(folder / "ca.pem"), server_context(*files["oca1"]),
                  "198.18.1.11")


def test_cert_of_another_ca_is_refused(pki, tmp_path):
    folder, _ = pki
    other = write_pki(tmp_path, [ServerSpec("oca1", ips=("198.18.1.10",))])
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(client_context(folder / "ca.pem"), server_context(*other["oca1"]),
                  "198.18.1.10")


def test_expired_cert_is_refused(tmp_path):
    ca = LabCA()
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    issued = ca.issue("oca1", ips=["198.18.1.10"], valid_s=3600, now=old)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "o.crt").write_bytes(issued.cert_pem)
    (tmp_path / "o.key").write_bytes(issued.key_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(client_context(tmp_path / "ca.pem"),
                  server_context(tmp_path / "o.crt", tmp_path / "o.key"), "198.18.1.10")


def test_server_context_is_tls13_only(pki):
    _, files = pki
    assert server_context(*files["oca1"]).minimum_version == ssl.TLSVersion.TLSv1_3


def test_bad_names_refused(tmp_path):
    with pytest.raises(ValueError):
        write_pki(tmp_path, [ServerSpec("../x", ips=("198.18.0.1",))])
    with pytest.raises(ValueError):
        LabCA().issue("nobody")
