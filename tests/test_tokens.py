"""Signed URLs: OK / FORBIDDEN / EXPIRED, tampering, client prefix, key files."""
import pytest

from appliances import tokens
from appliances.tokens import TokenResult

KEY = bytes(range(32))
NOW = 1_700_000_000


def q(prefix="/v/t0007/", cp="198.18.1.0/24", exp=NOW + 60, key=KEY):
    return tokens.sign(key, prefix, cp, exp)


def v(query, path="/v/t0007/1750/12", ip="198.18.1.9", now=NOW, key=KEY):
    return tokens.verify(key, path, ip, query, now)


def test_query_shape():
    s = q()
    assert s.startswith(f"exp={NOW + 60}&cp=198.18.1.0/24&tok=")
    assert "=" not in s.split("tok=")[1]


def test_ok_for_every_segment_of_the_title():
    s = q()
    assert v(s) is TokenResult.OK
    assert v(s, path="/v/t0007/235/0") is TokenResult.OK


def test_expired_only_when_genuine():
    s = q(exp=NOW - 1)
    assert v(s) is TokenResult.EXPIRED
    tampered = s.replace(f"exp={NOW - 1}", f"exp={NOW + 999}")
    assert v(tampered) is TokenResult.FORBIDDEN


@pytest.mark.parametrize("mutate", [
    lambda s: "",
    lambda s: s.split("&tok=")[0],
    lambda s: s[:-2] + ("AA" if not s.endswith("AA") else "BB"),
    lambda s: s.replace("cp=198.18.1.0/24", "cp=0.0.0.0/0"),
    lambda s: s + "&tok=x",
    lambda s: s.replace("exp=", "exp=0"),
    lambda s: s.replace("exp=", "exp=+"),
    lambda s: "garbage&&&=",
])
def test_tampered_or_missing_is_forbidden(mutate):
    assert v(mutate(q())) is TokenResult.FORBIDDEN


def test_other_title_wrong_key_wrong_client():
    s = q()
    assert v(s, path="/v/t0008/1750/12") is TokenResult.FORBIDDEN
    assert v(s, key=bytes(32)) is TokenResult.FORBIDDEN
    assert v(s, ip="198.18.2.9") is TokenResult.FORBIDDEN
    assert v(s, ip="not-an-ip") is TokenResult.FORBIDDEN
    assert v(s, path="/health") is TokenResult.FORBIDDEN


def test_ipv4_mapped_client_and_extra_params():
    s = q()
    assert v(s, ip="::ffff:198.18.1.9") is TokenResult.OK
    assert v("foo=1&" + s) is TokenResult.OK


def test_percent_encoded_cp_accepted():
    s = q().replace("/24", "%2F24")
    assert v(s) is TokenResult.OK


@pytest.mark.parametrize("args", [
    ("/v/t0007", "198.18.1.0/24", NOW), ("/x/t0007/", "198.18.1.0/24", NOW),
    ("/v/t0007/", "198.18.1.1/24", NOW), ("/v/t0007/", "nope", NOW),
    ("/v/t0007/", "198.18.1.0/24", -1),
])
def test_sign_rejects_bad_input(args):
    with pytest.raises(ValueError):
        tokens.sign(KEY, *args)


def test_short_key_rejected():
    with pytest.raises(ValueError):
        tokens.sign(b"short", "/v/t0007/", "198.18.1.0/24", NOW)


def test_key_file_roundtrip(tmp_path):
    p = tmp_path / "key.hex"
    key = tokens.write_key(p)
    assert tokens.load_key(p) == key and len(key) == 32
    (tmp_path / "bad").write_text("zz-not-hex")
    with pytest.raises(ValueError, match="hex"):
        tokens.load_key(tmp_path / "bad")
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(ValueError):
        tokens.load_key(tmp_path / "short")


@pytest.mark.parametrize("exp", ["%C2%B2", "\u0662", "%D9%A2", "%EF%BC%91"])
def test_non_ascii_digit_expiry_is_forbidden_not_a_crash(exp):
    """Regression (reliability fuzz): str.isdigit() admits '²' and Arabic-Indic digits, on
    which int() raised ValueError -> 500 with a traceback on the OCA."""
    s = q().replace(f"exp={NOW + 60}", f"exp={exp}")
    assert v(s) is TokenResult.FORBIDDEN
