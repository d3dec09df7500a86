"""The network lab's tests need root, `ip`, `iptables` and /dev/net/tun (CI has all four); where
one is missing every case says so and is skipped — nothing is faked on loopback instead."""
from __future__ import annotations

import pytest

from tests.netlab.lab import unavailable

REASON = unavailable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REASON is None:
        return
    for item in items:
        if "tests/netlab/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.skip(reason=REASON))
