"""Store: atomic publish, verification, capacity, LRU and pinned eviction, recovery, hot set."""
import hashlib
import os

import pytest

from appliances.store import EvictionPolicy, Store, StoreError


def k(i, title="t0000", kbps=235):
    return (title, kbps, i)


def blob(i, n=100):
    return bytes([i % 256]) * n


def test_put_lookup_and_etag(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    obj = s.put(k(1), blob(1))
    assert s.lookup(k(1)) == obj
    assert obj.path.read_bytes() == blob(1)
    sha = hashlib.sha256(blob(1)).hexdigest()
    assert obj.sha256 == sha and obj.etag == f'"{sha[:32]}"'
    assert obj.path.name == f"1.{sha}"
    assert s.used_bytes == 100 and s.titles() == ["t0000"]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_writer_invisible_until_commit(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    w = s.open_writer(k(2), expected_size=100)
    w.write(blob(2, 60))
    assert s.lookup(k(2)) is None and k(2) not in s
    assert w.tmp_path.exists()
    w.write(blob(2, 40))
    assert w.commit() is not None and k(2) in s
    assert not w.tmp_path.exists()


def test_verification_failures_leave_nothing(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    with pytest.raises(StoreError, match="SHA-256"):
        s.put(k(1), blob(1), expected_sha256="0" * 64)
    w = s.open_writer(k(2), expected_size=100)
    w.write(blob(2, 50))
    with pytest.raises(StoreError, match="expected 100"):
        w.commit()
    w = s.open_writer(k(3), expected_size=10)
    with pytest.raises(StoreError, match="longer"):
        w.write(blob(3, 11))
    assert s.keys() == [] and list((tmp_path / "tmp").iterdir()) == []


def test_lru_eviction_respects_recency_and_capacity(tmp_path):
    s = Store(tmp_path, capacity_bytes=300, eviction="lru")
    for i in range(3):
        s.put(k(i), blob(i))
    s.lookup(k(0))  # 0 becomes most recent; 1 is now LRU
    s.put(k(3), blob(3))
    assert set(s.keys()) == {k(0), k(2), k(3)}
    assert s.used_bytes == 300 and s.evictions == 1
    assert len(list((tmp_path / "objects").glob("*/*/*"))) == 3


def test_object_larger_than_capacity_refused(tmp_path):
    s = Store(tmp_path, capacity_bytes=50)
    assert s.put(k(0), blob(0)) is None
    assert s.keys() == [] and list((tmp_path / "tmp").iterdir()) == []


def test_pinned_policy_protects_pins(tmp_path):
    s = Store(tmp_path, capacity_bytes=300, eviction="pinned")
    s.put(k(0), blob(0), pinned=True)
    s.put(k(1), blob(1))
    s.put(k(2), blob(2), pinned=True)
    s.put(k(3), blob(3))  # only unpinned 1 may go
    assert set(s.keys()) == {k(0), k(2), k(3)}
    s.put(k(4), blob(4), pinned=True)  # pinned newcomer evicts unpinned 3
    assert set(s.keys()) == {k(0), k(2), k(4)}
    assert s.put(k(5), blob(5)) is None  # everything pinned: refused
    assert set(s.keys()) == {k(0), k(2), k(4)}


def test_set_pins_replaces_pin_set(tmp_path):
    s = Store(tmp_path, capacity_bytes=200, eviction="pinned")
    s.put(k(0), blob(0), pinned=True)
    s.put(k(1), blob(1), pinned=True)
    s.set_pins([k(1)])
    s.put(k(2), blob(2))
    assert set(s.keys()) == {k(1), k(2)}


def test_lru_ignores_pins(tmp_path):
    s = Store(tmp_path, capacity_bytes=200, eviction="lru")
    s.put(k(0), blob(0), pinned=True)
    s.put(k(1), blob(1))
    s.put(k(2), blob(2))
    assert set(s.keys()) == {k(1), k(2)}


def test_recovery_removes_partials_and_misfits(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    s.put(k(0), blob(0))
    s.put(k(1), blob(1, 50))
    w = s.open_writer(k(2), expected_size=100)
    w.write(blob(2, 30))  # simulated crash: never committed or aborted
    junk = tmp_path / "objects" / "t0000" / "235" / "notanobject"
    junk.write_bytes(b"x")
    sizes = {k(0): 100, k(1): 100, k(2): 100}
    s2 = Store(tmp_path, capacity_bytes=1000, expected_size=sizes.get)
    assert s2.removed_partials == 1
    assert s2.keys() == [k(0)]  # k(1) had the wrong size, k(2) was partial
    assert not junk.exists() and list((tmp_path / "tmp").iterdir()) == []
    assert s2.lookup(k(0)).etag == s.lookup(k(0)).etag


def test_recovery_trims_to_smaller_capacity(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    for i in range(5):
        s.put(k(i), blob(i))
    s2 = Store(tmp_path, capacity_bytes=250)
    assert len(s2.keys()) == 2 and s2.used_bytes == 200
    assert len(list((tmp_path / "objects").glob("*/*/*"))) == 2


def test_hot_set_promotes_on_second_hit_and_stays_bounded(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000, mem_bytes=150)
    a, b = s.put(k(0), blob(0)), s.put(k(1), blob(1))
    assert s.hot_bytes(a) is None
    assert s.hot_bytes(a) == blob(0)
    s.hot_bytes(b)
    assert s.hot_bytes(b) == blob(1)  # evicts a from memory (150 byte budget)
    assert s.stats()["hot_bytes"] == 100
    s.remove(k(1))
    assert s.stats()["hot_bytes"] == 0 and not b.path.exists()


def test_replacing_object_removes_old_file(tmp_path):
    s = Store(tmp_path, capacity_bytes=1000)
    old = s.put(k(0), blob(0))
    new = s.put(k(0), blob(9))
    assert not old.path.exists() and new.path.read_bytes() == blob(9)
    assert s.used_bytes == 100


def test_policy_pure_victims():
    p = EvictionPolicy("pinned")
    for i in range(4):
        p.add(k(i), 10)
    p.pin(k(0))
    assert p.victims(15, 40) == [k(1), k(2)]
    assert p.victims(35, 40) is None
    assert p.victims(41, 1000) == []
    assert p.victims(50, 40) is None
    with pytest.raises(ValueError):
        EvictionPolicy("fifo")


def test_bad_parameters(tmp_path):
    with pytest.raises(ValueError):
        Store(tmp_path, capacity_bytes=0)
    with pytest.raises(ValueError):
        Store(tmp_path, capacity_bytes=10, eviction="random")


def test_file_survives_eviction_while_open(tmp_path):
    s = Store(tmp_path, capacity_bytes=100)
    obj = s.put(k(0), blob(0))
    with open(obj.path, "rb") as f:
        s.put(k(1), blob(1))  # evicts k(0)
        assert not obj.path.exists()
        assert os.read(f.fileno(), 200) == blob(0)
