"""A simulated scheduler + kubelet for the fake API server.

It binds each new pod to a node whose labels satisfy its nodeSelector (else reports it
Unschedulable), waits for the Secrets its volumes name (as a kubelet does), reports image
failures for images listed in `broken_images`, runs a real session agent when `agents` is on,
and on deletion stops the agent (SIGTERM, like a pod's graceful stop) before the pod goes."""
from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.agent_process import wait_healthy
from tests.kube.fakeapi import FakeKube

NODES = {"cpu-node-1": {"streaming.platform/pool": "cpu"},
         "gpu-node-1": {"streaming.platform/pool": "gpu"}}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_display() -> int:
    while True:
        number = random.randint(300, 5000)
        if not Path(f"/tmp/.X{number}-lock").exists() and \
                not Path(f"/tmp/.X11-unix/X{number}").exists():
            return number


@dataclass
class FakeKubelet:
    api: FakeKube
    agents: bool = False  # run a real session agent per pod (its container port, 127.0.0.1)
    broken_images: dict[str, str] = field(default_factory=dict)  # image -> waiting reason
    nodes: dict[str, dict[str, str]] = field(default_factory=lambda: dict(NODES))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)  # pods whose agent got a graceful stop
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _stopping: set[str] = field(default_factory=set)  # uids of pods given their graceful stop

    def __post_init__(self) -> None:
        self.api.pod_listeners.append(self._on_pod)

    def _on_pod(self, event: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if event == "ADDED" and not pod["spec"].get("nodeName"):
            self._spawn(self._run(meta["namespace"], meta["name"]))
        elif event == "MODIFIED" and meta.get("deletionTimestamp") and \
                pod["spec"].get("nodeName") and meta["uid"] not in self._stopping:
            self._stopping.add(meta["uid"])  # by uid: a later pod may reuse the name
            self.stopped.append(meta["name"])
            self._spawn(self._stop(meta["namespace"], meta["name"]))

    def pod_ip(self, name: str) -> str:
        """The pod's IP: all pods share 127.0.0.1 (so one agent at a time per port);
        tests/kube/podnet.py gives each its own loopback address."""
        return "127.0.0.1"

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, ns: str, name: str) -> None:
        pod = self.api.get("pods", ns, name)
        if pod is None:
            return
        selector = pod["spec"].get("nodeSelector") or {}
        node = next((n for n, labels in self.nodes.items()
                     if all(labels.get(k) == v for k, v in selector.items())), None)
        if node is None:
            self.api.set_status("pods", ns, name, {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": f"0/{len(self.nodes)} nodes are available: node(s) didn't match "
                            f"Pod's node affinity/selector"}]})
            return
        self.api.set_status("pods", ns, name, {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"}]}, spec_patch={"nodeName": node})
        secret_names = [v["secret"]["secretName"] for v in pod["spec"].get("volumes", [])
                        if "secret" in v and not v["secret"].get("optional")]
        while any(self.api.get("secrets", ns, s) is None for s in secret_names):
            await asyncio.sleep(0.02)
            if self.api.get("pods", ns, name) is None:
                return
        container = pod["spec"]["containers"][0]
        reason = self.broken_images.get(container["image"])
        if reason:
            self.api.set_status("pods", ns, name, {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": container["name"], "ready": False,
                                       "restartCount": 0, "image": container["image"],
                                       "imageID": "", "state": {"waiting": {
                                           "reason": reason, "message": "simulated"}}}]})
            return
        if self.agents:
            await self._start_agent(ns, name, pod)
        current = self.api.get("pods", ns, name)
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        self.api.set_status("pods", ns, name, {
            "phase": "Running", "podIP": self.pod_ip(name), "hostIP": "127.0.0.1",
            "startTime": now(),
            "conditions": [{"type": "PodScheduled", "status": "True"},
                           {"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                   "image": container["image"], "imageID": "",
                                   "state": {"running": {"startedAt": now()}}}]})

    async def _start_agent(self, ns: str, name: str, pod: dict[str, Any]) -> None:
        container = pod["spec"]["containers"][0]
        port = container["ports"][0]["containerPort"]
        secret = next(v["secret"]["secretName"] for v in pod["spec"]["volumes"]
                      if v["name"] == "agent-token")
        token = base64.b64decode(self.api.get("secrets", ns, secret)["data"]["token"]).decode()
        proc = subprocess.Popen(
            [sys.executable, "-m", "session_agent", "--xvfb", "--display",
             f":{free_display()}", "--host", self.pod_ip(name), "--port", str(port),
             "--size", "640x480"],
            env={**os.environ, "AGENT_TOKEN": token}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        self.processes[name] = proc
        if not await wait_healthy(f"http://{self.pod_ip(name)}:{port}", timeout=60, proc=proc):
            raise RuntimeError(f"agent exited: {proc.stderr.read().decode()[-2000:]}")

    async def _stop(self, ns: str, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is not None:
            await asyncio.to_thread(stop_process, proc)
        self.api.finish_delete("pods", ns, name)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for proc in self.processes.values():
            stop_process(proc)
        self.processes.clear()


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
