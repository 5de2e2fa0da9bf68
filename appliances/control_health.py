"""The control plane's OCA health registry: the last heartbeat each OCA sent and when.

Invariants: one entry per OCA name, replaced whole by each heartbeat (a copy of the dict, so a
caller mutating its own dict changes nothing here); `received_unix` is the control plane's clock.
Local steering (appliances.steering_local) judges staleness from it; the deployment format
itself lives in contracts.deployment.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OcaHealth:
    """The last heartbeat of one OCA and when (unix s) the control plane received it."""

    received_unix: float
    health: dict

    def age_s(self, now: float) -> float:
        return now - self.received_unix


@dataclass
class HealthRegistry:
    """Latest heartbeat per OCA name; thread-safe (steering may run in a worker thread)."""

    _latest: dict[str, OcaHealth] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, name: str, health: dict, now: float) -> None:
        with self._lock:
            self._latest[name] = OcaHealth(received_unix=now, health=dict(health))

    def get(self, name: str) -> OcaHealth | None:
        with self._lock:
            return self._latest.get(name)

    def snapshot(self) -> dict[str, OcaHealth]:
        with self._lock:
            return dict(self._latest)
