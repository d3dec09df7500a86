"""A pod network on loopback: each pod the simulated kubelet runs gets its own address in
127.0.0.0/8 (all of it is this machine), so several real agents can listen on the one agent
port the pod template names, as pods do on their own IPs."""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from tests.kube.kubelet import FakeKubelet


@dataclass
class PodNetKubelet(FakeKubelet):
    ips: dict[str, str] = field(default_factory=dict)
    # A random /16 of 127/8 per kubelet: tests running at the same time do not meet.
    _net: int = field(default_factory=lambda: random.randint(1, 254))
    _next: itertools.count = field(default_factory=itertools.count)

    def pod_ip(self, name: str) -> str:
        if name not in self.ips:
            n = next(self._next)
            self.ips[name] = f"127.{self._net}.{n // 250}.{n % 250 + 1}"
        return self.ips[name]
