"""The deployment description: which OCAs exist, where, whom they serve; tiers and service ports.

One format, parsed here only: the control plane reads it (--deployment FILE), controller.probe
reads the same file, and harness.services writes it.
  {"ocas": [{"name": "i1oca1", "tier": "embedded", "url": "http://198.18.1.100:8080",
             "serves": ["198.18.1.0/24"], "distance_hops": 1, "rtt_ms": 4.2,
             "site": "isp1" (optional; default: tier + served prefixes),
             "capacity_mb": 2000 (optional, MiB like the OCA's --capacity-mb; else taken
                                  from heartbeats),
             "fill_rate_mbps": 100 (optional)}, ...],
   "origin": {"name": "origin", "url": "http://...", "tier": "origin"},
   "catalog": {contracts.catalog.CatalogSpec fields},
   "regions": {"isp1": {"prefixes": ["198.18.1.0/24"], "preference_seed": 11}}}
Invariants: names are unique; tiers are embedded|ixp for OCAs; every URL is http(s)://host:port
without a path; prefixes are valid networks. Parsing never half-succeeds: it raises
DeploymentError naming the bad field. Pure: no I/O except load_deployment's one file read.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from contracts.catalog import CatalogSpec

OCA_TIERS = ("embedded", "ixp")
# Preference between tiers, nearest first; every steering policy orders by it.
TIER_RANK = {"embedded": 0, "ixp": 1, "origin": 2}
OCA_PORT = 8080  # every OCA and the origin listen on it (deployment URLs, anycast service)
CONTROL_PORT = 8000  # the control plane's manifest API
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class DeploymentError(ValueError):
    """The deployment description is malformed; the message names the field."""


@dataclass(frozen=True)
class OcaSpec:
    name: str
    tier: str
    url: str
    serves: tuple[Network, ...]
    distance_hops: int
    rtt_ms: float
    site: str
    capacity_bytes: int | None = None
    fill_rate_mbps: float | None = None

    def serves_ip(self, ip: str) -> bool:
        return ip_in_any(ip, self.serves)


@dataclass(frozen=True)
class OriginSpec:
    name: str
    url: str
    tier: str = "origin"


@dataclass(frozen=True)
class RegionSpec:
    name: str
    prefixes: tuple[Network, ...]
    preference_seed: int


@dataclass(frozen=True)
class Deployment:
    ocas: tuple[OcaSpec, ...]
    origin: OriginSpec
    catalog: CatalogSpec
    regions: tuple[RegionSpec, ...] = ()

    def oca(self, name: str) -> OcaSpec:
        for o in self.ocas:
            if o.name == name:
                return o
        raise KeyError(f"no OCA named {name!r} in the deployment")

    def region_of_ip(self, ip: str) -> RegionSpec | None:
        """The region with the most specific prefix containing ip (ties: first listed)."""
        best: tuple[int, RegionSpec] | None = None
        for r in self.regions:
            for p in r.prefixes:
                if ip_in_any(ip, (p,)) and (best is None or p.prefixlen > best[0]):
                    best = (p.prefixlen, r)
        return best[1] if best else None

    def client_prefix(self, ip: str) -> str:
        """The network a viewer's token is bound to: its region prefix, else the host."""
        addr = _parse_ip(ip)
        best: Network | None = None
        for r in self.regions:
            for p in r.prefixes:
                if addr.version == p.version and addr in p and (
                        best is None or p.prefixlen > best.prefixlen):
                    best = p
        if best is None:
            best = ipaddress.ip_network(f"{addr}/{addr.max_prefixlen}")
        return str(best)


def _parse_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def ip_in_any(ip: str, nets: tuple[Network, ...]) -> bool:
    addr = _parse_ip(ip)
    return any(addr.version == n.version and addr in n for n in nets)


def _req(d: dict, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise DeploymentError(f"{where}: expected an object, got {type(d).__name__}")
    if key not in d:
        raise DeploymentError(f"{where}: missing field {key!r}")
    return d[key]


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DeploymentError(f"{where}.url: expected a string")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise DeploymentError(f"{where}.url: expected http(s)://host:port, got {value!r}")
    if parts.path not in ("", "/") or parts.query:
        raise DeploymentError(f"{where}.url: must not have a path or query, got {value!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _nets(value: Any, where: str) -> tuple[Network, ...]:
    if not isinstance(value, list) or not value:
        raise DeploymentError(f"{where}: expected a non-empty list of prefixes")
    try:
        return tuple(ipaddress.ip_network(p, strict=True) for p in value)
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"{where}: bad prefix ({exc})") from None


def _number(d: dict, key: str, where: str, default: Any = None, kind=float) -> Any:
    if key not in d:
        if default is None:
            raise DeploymentError(f"{where}: missing field {key!r}")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise DeploymentError(f"{where}.{key}: expected a non-negative number, got {v!r}")
    return kind(v)


def _oca(d: dict, i: int) -> OcaSpec:
    where = f"ocas[{i}]"
    name = _req(d, "name", where)
    if not isinstance(name, str) or not name:
        raise DeploymentError(f"{where}.name: expected a non-empty string")
    tier = _req(d, "tier", where)
    if tier not in OCA_TIERS:
        raise DeploymentError(f"{where}.tier: expected one of {OCA_TIERS}, got {tier!r}")
    serves = _nets(_req(d, "serves", where), f"{where}.serves")
    site = d.get("site") or f"{tier}:" + ",".join(sorted(str(n) for n in serves))
    cap_mb = d.get("capacity_mb")
    cap = None if cap_mb is None else int(_number(d, "capacity_mb", where) * 2**20)
    rate = d.get("fill_rate_mbps")
    return OcaSpec(name=name, tier=tier, url=_url(_req(d, "url", where), where), serves=serves,
                   distance_hops=_number(d, "distance_hops", where, kind=int),
                   rtt_ms=_number(d, "rtt_ms", where), site=str(site), capacity_bytes=cap,
                   fill_rate_mbps=None if rate is None else _number(d, "fill_rate_mbps", where))


def parse_deployment(data: dict) -> Deployment:
    """Validate a deployment dict (see module docstring) into a Deployment."""
    ocas_raw = _req(data, "ocas", "deployment")
    if not isinstance(ocas_raw, list):
        raise DeploymentError("deployment.ocas: expected a list")
    ocas = tuple(_oca(d, i) for i, d in enumerate(ocas_raw))
    o = _req(data, "origin", "deployment")
    origin = OriginSpec(name=str(_req(o, "name", "origin")), url=_url(_req(o, "url", "origin"),
                                                                         "origin"))
    if o.get("tier", "origin") != "origin":
        raise DeploymentError("origin.tier: must be 'origin'")
    names = [x.name for x in ocas] + [origin.name]
    if len(set(names)) != len(names):
        raise DeploymentError(f"deployment: duplicate names in {names}")
    try:
        catalog = CatalogSpec.from_json(data.get("catalog", {}))
    except (ValueError, TypeError) as exc:
        raise DeploymentError(f"deployment.catalog: {exc}") from None
    regions_raw = data.get("regions", {})
    if not isinstance(regions_raw, dict):
        raise DeploymentError("deployment.regions: expected an object")
    regions = tuple(
        RegionSpec(name=name, prefixes=_nets(_req(r, "prefixes", f"regions.{name}"),
                                             f"regions.{name}.prefixes"),
                   preference_seed=_number(r, "preference_seed", f"regions.{name}", 0, int))
        for name, r in sorted(regions_raw.items()))
    return Deployment(ocas=ocas, origin=origin, catalog=catalog, regions=regions)


def load_deployment(path: str | Path) -> Deployment:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DeploymentError(f"{path}: not valid JSON ({exc})") from None
    return parse_deployment(data)
