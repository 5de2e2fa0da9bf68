"""harness.sizing: capacity rules relative to the catalog (pure)."""
from __future__ import annotations

import pytest

from harness.sizing import (DEFAULT_RULES, SLACK_BYTES, CapacityRule, capacity_bytes,
                            parse_rule, tier_rules)

POP = {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}
BYTES = {"a": 100, "b": 200, "c": 300, "d": 400}


def test_capacity_holds_the_head_or_a_catalog_fraction_after_headroom():
    assert capacity_bytes(CapacityRule("head", 0.8), POP, BYTES, 1.0) == 300 + SLACK_BYTES
    assert capacity_bytes(CapacityRule("catalog", 1.0), POP, BYTES, 0.5) == 2000 + SLACK_BYTES
    big = {t: b * 10**6 for t, b in BYTES.items()}
    cap = capacity_bytes(CapacityRule("head", 0.9), POP, big, 0.95)
    assert int(cap * 0.95) >= 600 * 10**6  # the plan's budget holds a, b and c


def test_rules_parse_and_bad_ones_name_the_key():
    assert parse_rule("head:0.9") == CapacityRule("head", 0.9)
    assert parse_rule(" 0.25 ") == CapacityRule("catalog", 0.25)
    assert parse_rule("mb:40") == CapacityRule("mb", 40.0) and str(parse_rule("mb:40")) == "mb:40"
    assert capacity_bytes(parse_rule("mb:40"), POP, BYTES, 0.95) == 40 * 2**20  # exactly, no headroom
    assert str(parse_rule("head:0.90")) == "head:0.9" and str(parse_rule("1")) == "1"
    for bad in ("head:0", "head:1.2", "0", "3", "most", "head:", "nan", "mb:0", "mb:-5", "mb:x"):
        with pytest.raises(ValueError, match="embedded_capacity"):
            parse_rule(bad, "embedded_capacity")


def test_tier_rules_default_to_open_connect_sizes_and_refuse_unknown_keys():
    rules = tier_rules()
    assert {t: str(r) for t, r in rules.items()} == {"embedded": "head:0.95", "ixp": "1"}
    assert set(rules) == set(DEFAULT_RULES)
    assert str(tier_rules({"ixp_capacity": "0.5"})["ixp"]) == "0.5"
    with pytest.raises(ValueError, match="unknown capacity key"):
        tier_rules({"edge_capacity": "1"})


def test_runner_takes_capacity_keys_out_of_the_plan_overrides_and_refuses_bad_ones():
    from harness.runner import _capacity
    overrides = {"isps": "2", "embedded_capacity": "head:0.9"}
    assert _capacity(overrides) == {"embedded": "head:0.9", "ixp": "1"}
    assert _capacity({"embedded_capacity": "0.5"})["embedded"] == "0.5"
    assert overrides == {"isps": "2"}  # what is left goes to the plan
    with pytest.raises(SystemExit, match="embedded_capacity='lots'"):
        _capacity({"embedded_capacity": "lots"})
