"""The session pod's cloud-sync sidecar script (objects.session_pod's `rclone-sync` container),
run for real with Debian's rclone against a local remote: it pulls at start, and what the
application wrote just before the pod was deleted reaches the remote on SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from gateway.kube import objects


def sidecar() -> dict:
    pod = objects.session_pod(pod_name="s1", application="gimp", settings=objects.PodSettings(),
                              user_id="alice", owner=None, cloud_storage=True)
    return next(c for c in pod["spec"]["initContainers"] if c["name"] == "rclone-sync")


def run(tmp_path: Path, config: str | None) -> tuple[subprocess.Popen, Path, Path]:
    container = sidecar()
    local, remote = tmp_path / "cloud", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    (remote / "from-the-cloud.txt").write_text("pulled at start")
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(DIR=str(local), RCLONE_CONFIG=str(tmp_path / "rclone.conf"), HOME=str(tmp_path),
               PATH=os.environ["PATH"])
    if config is not None:
        (tmp_path / "rclone.conf").write_text(config.format(remote=remote))
    proc = subprocess.Popen(container["command"], env=env, stderr=subprocess.PIPE, text=True)
    return proc, local, remote


def test_the_last_write_reaches_the_remote_on_sigterm(tmp_path: Path) -> None:
    # "cloud:" as the user's rclone config names it, here an alias of a local directory
    proc, local, remote = run(tmp_path, "[cloud]\ntype = alias\nremote = {remote}\n")
    deadline = time.monotonic() + 30
    while not (local / "from-the-cloud.txt").exists():  # the pull at start
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    (local / "drawing.png").write_bytes(b"\x89PNG written just before the pod went")
    proc.send_signal(signal.SIGTERM)  # the kubelet stops the sidecar last (a native sidecar)
    assert proc.wait(60) == 0, proc.stderr.read()
    assert (remote / "drawing.png").read_bytes() == b"\x89PNG written just before the pod went"


def test_without_a_config_it_idles_and_stops_at_once(tmp_path: Path) -> None:
    proc, local, remote = run(tmp_path, None)
    time.sleep(0.5)
    assert proc.poll() is None  # no cloud storage configured: it waits, and pulls nothing
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not any(local.iterdir())
