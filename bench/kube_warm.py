"""Benchmark: create -> first decoded frame in Kubernetes mode, from a warm pod vs. cold.

The fake API server and its simulated kubelet run in a child process (as a real API server
and node are elsewhere); the kubelet runs a real session agent per pod, each pod on its own
loopback address. This process runs the gateway (kubernetes spawner, --ephemeral, controller
in-process) and an aiortc viewer. Each run: POST /api/sessions, poll until running, WHEP
through /streaming/{id}/whep, time the first decoded frame; then delete the session and wait
until its pod is gone. Cold: no warm pool (the controller makes the pod, the kubelet starts
Xvfb and the agent). Warm: a pool of one ready pod, refilled between runs.

    python -m bench.kube_warm [--runs 5]

Prints one JSON object."""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.app import create_app  # noqa: E402
from gateway.config import Config  # noqa: E402
from gateway.controller.settings import ControllerSettings  # noqa: E402
from gateway.kube.client import PODS, Kube, connect  # noqa: E402
from gateway.kube.objects import PodSettings  # noqa: E402
from gateway.spawners.kubernetes import KubernetesSpawner  # noqa: E402
from tests.agent_process import free_port  # noqa: E402
from tests.kube.fakeapi import FakeKube  # noqa: E402
from tests.kube.podnet import PodNetKubelet  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402

NAMESPACE = "bench"
TOKEN = "bench-token"
TOKEN_KEY = "bench-agent-token-key-0123456789"


def serve_fake(kubeconfig: str, ready: multiprocessing.synchronize.Event) -> None:
    async def run() -> None:
        api = FakeKube()
        await api.start()
        kubelet = PodNetKubelet(api, agents=True)
        api.kubeconfig(Path(kubeconfig), NAMESPACE)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready.set()
        await stop.wait()
        await kubelet.close()  # its agents are in sessions of their own: stop them
        await api.stop()

    asyncio.run(run())


async def one_run(http: aiohttp.ClientSession, base: str) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    t0 = time.perf_counter()
    async with http.post(f"{base}/api/sessions", json={"application": "gimp"},
                         headers=headers) as r:
        session = await r.json()
        assert r.status == 201, session
    sid = session["id"]
    while session["phase"] == "pending":
        await asyncio.sleep(0.01)
        async with http.get(f"{base}/api/sessions/{sid}", headers=headers) as r:
            session = await r.json()
    assert session["phase"] == "running", session
    viewer = Viewer(base, token=TOKEN)
    try:
        await viewer.connect(f"/streaming/{sid}/whep")
        await viewer.wait_for(lambda frame: True, timeout=60)
        first_frame = time.perf_counter() - t0
    finally:
        await viewer.close()
    async with http.delete(f"{base}/api/sessions/{sid}", headers=headers):
        pass
    while True:
        async with http.get(f"{base}/api/sessions/{sid}", headers=headers) as r:
            if r.status == 404:
                return first_frame
        await asyncio.sleep(0.05)


async def measure(warm: bool, runs: int) -> list[float]:
    config = Config(host="127.0.0.1", port=0, spawner="kubernetes", namespace=NAMESPACE,
                    controller=True, ephemeral=True, token=TOKEN, agent_token_key=TOKEN_KEY,
                    create_limit=0, start_timeout=120, idle_check_interval=5)
    settings = replace(ControllerSettings(), warm_pool={"gimp": 1} if warm else {},
                       identity=f"bench-{'warm' if warm else 'cold'}",
                       pod=replace(PodSettings(), agent_port=free_port()))
    spawner = KubernetesSpawner(config, settings)
    runner = web.AppRunner(create_app(config, spawner), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    times = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(runs):
                if warm:  # a full pool, as between two users of a kiosk
                    while not spawner.controller.warm_pool.ready("gimp"):
                        await asyncio.sleep(0.05)
                times.append(await one_run(http, f"http://127.0.0.1:{port}"))
    finally:
        await runner.cleanup()
    return times


async def main(runs: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        ready = multiprocessing.Event()
        server = multiprocessing.Process(target=serve_fake, args=(str(kubeconfig), ready),
                                         daemon=True)
        server.start()
        try:
            if not await asyncio.to_thread(ready.wait, 60):
                raise SystemExit("the fake API server did not start")
            os.environ["KUBECONFIG"] = str(kubeconfig)
            cold = await measure(False, runs)
            warm = await measure(True, runs)
            admin = Kube(await connect(), NAMESPACE)  # the warm pods left: stop their agents
            for pod in (await admin.list(PODS))["items"]:
                await admin.delete(PODS, pod["metadata"]["name"])
            await admin.close()
        finally:
            server.terminate()
            server.join(60)
    result = {
        "benchmark": "kube_warm", "runs": runs, "application": "gimp",
        "cold_first_frame_s": {"median": round(statistics.median(cold), 3),
                               "max": round(max(cold), 3)},
        "warm_first_frame_s": {"median": round(statistics.median(warm), 3),
                               "max": round(max(warm), 3)},
        "note": "fake API server + simulated kubelet running real agents (640x480, no app); "
                "gateway with --ephemeral and its controller in-process; aiortc viewer via "
                "the gateway's WHEP proxy",
    }
    result["warm_over_cold"] = round(result["warm_first_frame_s"]["median"] /
                                     result["cold_first_frame_s"]["median"], 3)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.runs))))
