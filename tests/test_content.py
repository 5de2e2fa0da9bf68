"""Catalog: determinism, sizes, manifests, popularity and strict path parsing."""
import hashlib

import pytest

from appliances.content import LADDER_KBPS, SEGMENT_S, Catalog, CatalogSpec, ContentError


def small():
    return Catalog(CatalogSpec(seed=7, n_titles=5, duration_s=20))


def test_defaults_match_contract():
    spec = CatalogSpec()
    assert spec.ladder_kbps == LADDER_KBPS == (235, 750, 1750, 3000, 5800)
    assert spec.segment_s == SEGMENT_S == 4
    cat = Catalog()
    assert len(cat.titles()) == 100 and cat.titles()[0] == "t0000" and cat.titles()[7] == "t0007"
    assert cat.segment_count("t0000") == 30


def test_segment_count_rounds_up():
    assert Catalog(CatalogSpec(n_titles=1, duration_s=10)).segment_count("t0000") == 3


@pytest.mark.parametrize("kwargs", [
    {"n_titles": 0}, {"duration_s": 0}, {"segment_s": 0}, {"ladder_kbps": ()},
    {"ladder_kbps": (750, 235)}, {"ladder_kbps": (235, 235)}, {"zipf_alpha": -1},
])
def test_spec_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        CatalogSpec(**kwargs)


def test_spec_json_roundtrip_and_unknown_field():
    spec = CatalogSpec(seed=3, n_titles=9, ladder_kbps=(235, 5800))
    assert CatalogSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="unknown"):
        CatalogSpec.from_json('{"seed": 1, "bogus": 2}')


def test_cli_args_roundtrip():
    import argparse
    p = argparse.ArgumentParser()
    CatalogSpec.add_cli_args(p)
    spec = CatalogSpec.from_cli_args(p.parse_args(
        ["--catalog-seed", "5", "--titles", "12", "--duration-s", "60", "--zipf-alpha", "1.1"]))
    assert spec == CatalogSpec(seed=5, n_titles=12, duration_s=60, zipf_alpha=1.1)


def test_sizes_deterministic_and_within_30_percent():
    a, b = small(), small()
    for t in a.titles():
        for k in a.spec.ladder_kbps:
            for i in range(a.segment_count(t)):
                s = a.segment_size(t, k, i)
                assert s == b.segment_size(t, k, i)
                mean = k * 1000 * 4 / 8
                assert 0.7 * mean <= s <= 1.3 * mean


def test_mean_size_close_to_bitrate():
    cat = Catalog(CatalogSpec(n_titles=20, duration_s=400))
    sizes = [cat.segment_size(t, 5800, i) for t in cat.titles() for i in range(100)]
    mean = sum(sizes) / len(sizes)
    assert abs(mean - 2_900_000) / 2_900_000 < 0.03
    assert max(sizes) - min(sizes) > 0.3 * 2_900_000  # real variation, not constant


def test_bytes_deterministic_distinct_and_sized():
    cat = small()
    b1 = cat.segment_bytes("t0001", 750, 2)
    assert b1 == small().segment_bytes("t0001", 750, 2)
    assert len(b1) == cat.segment_size("t0001", 750, 2)
    assert b1 != cat.segment_bytes("t0001", 750, 3)
    assert b1[:64] != Catalog(CatalogSpec(seed=8, n_titles=5, duration_s=20)).segment_bytes(
        "t0001", 750, 2)[:64]
    assert cat.segment_sha256("t0001", 750, 2) == hashlib.sha256(b1).hexdigest()


def test_manifest_shape_and_isolation():
    cat = small()
    m = cat.title_manifest("t0002")
    assert m["title"] == "t0002" and m["segment_s"] == 4 and m["ladder_kbps"] == list(LADDER_KBPS)
    assert set(m["segments"]) == set(LADDER_KBPS)
    size, sha = m["segments"][1750][3]
    assert size == cat.segment_size("t0002", 1750, 3)
    assert sha == cat.segment_sha256("t0002", 1750, 3)
    m["segments"][1750][3][0] = -1
    assert cat.title_manifest("t0002")["segments"][1750][3][0] == size


def test_popularity_is_seeded_zipf():
    cat = Catalog(CatalogSpec(n_titles=50, zipf_alpha=1.0))
    pop = cat.popularity()
    assert set(pop) == set(cat.titles())
    assert abs(sum(pop.values()) - 1.0) < 1e-9
    probs = sorted(pop.values(), reverse=True)
    assert probs[0] / probs[1] == pytest.approx(2.0)
    assert pop == Catalog(CatalogSpec(n_titles=50, zipf_alpha=1.0)).popularity()
    other = Catalog(CatalogSpec(seed=2, n_titles=50, zipf_alpha=1.0)).popularity()
    assert pop != other


def test_parse_path_ok():
    assert small().parse_path("/v/t0004/5800/4") == ("t0004", 5800, 4)
    assert small().parse_path("/v/t0000/235/0") == ("t0000", 235, 0)


@pytest.mark.parametrize("path", [
    "/v/t0005/235/0",          # unknown title
    "/v/t0001/236/0",          # not on ladder
    "/v/t0001/235/5",          # index past end
    "/v/t0001/235/-1", "/v/t0001/0235/1", "/v/t0001/235/01", "/v/t1/235/0",
    "/v/../../etc/passwd", "/v/%2e%2e/%2e%2e/etc/passwd", "/v/t0001/235/0/",
    "/v/t0001/235/0?x=1", "/v/t0001/235", "v/t0001/235/0", "", "/V/t0001/235/0",
    "/v/t0001/235/0\x00", "/v/t0001/２３５/0",
])
def test_parse_path_rejects(path):
    with pytest.raises(ContentError):
        small().parse_path(path)


def test_content_error_is_value_error():
    assert issubclass(ContentError, ValueError)
