"""The network lab's tests need root, `ip`, `iptables` and network namespaces (CI has them);
the impairment cases also need /dev/net/tun for the relay. Where one is missing the case says
so and is skipped — nothing is faked on loopback instead. Mark a test `@pytest.mark.relay` when
it impairs the path."""
from __future__ import annotations

import pytest

from tests.netlab.lab import unavailable

REASON = unavailable()
RELAY_REASON = REASON or unavailable(relay=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "relay: the test delays, drops or rate-limits packets (needs /dev/net/tun)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/netlab/" not in str(item.fspath).replace("\\", "/"):
            continue
        reason = RELAY_REASON if item.get_closest_marker("relay") else REASON
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
