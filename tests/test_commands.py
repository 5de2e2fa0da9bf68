"""Signed control commands (appliances.commands): the sans-IO verifier with an injected clock."""
import pytest

from appliances import commands
from appliances.commands import CommandResult as R, CommandVerifier

KEY = bytes(range(32))
BODY = b'{"segments": [], "sources": ["http://a"]}'
T0 = 1_800_000_000


def lower(headers: dict) -> dict:
    return {k.lower(): v for k, v in headers.items()}


def signed(now=T0, nonce=None, body=BODY, method="POST", target="/fill", key=KEY) -> dict:
    return lower(commands.sign(key, method, target, body, now, nonce))


def test_valid_command_once_then_replayed():
    v = CommandVerifier(KEY)
    h = signed(nonce="a" * 32)
    assert v.verify("POST", "/fill", BODY, h, T0) is R.OK
    assert v.verify("POST", "/fill", BODY, h, T0 + 1) is R.REPLAYED
    assert v.verify("POST", "/fill", BODY, signed(nonce="b" * 32), T0) is R.OK


def test_every_part_is_covered_by_the_mac():
    v = CommandVerifier(KEY)
    h = signed()
    assert v.verify("POST", "/fill", BODY + b" ", h, T0) is R.FORGED
    assert v.verify("PUT", "/fill", BODY, h, T0) is R.FORGED
    assert v.verify("POST", "/fill?x=1", BODY, h, T0) is R.FORGED
    assert v.verify("POST", "/fill", BODY, {**h, "x-ocalab-cmd-ts": str(T0 + 1)}, T0) is R.FORGED
    assert v.verify("POST", "/fill", BODY, {**h, "x-ocalab-cmd-nonce": "c" * 32}, T0) is R.FORGED
    assert v.verify("POST", "/fill", BODY, signed(key=b"k" * 32), T0) is R.FORGED
    assert v.verify("POST", "/fill", BODY, h, T0) is R.OK  # refusals remembered no nonce


def test_window_edges_past_and_future():
    v = CommandVerifier(KEY, window_s=30.0)
    assert v.verify("POST", "/fill", BODY, signed(T0 - 30), T0) is R.OK
    assert v.verify("POST", "/fill", BODY, signed(T0 + 30), T0) is R.OK
    assert v.verify("POST", "/fill", BODY, signed(T0 - 31), T0) is R.EXPIRED
    assert v.verify("POST", "/fill", BODY, signed(T0 + 31), T0) is R.EXPIRED
    assert v.verify("POST", "/fill", BODY, signed(T0), T0 + 30.5) is R.EXPIRED


def test_nonce_memory_is_bounded_and_forgets_only_what_expired():
    v = CommandVerifier(KEY, window_s=30.0, max_nonces=3)
    first = signed(T0, "0" * 32)
    for i in range(3):
        assert v.verify("POST", "/fill", BODY, signed(T0 + i, f"{i:032x}"), T0 + i) is R.OK
    assert v.verify("POST", "/fill", BODY, signed(T0 + 3), T0 + 3) is R.BUSY  # fail closed
    assert v.remembered(T0 + 30) == 3  # the first nonce is kept until its ts + window
    assert v.verify("POST", "/fill", BODY, first, T0 + 30) is R.REPLAYED
    assert v.remembered(T0 + 30.5) == 2
    assert v.verify("POST", "/fill", BODY, first, T0 + 30.5) is R.EXPIRED  # never replayable
    assert v.verify("POST", "/fill", BODY, signed(T0 + 31), T0 + 31) is R.OK


@pytest.mark.parametrize("change", [
    {"x-ocalab-cmd-ts": "0123"}, {"x-ocalab-cmd-ts": "-5"}, {"x-ocalab-cmd-ts": "1e9"},
    {"x-ocalab-cmd-ts": "1" * 13}, {"x-ocalab-cmd-ts": "\u00b2"},
    {"x-ocalab-cmd-nonce": "A" * 32}, {"x-ocalab-cmd-nonce": "a" * 31},
    {"x-ocalab-cmd-mac": "Z" * 64}, {"x-ocalab-cmd-mac": ""},
    {"x-ocalab-cmd-mac": None}, {"x-ocalab-cmd-ts": None},
])
def test_malformed_and_unsigned(change):
    h = {k: v for k, v in {**signed(), **change}.items() if v is not None}
    assert CommandVerifier(KEY).verify("POST", "/fill", BODY, h, T0) is R.MALFORMED
    assert CommandVerifier(KEY).verify("POST", "/fill", BODY, {}, T0) is R.UNSIGNED


def test_target_of_and_key_checks():
    assert commands.target_of("http://198.18.1.100:8080/fill") == "/fill"
    assert commands.target_of("http://h/a/fill?x=1") == "/a/fill?x=1"
    with pytest.raises(ValueError):
        CommandVerifier(b"short")
    with pytest.raises(ValueError):
        commands.sign(b"short", "POST", "/fill", b"", T0)
