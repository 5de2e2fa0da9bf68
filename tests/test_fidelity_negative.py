"""The fidelity gate's negative tests on a real network (root): one link realized wrong on purpose
(emulation.build.Options.skew_ms; the plan unchanged) must be refused, with its name in the
EmulationError, on each link backend. One small metro (1 ISP, 1 viewer) per case.
"""
from __future__ import annotations

import pytest

from conftest import controller_works, emulation_unavailable
from emulation.linkemu import EmulationError, probe_netem
from topologies.catalog import MetroParams, metro

pytestmark = pytest.mark.emulation

PARAMS = MetroParams(isps=1, viewers_per_isp=1)
ACCESS = "i1v1:0-oci1lan:1"
CLOUD = "cldr:0-octrn:1"  # 30 ms, transit LAN to the cloud region
CASES = {"access-slow": (ACCESS, (1.0, 1.0)), "access-fast": (ACCESS, (-1.0, -1.0)),
         "cloud-2ms": (CLOUD, (2.0, 2.0)), "access-asymmetric": (ACCESS, (1.0, 0.0))}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["relay", "netem"])
def test_the_gate_refuses_a_wrong_link_by_name(backend, case):
    reason = emulation_unavailable()
    if reason:
        pytest.skip(reason)
    if backend == "netem" and not probe_netem().ok:
        pytest.skip(f"netem unavailable: {probe_netem().detail}")
    from emulation.build import Network, Options
    link, skew = CASES[case]
    plan = metro(PARAMS)
    assert link in {lk.name for lk in plan.links}
    net = Network(plan, Options(link_backend=backend, controller=controller_works(), verify=False,
                                skew_ms={link: skew}, label="pytest-skew", lock_wait_s=300))
    with net:
        with pytest.raises(EmulationError) as exc:
            net.verify(settle_rounds=1)
        summary = net.summary()
    text = str(exc.value)
    print(text)
    refused = [u for u in net.link_verdict if not u.ok]
    assert any(u.links == (link,) for u in refused), text  # judged alone, and refused
    assert f"  {link} (" in text, text  # the message names the link and its class
    assert summary["skew_ms"] == {link: list(skew)}
    assert all(c <= summary["compensation_budget_ms"] for c in summary["compensation_ms"].values())
    rows = {tuple(r["links"]): r for r in summary["link_verdict"]}
    assert rows[(link,)]["ok"] is False
