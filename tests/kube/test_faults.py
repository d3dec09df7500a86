"""Faults: API 500s, dropped watches, expired watch versions, controller restarts mid-way.
Each ends converged: every Session running with exactly one pod, nothing lost or doubled."""
from __future__ import annotations

import asyncio

from gateway.kube import objects
from gateway.kube.client import SESSIONS, Kube
from tests.kube.conftest import NAMESPACE, eventually
from tests.kube.fakeapi import FakeKube
from tests.kube.kubelet import FakeKubelet

COUNT = 12
SEED = 20261203


def converged(api: FakeKube, names: list[str]) -> bool:
    sessions = {s["metadata"]["name"]: s for s in api.objects("sessions", NAMESPACE)}
    return all(((sessions.get(n) or {}).get("status") or {}).get("phase") == "running"
               for n in names)


def assert_one_pod_each(api: FakeKube, names: list[str]) -> None:
    pods = sorted(p["metadata"]["labels"]["session"] for p in api.objects("pods", NAMESPACE))
    assert pods == sorted(names)
    secrets = sorted(s["metadata"]["name"] for s in api.objects("secrets", NAMESPACE))
    assert secrets == sorted(f"{n}-agent" for n in names)


async def create_all(kube: Kube, prefix: str) -> list[str]:
    names = [f"{prefix}-{i}" for i in range(COUNT)]
    for i, name in enumerate(names):
        await kube.create(SESSIONS, objects.session_manifest(name, f"user-{i % 4}",
                                                             objects.APPLICATIONS[i % 3]))
    return names


async def test_injected_server_errors(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                      controllers) -> None:
    api.fail_next(8, "POST", "/pods")
    api.fail_next(5, "PATCH", "/status")
    api.fail_next(2, "POST", "/persistentvolumeclaims")
    api.fail_next(3, "GET", "watch=True")
    api.fail_next(2, "PUT", "/leases")
    await controllers()
    names = await create_all(kube, "err")
    await eventually(lambda: all(f.remaining == 0 for f in api.faults))  # every fault hit
    await eventually(lambda: converged(api, names))
    assert_one_pod_each(api, names)


async def test_dropped_and_expired_watches(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                           controllers) -> None:
    controller = await controllers()
    await controller.leading.wait()
    names = []
    for round_ in range(3):
        names += await create_all(kube, f"drop{round_}")
        api.drop_watches()
        if round_ == 1:
            api.compact()  # the next watch from an old version gets 410 Gone: relist
        await asyncio.sleep(0.05)
    await eventually(lambda: converged(api, names))
    assert_one_pod_each(api, names)
    # A change made while no watch is open is still seen after the resume or relist.
    api.drop_watches()
    await kube.delete(SESSIONS, names[0])
    await eventually(lambda: api.get("sessions", NAMESPACE, names[0]) is None)


async def test_controller_restart_mid_way(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                          controllers) -> None:
    first = await controllers()
    names = await create_all(kube, "restart")
    await eventually(lambda: any(p.get("status") for p in api.objects("pods", NAMESPACE)))
    await first.stop()  # mid-way: some sessions running, some not yet started
    deleted = names[:2]
    for name in deleted:
        await kube.delete(SESSIONS, name)  # finalizer held: waits for a controller
    more = [f"late-{i}" for i in range(3)]
    for name in more:
        await kube.create(SESSIONS, objects.session_manifest(name, "late", "gimp")
                          if name == "late-0" else objects.session_manifest(
                              name, f"late-{name}", "inkscape"))
    await controllers()
    remaining = [n for n in names if n not in deleted] + more
    await eventually(lambda: converged(api, remaining))
    await eventually(lambda: all(api.get("sessions", NAMESPACE, n) is None for n in deleted))
    assert_one_pod_each(api, remaining)


async def test_crashed_leader_is_replaced(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                          controllers) -> None:
    """A leader that dies without releasing its Lease is replaced once the Lease expires."""
    first = await controllers()
    await first.leading.wait()
    second = await controllers()
    first._task.cancel()  # a crash: no release, the Lease stays until it expires
    await asyncio.gather(first._task, return_exceptions=True)
    names = await create_all(kube, "crash")
    await eventually(lambda: second.leading.is_set())
    await eventually(lambda: converged(api, names))
    assert_one_pod_each(api, names)



async def test_unreliable_api_converges(api: FakeKube, kubelet: FakeKubelet, kube: Kube,
                                        controllers) -> None:
    """A seeded fraction of every mutating request fails (500/503/429, resets, before or after
    the write), answers come late, watches stall or lag: everything still converges, once."""
    await controllers(watch_idle_timeout=0.5)
    names = await create_all(kube, "chaos")  # the test's own writes: before the chaos
    api.unreliable(seed=SEED, error_rate=0.1, reset_rate=0.05, slow_rate=0.05, slow_s=0.3,
                   retry_after=0, watch_stall_rate=0.2, watch_delay_s=0.02)
    api.drop_watches()
    await eventually(lambda: converged(api, names))
    await eventually(lambda: len(api.objects("pods", NAMESPACE)) == COUNT)
    api.unreliable()
    assert_one_pod_each(api, names)
    faults = [fault.split()[0] for _, _, fault in api.injected]
    assert len(faults) >= 5 and {"500", "503", "429"} & set(faults)  # it was unreliable
