"""What every reliability module agrees on: the catalog the servers serve, their timeouts and
load limits, and the segment URL shape.

Pure constants and one pure function; imported by the bench runner, its checks and the load
generator subprocess alike, so this module imports nothing from bench/.
"""
from __future__ import annotations

from appliances.content import CatalogSpec

SPEC = CatalogSpec(seed=7, n_titles=8, duration_s=40)  # 10 segments per title
CAT_FLAGS = ["--catalog-seed", "7", "--titles", "8", "--duration-s", "40"]  # = SPEC, as CLI flags
CONF_KEY = ("t0001", 750, 2)  # the object the conformance table requests
HEADER_TIMEOUT_S, IDLE_TIMEOUT_S = 2.0, 3.0
OVERLOAD_P99_BOUND_MS = 1000.0
LOAD_LIMITS = {"max_streams": 8, "egress_limit_mbps": 400.0}
LOAD_FLAGS = ["--max-streams", "8", "--egress-mbps", "400"]  # = LOAD_LIMITS, as CLI flags
# Overload clients: the OCA tells clients apart by peer IP, and all of 127.0.0.0/8 is loopback
GREEDY_IP = "127.0.0.2"  # every connection of the greedy load generator: one client
LEGIT_IPS = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14")  # one per legit client
FAIR_SHARE_MIN = 0.8  # each legit client gets >= this fraction of its fair share of successes


def seg_path(key: tuple) -> str:
    """URL path of segment (title, kbps, index)."""
    return f"/v/{key[0]}/{key[1]}/{key[2]}"
