"""The simulated kubelet of tests/kube, plus what the fault tests need from a node:

- the pod's container runs a real agent *with an application* (`--launch`), with HOME on the
  pod's user volume: a directory per PersistentVolumeClaim under `volumes` (the PVC's data);
- the container is watched: when its agent dies (kill -9, display or application gone) the
  kubelet does what `restartPolicy: Always` does: the first time it restarts the container at
  once (restartCount + 1, not Ready meanwhile); a container that dies again (as if within
  the back-off window) is left `waiting: CrashLoopBackOff`."""
from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.agent_process import wait_healthy
from tests.kube.kubelet import FakeKubelet, free_display, now

APP = "sleep 3600"


@dataclass
class RestartingKubelet(FakeKubelet):
    volumes: Path = Path("/nonexistent")
    app: str = APP  # the application each pod's agent launches (--launch)
    restarts: dict[str, int] = field(default_factory=dict)
    displays: dict[str, str] = field(default_factory=dict)  # pod -> display of its agent
    exits: list[tuple[str, int]] = field(default_factory=list)  # (pod, exit code) of deaths

    def volume_dir(self, pod: dict[str, Any]) -> Path | None:
        claim = next((v["persistentVolumeClaim"]["claimName"] for v in pod["spec"].get("volumes", [])
                      if "persistentVolumeClaim" in v), None)
        if claim is None:
            return None
        path = self.volumes / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def _run(self, ns: str, name: str) -> None:
        await super()._run(ns, name)
        pod = self.api.get("pods", ns, name)
        if pod is not None and self.restarts.get(name) and name in self.processes \
                and not pod["metadata"].get("deletionTimestamp"):
            # restarted while starting: Ready, with the restart counted
            self.api.set_status("pods", ns, name, self._status(
                pod, ready=True, state={"running": {"startedAt": now()}}))

    async def _start_agent(self, ns: str, name: str, pod: dict[str, Any]) -> None:
        """Run the container until its agent is healthy; one that dies while starting is
        restarted once, then left in CrashLoopBackOff (and the pod is never Ready)."""
        while True:
            proc = await self._run_container(ns, name, pod)
            if proc.poll() is None:
                self._spawn(self._watch(ns, name, proc))
                return
            if not self._restart(ns, name, proc.returncode):
                raise asyncio.CancelledError  # ends the kubelet's _run: the pod stays not Ready

    async def _run_container(self, ns: str, name: str, pod: dict[str, Any]) -> subprocess.Popen:
        container = pod["spec"]["containers"][0]
        port = container["ports"][0]["containerPort"]
        secret = next(v["secret"]["secretName"] for v in pod["spec"]["volumes"]
                      if v["name"] == "agent-token")
        token = base64.b64decode(self.api.get("secrets", ns, secret)["data"]["token"]).decode()
        home = self.volume_dir(pod) or self.volumes / "emptydir" / name
        home.mkdir(parents=True, exist_ok=True)
        display = f":{free_display()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "session_agent", "--xvfb", "--display", display,
             "--host", "127.0.0.1", "--port", str(port), "--size", "640x480", "--launch", self.app],
            env={**os.environ, "AGENT_TOKEN": token, "HOME": str(home)}, cwd=home,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = proc
        self.displays[name] = display
        await wait_healthy(f"http://127.0.0.1:{port}", timeout=60, proc=proc)
        return proc

    def _restart(self, ns: str, name: str, code: int) -> bool:
        """Record a dead container: True if it is to be restarted, False (CrashLoopBackOff)."""
        pod = self.api.get("pods", ns, name)
        if pod is None or name in self.stopped:
            return False
        self.exits.append((name, code))
        self.processes.pop(name, None)
        if self.restarts.get(name, 0) >= 1:
            self.api.set_status("pods", ns, name, self._status(pod, ready=False, state={
                "waiting": {"reason": "CrashLoopBackOff",
                            "message": f"back-off restarting failed container (exit code {code})"}}))
            return False
        self.api.set_status("pods", ns, name, self._status(pod, ready=False, state={
            "terminated": {"exitCode": code, "reason": "Error", "finishedAt": now()}}))
        self.restarts[name] = self.restarts.get(name, 0) + 1
        return True

    def _status(self, pod: dict[str, Any], *, ready: bool, state: dict[str, Any]) -> dict[str, Any]:
        container = pod["spec"]["containers"][0]
        return {"phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
                "startTime": (pod.get("status") or {}).get("startTime") or now(),
                "conditions": [{"type": "PodScheduled", "status": "True"},
                               {"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [{"name": container["name"], "ready": ready,
                                       "restartCount": self.restarts.get(pod["metadata"]["name"], 0),
                                       "image": container["image"], "imageID": "", "state": state}]}

    async def _watch(self, ns: str, name: str, proc: subprocess.Popen) -> None:
        code = await asyncio.to_thread(proc.wait)
        if self.processes.get(name) is not proc or not self._restart(ns, name, code):
            return  # a graceful stop (the pod is going), or CrashLoopBackOff
        pod = self.api.get("pods", ns, name)
        await self._start_agent(ns, name, pod)
        pod = self.api.get("pods", ns, name)
        if pod is not None and not pod["metadata"].get("deletionTimestamp") and name in self.processes:
            self.api.set_status("pods", ns, name, self._status(
                pod, ready=True, state={"running": {"startedAt": now()}}))
