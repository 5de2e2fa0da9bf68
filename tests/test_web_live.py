"""`--web` on a running lab, in headless Chromium: the topology appears, the port counters of
a viewer's access link grow while it plays, and a killed OCA shows as unreachable. One small
network (metro with one ISP); the screenshot is saved in the test's folder."""
import os
import time

import pytest

from webpage import browser

pytestmark = [pytest.mark.emulation,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, OVS)")]

ACCESS = "i1v1:0-oci1lan:1"  # the viewer's access link, counted at the ISP's LAN switch
WHOLE = {"stage_tiers": ("ixp", "embedded"), "capacity_rules": {"embedded": "1", "ixp": "1"}}


def _bytes(page) -> int:
    return int(page.get_attribute(f'#links tr[data-link="{ACCESS}"]', "data-bytes") or 0)


def test_live_page_follows_the_lab(tmp_path):
    from conftest import emulation_unavailable
    if (reason := emulation_unavailable()) is not None:
        pytest.skip(reason)
    from emulation.build import Network, Options
    from harness.services import ServiceOptions, Services
    from ocalab.web.serve import live
    from topologies.catalog import by_name
    plan = by_name("metro", {"isps": "1"})
    t_build = time.monotonic()
    with Network(plan, Options(verify=False, label="pytest-web")) as net:
        t_up = time.monotonic()
        print(f"web live: network up {t_up - t_build:.1f} s after the build began (lock wait included)")
        svc = Services(net, tmp_path, ServiceOptions(arm="embedded", warm_titles=3, **WHOLE,
                                                     catalog={"seed": 5, "n_titles": 3, "duration_s": 60}))
        try:
            svc.start()
            with live(net, svc.logs, 0) as url, browser() as page:
                t0 = time.monotonic()
                page.goto(url)
                page.wait_for_function("document.body.dataset.frames >= 1", timeout=15_000)
                w0 = time.monotonic()
                print(f"web live: first frame drawn {w0 - t0:.2f} s after goto")
                assert page.get_attribute("body", "data-nodes") == str(len(plan.nodes))
                assert page.get_attribute("body", "data-edges") == str(len(plan.links))
                oca = '#ocas tr[data-oca="i1oca1"] .status'
                page.wait_for_function(f"document.querySelector('{oca}')?.textContent === 'ok'", timeout=30_000)
                before = _bytes(page)
                player = svc.play("i1v1", 1, 12, seed=3, titles="t0001")
                # who serves whom: the session's row names a server (its own OCA, unless a slow
                # probe moved it on for a moment)
                row = page.wait_for_selector('#sessions tr[data-session^="i1v1-"]', timeout=60_000)
                assert row.inner_text().split("\t")[2] in ("i1oca1", "nfxoca1", "origin"), row.inner_text()
                page.wait_for_function(
                    f"Number(document.querySelector('#links tr[data-link=\"{ACCESS}\"]').dataset.bytes) > {before + 500_000}",
                    timeout=60_000)
                page.wait_for_function(
                    f"Number(document.querySelector('#links tr[data-link=\"{ACCESS}\"]').dataset.mbps) > 0.1",
                    timeout=30_000)
                svc.kill("i1oca1")
                page.wait_for_function(f"document.querySelector('{oca}').textContent === 'unreachable'",
                                       timeout=30_000)
                page.wait_for_selector("#events li >> text=i1oca1: ok -> unreachable", timeout=10_000)
                n, w1 = int(page.get_attribute("body", "data-frames")), time.monotonic()
                print(f"web live: {(n - 1) / (w1 - w0):.2f} frames/s drawn over {w1 - w0:.1f} s")
                shot = tmp_path / "web-live.png"
                page.screenshot(path=str(shot))
                assert shot.stat().st_size > 10_000
                player.kill()
                player.wait(10)
            print(f"web live: services, page and checks took {time.monotonic() - t_up:.1f} s")
        finally:
            svc.stop()
