"""Benchmark: 1,000 Sessions created on the fake API server -> every pod Running and every
Session `running`, through the real client, controller and simulated kubelet; then the
gateway's route lookup at 10 and at 1,000 sessions (it must not grow with the count).

The fake API server and its kubelet run in a child process, as a real API server is
another process; the controller, the gateway's spawner and the creating client share this
one.

    python bench/kube_reconcile.py [--sessions 1000] [--workers 32]

Prints one JSON object."""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import Config  # noqa: E402
from gateway.controller.service import Controller  # noqa: E402
from gateway.controller.settings import ControllerSettings  # noqa: E402
from gateway.kube import objects  # noqa: E402
from gateway.kube.client import PODS, SESSIONS, Kube, connect  # noqa: E402
from gateway.spawners.kubernetes import KubernetesSpawner  # noqa: E402
from tests.kube.fakeapi import FakeKube  # noqa: E402
from tests.kube.kubelet import FakeKubelet  # noqa: E402

NAMESPACE = "bench"
TOKEN_KEY = "bench-agent-token-key-0123456789"


def route_ns(spawner: KubernetesSpawner, ids: list[str], rounds: int = 200_000) -> float:
    """Median nanoseconds per route() over 5 runs."""
    runs = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for i in range(rounds):
            spawner.route(ids[i % len(ids)])
        runs.append((time.perf_counter_ns() - start) / rounds)
    return statistics.median(runs)


def serve_fake(kubeconfig: str, history: int, ready: multiprocessing.synchronize.Event) -> None:
    async def run() -> None:
        api = FakeKube(history=history)
        await api.start()
        FakeKubelet(api)
        api.kubeconfig(Path(kubeconfig), NAMESPACE)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(run())


async def main(count: int, workers: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=serve_fake, args=(str(kubeconfig), count * 20,
                                                                  ready), daemon=True)
        server.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise SystemExit("the fake API server did not start")
        os.environ["KUBECONFIG"] = str(kubeconfig)
        client = Kube(await connect(), NAMESPACE)
        controller = Controller(client, replace(ControllerSettings(namespace=NAMESPACE),
                                                workers=workers, identity="bench",
                                                agent_token_key=TOKEN_KEY))
        await controller.start()
        spawner = KubernetesSpawner(Config(spawner="kubernetes", namespace=NAMESPACE,
                                           agent_token_key=TOKEN_KEY))
        await spawner.start()
        creator = Kube(await connect(), NAMESPACE)
        await controller.leading.wait()
        manifests = [objects.session_manifest(f"bench-{i:05d}", f"user-{i // 3}",
                                              objects.APPLICATIONS[i % 3]) for i in range(count)]
        gate = asyncio.Semaphore(64)

        async def create(body: dict) -> None:
            async with gate:
                await creator.create(SESSIONS, body)

        started = time.perf_counter()
        await asyncio.gather(*(create(m) for m in manifests))
        created = time.perf_counter() - started
        while sum(1 for s in controller.sessions.store.values()
                  if (s.get("status") or {}).get("phase") == "running") < count:
            await asyncio.sleep(0.01)
        all_running = time.perf_counter() - started
        while sum(1 for s in spawner.list() if s.endpoint and s.agent_token) < count:
            await asyncio.sleep(0.01)
        routable = time.perf_counter() - started
        pods = await creator.list(PODS, "app=gimp-session")
        pods_running = sum(1 for p in pods["items"] if p["status"].get("phase") == "Running")
        ids = [m["metadata"]["name"] for m in manifests]
        result = {
            "sessions": count, "controller_workers": workers,
            "create_requests_s": round(created, 2),
            "all_running_s": round(all_running, 2),
            "all_routable_in_gateway_s": round(routable, 2),
            "pods_running": pods_running, "target_s": 10, "within_target": all_running <= 10,
            "route_lookup_ns_at_10": round(route_ns(spawner, ids[:10]), 1),
            "route_lookup_ns_at_1000": round(route_ns(spawner, ids), 1),
        }
        result["route_lookup_1000_over_10"] = round(result["route_lookup_ns_at_1000"] / result["route_lookup_ns_at_10"], 3)
        await spawner.close()
        await controller.stop()
        await client.close()
        await creator.close()
        server.terminate()
        server.join()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.sessions, args.workers))))
