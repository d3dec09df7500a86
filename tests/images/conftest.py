"""The images, built once per test run through the build command (scripts/build-images), and
session pods run from them as a kubelet would (tests/images/kubelet.py).

Nothing here is skipped: without podman, buildah, debootstrap, bubblewrap or root the tests
fail and say what is missing (scripts/setup installs them all)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.kube import objects
from tests.agent_process import free_port
from tests.images.kubelet import Container, PodRunner

ROOT = Path(__file__).resolve().parents[2]

TARGETS = ("gateway", "session-gimp", "session-inkscape")
TOOLS = ("podman", "buildah", "debootstrap", "bwrap", "nsenter", "setsid")
BUILD_TIMEOUT_S = 2400  # a cold build on a fresh machine: base, three apt layers, pip
SESSION_SIZE = "1280x720"  # not the default: the pod's setting must be what streams
MAX_SIZE = "1920x1080"


@pytest.fixture(scope="session")
def built_images() -> dict[str, dict]:
    """target -> the build command's summary (tag, size_bytes, build_s), built once."""
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: scripts/setup installs podman, buildah, "
                    f"debootstrap, bubblewrap and util-linux from Debian")
    if os.geteuid() != 0:
        pytest.fail("the image tests build and run images with podman/buildah as root "
                    "(CI runs as root; run scripts/test with sudo)")
    started = time.monotonic()
    result = subprocess.run([str(ROOT / "scripts" / "build-images"), *TARGETS],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        pytest.fail(f"scripts/build-images failed ({result.returncode}):\n{result.stderr[-6000:]}")
    summaries: dict[str, dict] = {}
    for line in result.stdout.splitlines():
        if line.strip():
            summary = json.loads(line)
            summaries[summary["target"]] = summary
    assert set(summaries) == set(TARGETS), result.stdout
    summaries["_wall_s"] = {"build_s": round(time.monotonic() - started, 1)}
    return summaries


@dataclass
class SessionPod:
    """One session pod of objects.session_pod(), running: its `session` and `app` containers."""

    application: str
    runner: PodRunner
    port: int
    token: str
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def session(self) -> Container:
        return self.runner.containers["session"]

    @property
    def app(self) -> Container:
        return self.runner.containers["app"]

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{c.logs()[-4000:]}" for name, c in self.runner.containers.items())


def session_manifest(application: str, port: int, pod_name: str) -> dict:
    """The pod exactly as the controller makes it (its default image: what the build tags), with
    a free agent port (this machine's network namespace stands in for the pod's)."""
    settings = objects.PodSettings(agent_port=port, session_size=SESSION_SIZE, max_size=MAX_SIZE)
    return objects.session_pod(pod_name=pod_name, application=application, settings=settings,
                               user_id="alice@example.org", owner=None)


def start_pod(application: str, workdir: Path, *, wait: bool = True,
              only: str | None = None) -> SessionPod:
    port = free_port()
    pod_name = f"images-{application}-{secrets.token_hex(3)}"
    manifest = session_manifest(application, port, pod_name)
    token = secrets.token_urlsafe(24)
    home = workdir / "home"
    runner = PodRunner(manifest, workdir,
                       secrets={objects.agent_secret_name(pod_name): {objects.AGENT_TOKEN_KEY: token}},
                       claims={objects.pvc_name("alice@example.org"): home})
    runner.prepare_volumes()
    for container in manifest["spec"]["containers"]:  # the kubelet starts them in order
        if only in (None, container["name"]):
            runner.start(container["name"])
    pod = SessionPod(application, runner, port, token, home)
    if wait:
        wait_ready(pod)
    return pod


def wait_ready(pod: SessionPod, timeout: float = 120) -> None:
    """The startup probe: /health 200 (1 s period, 120 failures allowed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pod.session.proc.poll() is not None:
            pytest.fail(f"the session container exited {pod.session.proc.returncode}:\n{pod.logs()}")
        try:
            if pod.health()[0] == 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"/health not 200 within {timeout}s:\n{pod.logs()}")


@pytest.fixture(scope="module", params=["gimp", "inkscape"])
def session_pod(request: pytest.FixtureRequest, built_images: dict,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionPod]:
    pod = start_pod(request.param, tmp_path_factory.mktemp(f"pod-{request.param}"))
    try:
        yield pod
    finally:
        pod.runner.stop(grace=30)
        pod.runner.close()
