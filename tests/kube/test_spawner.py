"""The kubernetes spawner (gateway side) against the fake API server, with the controller
in-process (--controller) or as another replica."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import Config
from gateway.kube import objects
from gateway.spawners.base import Phase, SessionRequest, SpawnerError
from gateway.spawners.kubernetes import KubernetesSpawner, to_session
from tests.kube.conftest import NAMESPACE, TOKEN_KEY, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet

CONFIG = Config(spawner="kubernetes", namespace=NAMESPACE, controller=True,
                idle_check_interval=0.5, agent_token_key=TOKEN_KEY)
PLAIN = Config(spawner="kubernetes", namespace=NAMESPACE, agent_token_key=TOKEN_KEY)


@pytest.fixture
async def spawners(kubeconfig: Path):
    started: list[KubernetesSpawner] = []

    async def start(config: Config = CONFIG) -> KubernetesSpawner:
        spawner = KubernetesSpawner(config)
        await spawner.start()
        started.append(spawner)
        return spawner

    yield start
    for spawner in started:
        await spawner.close()


async def test_create_run_route_delete(api: FakeKube, kubelet: FakeKubelet, spawners) -> None:
    spawner = await spawners()
    async with spawner.subscribe() as events:
        session = await spawner.create(SessionRequest(user="Zoë", application="gimp",
                                                      resources={"cpu": "1"}, timeout=600,
                                                      tier="pro"))
        assert session.phase is Phase.PENDING and spawner.get(session.id) is not None
        assert spawner.route(session.id) is None  # not running yet
        await eventually(lambda: (s := spawner.get(session.id)) and s.phase is Phase.RUNNING)
        route = spawner.route(session.id)
        secret = api.get("secrets", NAMESPACE, f"{session.id}-agent")
        assert route.url == "http://127.0.0.1:6901"
        assert route.token == base64.b64decode(secret["data"]["token"]).decode()
        running = spawner.get(session.id)
        assert (running.user, running.tier, running.worker, running.node_type) == (
            "Zoë", "pro", session.id, "cpu")
        assert [s.id for s in spawner.list("Zoë")] == [session.id]
        await spawner.delete(session.id)
        assert spawner.get(session.id).phase is Phase.TERMINATING
        kinds = []
        async for event in events:
            kinds.append((event.type, event.session.phase))
            if event.type == "deleted":
                break
    assert kinds[0] == ("added", Phase.PENDING)
    assert ("modified", Phase.RUNNING) in kinds and ("modified", Phase.TERMINATING) in kinds
    assert spawner.get(session.id) is None and api.objects("pods", NAMESPACE) == []
    await spawner.delete(session.id)  # idempotent


async def test_restarted_and_parallel_gateways_route_every_session(
        api: FakeKube, kubelet: FakeKubelet, spawners) -> None:
    first = await spawners()
    ids = [(await first.create(SessionRequest(user=f"u{i}", application="inkscape"))).id
           for i in range(5)]
    await eventually(lambda: all(first.route(i) for i in ids))
    await first.close()  # the gateway goes away; its sessions stay
    second, third = await spawners(PLAIN), await spawners(PLAIN)  # replicas, no controller
    for spawner in (second, third):
        assert {s.id for s in spawner.list()} == set(ids)
        assert all(spawner.route(i) == first.route(i) for i in ids)


async def test_bad_requests_change_nothing(api: FakeKube, spawners) -> None:
    spawner = await spawners(PLAIN)
    with pytest.raises(ValueError, match="whole number of GPUs"):
        await spawner.create(SessionRequest(user="u", application="blender",
                                            resources={"gpu": "0.5"}))
    with pytest.raises(ValueError, match="quantity"):
        await spawner.create(SessionRequest(user="u", application="gimp",
                                            resources={"memory": "lots"}))
    assert api.objects("sessions") == [] and spawner.list() == []


async def test_no_cluster_is_a_spawner_error(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SpawnerError, match="kubeconfig"):
        await KubernetesSpawner(Config(spawner="kubernetes", agent_token_key=TOKEN_KEY)).start()


def test_snapshot_of_a_deleting_session_is_terminating() -> None:
    resource = objects.session_manifest("d1", "u", "gimp")
    resource["metadata"].update(creationTimestamp="2026-01-01T00:00:00Z",
                                deletionTimestamp="2026-01-01T00:10:00Z")
    resource["status"] = {"phase": "running", "endpoint": "http://10.0.0.1:6901"}
    session = to_session(resource, "token")
    assert session.phase is Phase.TERMINATING and session.endpoint is None


async def test_in_process_controller_metrics_reach_the_gateway_registry(
        api: FakeKube, kubelet: FakeKubelet, spawners) -> None:
    spawner = await spawners()
    registry = CollectorRegistry()
    for collector in spawner.collectors():
        registry.register(collector)
    await spawner.create(SessionRequest(user="m", application="blender", resources={"gpu": "1"}))
    await eventually(lambda: b'gimp_controller_sessions{pool="gpu"} 1.0' in
                     generate_latest(registry) and spawner.controller.leading.is_set())
    text = generate_latest(registry).decode()
    assert 'gimp_required_nodes{pool="gpu"} 1.0' in text and "gimp_controller_leader 1.0" in text


async def test_gateway_restart_mid_way_loses_nothing(api: FakeKube, kubelet: FakeKubelet,
                                                     spawners) -> None:
    """The gateway (with its in-process controller) goes away while sessions are starting
    and one is being deleted; the next gateway finishes all of it."""
    first = await spawners()
    ids = [(await first.create(SessionRequest(user=f"r{i}", application="gimp"))).id
           for i in range(6)]
    await first.delete(ids[0])
    await first.close()
    second = await spawners()
    await eventually(lambda: all(second.route(i) for i in ids[1:]))
    await eventually(lambda: second.get(ids[0]) is None)
    assert sorted(p["metadata"]["name"] for p in api.objects("pods", NAMESPACE)) == sorted(
        ids[1:])
