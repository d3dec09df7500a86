from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.controller.service import Controller
from gateway.controller.settings import ControllerSettings
from gateway.kube.client import Kube, connect
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet

NAMESPACE = "sessions"
TOKEN_KEY = "test-agent-token-key-0123456789"  # the gimp-agent-token-key Secret of the tests
# Short periods so that leadership and retries happen within a test; never asserted on.
FAST = ControllerSettings(namespace=NAMESPACE, workers=4, lease_duration=2, renew_interval=0.3,
                          retry_interval=0.2, idle_check_interval=0.5, start_timeout=120,
                          agent_token_key=TOKEN_KEY)


@pytest.fixture
async def api() -> AsyncIterator[FakeKube]:
    server = FakeKube()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def kubelet(api: FakeKube) -> AsyncIterator[FakeKubelet]:
    node = FakeKubelet(api)
    yield node
    await node.close()


@pytest.fixture
def kubeconfig(api: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The standard loading path: KUBECONFIG names a file that points at the fake."""
    path = api.kubeconfig(tmp_path / "kubeconfig", NAMESPACE)
    monkeypatch.setenv("KUBECONFIG", str(path))
    for var in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(var, raising=False)
    return path


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    client = Kube(await connect(), NAMESPACE)
    yield client
    await client.close()


@pytest.fixture
async def controllers(kubeconfig: Path) -> AsyncIterator[Callable[..., Awaitable[Controller]]]:
    """Start controllers (each with its own client, like separate replicas)."""
    running: list[tuple[Controller, Kube]] = []

    async def start(**overrides: Any) -> Controller:
        client = Kube(await connect(), NAMESPACE)
        controller = Controller(client, replace(FAST, identity=f"replica-{len(running)}",
                                                **overrides))
        await controller.start()
        running.append((controller, client))
        return controller

    yield start
    for controller, client in running:
        await controller.stop()
        await client.close()


async def eventually(check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll until `check()` is truthy (generous timeout; never a timing assertion)."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if result:
                return result
            await asyncio.sleep(0.02)
