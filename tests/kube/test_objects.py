"""Pure builder tests: every manifest the code makes, without a cluster. Built-in kinds are
checked against the official strict schemas, Sessions against the CRD's."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.identity import user_hash
from gateway.kube import objects
from gateway.kube.objects import ManifestError, Placement, PodSettings
from tests.kube.fakeapi import CRD_PATH, KINDS, strict_validator
from tests.kube.restricted import violations

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KIND = {k.kind: k for k in KINDS}
SESSION = {"apiVersion": objects.API_VERSION, "kind": objects.KIND,
           "metadata": {"name": "s1", "uid": "0b9c8a5e-0000-4000-8000-000000000001"},
           "spec": {"userId": "alice", "application": "gimp"}}


def assert_valid(manifest: dict) -> None:
    errors = list(strict_validator(KIND[manifest["kind"]]).iter_errors(manifest))
    assert not errors, [e.message for e in errors]


def session_schema() -> dict:
    crd = yaml.safe_load(CRD_PATH.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@given(st.text(min_size=1, max_size=300))
def test_user_label_is_always_a_dns_label(user_id: str) -> None:
    label = objects.user_label(user_id)
    assert DNS_LABEL.match(label) and len(label) <= 63
    assert objects.user_label(user_id) == label
    assert len(objects.pvc_name(user_id)) <= 253


def test_user_labels_do_not_collide() -> None:
    # The review's pairs: a valid DNS label that is exactly what another id escaped to, and
    # two spellings that differ in letter case only (they shared a 32-bit suffix).
    assert objects.user_label("alice-x-org-1facc80f") != objects.user_label("alice@x.org")
    assert objects.user_label("AlIcE.smIth@EXAmple.org") != objects.user_label("ALice.sMiTh@eXAMPle.org")
    assert objects.user_label("alice").startswith("alice-")
    assert objects.user_label("Alice") != objects.user_label("alice")
    assert objects.user_label("a.b") != objects.user_label("a-b")
    with pytest.raises(ManifestError):
        objects.user_label("")


@pytest.mark.parametrize("kwargs", [
    {},
    {"resources": {"cpu": "2", "memory": "4Gi", "gpu": "1"}, "timeout": 60, "tier": "pro"},
    {"storage": {"size": "50Gi", "class": "fast"}, "ephemeral": True},
])
def test_session_manifest_matches_the_crd(kwargs: dict) -> None:
    manifest = objects.session_manifest("s1", "Zoë@example.org", "blender", **kwargs)
    jsonschema.validate(manifest, session_schema())
    labels = manifest["metadata"]["labels"]
    assert labels["app"] == "gimp-session" and labels["application"] == "blender"
    assert DNS_LABEL.match(labels["user"])
    assert manifest["metadata"]["annotations"][objects.USER_ID_ANNOTATION] == "Zoë@example.org"
    assert manifest["metadata"]["finalizers"] == [objects.FINALIZER]


@pytest.mark.parametrize("name, app, kwargs, message", [
    ("Bad_Name", "gimp", {}, "DNS-1123"),
    ("s1", "word", {}, "application"),
    ("s1", "gimp", {"resources": {"gpu": "0.25"}}, "whole number"),
    ("s1", "gimp", {"resources": {"cpu": "lots"}}, "quantity"),
    ("s1", "gimp", {"resources": {"disk": "1"}}, "unknown"),
    ("s1", "gimp", {"timeout": -1}, "timeout"),
])
def test_session_manifest_rejects_bad_input(name: str, app: str, kwargs: dict,
                                            message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        objects.session_manifest(name, "u", app, **kwargs)


def pod(**kwargs) -> dict:
    base = {"pod_name": "s1", "application": "gimp", "settings": PodSettings(),
            "user_id": "alice", "owner": SESSION}
    return objects.session_pod(**{**base, **kwargs})


@pytest.mark.parametrize("variant", [
    {}, {"resources": {"gpu": "2"}}, {"cloud_storage": True},
    {"user_id": None, "owner": None, "pod_name": "warm-gimp-1"},
])
def test_session_pod_is_valid_and_restricted(variant: dict) -> None:
    manifest = pod(**variant)
    assert_valid(manifest)
    assert violations(manifest["spec"]) == []
    spec = manifest["spec"]
    assert spec["securityContext"].items() >= {"runAsNonRoot": True, "runAsUser": 1000,
                                               "runAsGroup": 1000, "fsGroup": 1000}.items()
    session, app = spec["containers"]  # the kubelets of tests/ run containers[0]: the session
    assert (session["name"], app["name"]) == ("session", "app")
    assert session["image"] == app["image"]
    assert (session["args"], app["args"]) == (["session"], ["app"])
    env = {e["name"]: e for e in session["env"]}
    assert env["DISPLAY"]["value"] == ":99" and "USER_ID" in env
    assert "AGENT_TOKEN" not in env  # the token is a mounted Secret, never a plain value
    assert session["readinessProbe"]["httpGet"] == {"path": "/health", "port": "webrtc"}
    assert session["ports"][0]["containerPort"] == 6901
    for container in (session, app):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/home/user"]["name"] == "user-storage"
        assert mounts["/tmp"]["name"] == "temp-storage"
        assert mounts["/tmp/.X11-unix"]["name"] == "x11"
        # what a read-only root leaves writable: the home volume, /tmp, the X directory
        writable = {p for p, m in mounts.items() if not m.get("readOnly")}
        assert writable <= {"/home/user", "/tmp", "/tmp/.X11-unix", "/data/cloud"}
    # The application runs the user's plug-ins: it gets neither the token, nor the agent's
    # port, nor its process namespace.
    assert {m["mountPath"]: m["name"] for m in session["volumeMounts"]}["/var/run/agent"] == \
        "agent-token"
    assert "agent-token" not in {m["name"] for m in app["volumeMounts"]}
    assert not {e["name"] for e in app["env"]} & {"AGENT_TOKEN_FILE", "AGENT_PORT"}
    assert "ports" not in app and not spec.get("shareProcessNamespace")
    subpaths = {c["name"]: {m["subPath"] for m in c["volumeMounts"] if m["mountPath"] == "/tmp"}
                for c in (session, app)}
    assert subpaths == {"session": {"session"}, "app": {"app"}}  # each its own /tmp


def test_session_size_reaches_the_session_container() -> None:
    env = {e["name"]: e["value"] for e in pod(settings=PodSettings(
        session_size="1280x720", max_size="2560x1440"))["spec"]["containers"][0]["env"]
        if "value" in e}
    assert (env["SESSION_SIZE"], env["MAX_SIZE"]) == ("1280x720", "2560x1440")
    defaults = {e["name"]: e.get("value") for e in pod()["spec"]["containers"][0]["env"]}
    # Xvfb's framebuffer is memory every pod pays: by default only the session's size.
    assert (defaults["SESSION_SIZE"], defaults["MAX_SIZE"]) == ("1920x1080", "1920x1080")


def test_pod_template_details() -> None:
    manifest = pod(resources={"cpu": "3", "memory": "6Gi"})
    session, app = manifest["spec"]["containers"]
    # A Session's resources are the application's; the session container's come on top.
    assert app["resources"] == {"requests": {"cpu": "3", "memory": "6Gi"},
                                "limits": {"cpu": "3", "memory": "6Gi"}}
    # The measured footprint (deploy/README.md, "Density"): requests are a still session's.
    assert session["resources"] == {"requests": {"cpu": "50m", "memory": "160Mi"},
                                    "limits": {"cpu": "1", "memory": "512Mi"}}
    defaults = pod()["spec"]["containers"][1]["resources"]
    assert defaults == {"requests": {"cpu": "100m", "memory": "384Mi"},
                        "limits": {"cpu": "2", "memory": "4Gi"}}
    volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
    assert volumes["user-storage"]["persistentVolumeClaim"]["claimName"] == objects.pvc_name("alice")
    assert objects.pvc_name("alice") == f"user-storage-alice-{user_hash('alice')}"
    assert volumes["temp-storage"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert volumes["x11"]["emptyDir"]["medium"] == "Memory"
    assert volumes["agent-token"]["secret"]["secretName"] == "s1-agent"
    assert manifest["metadata"]["ownerReferences"] == [objects.owner_reference(SESSION)]
    assert manifest["metadata"]["labels"]["session"] == "s1"
    assert manifest["spec"]["nodeSelector"] == {"streaming.platform/pool": "cpu"}
    assert "initContainers" not in manifest["spec"]
    image = objects.session_pod(pod_name="x", application="inkscape", user_id="u", owner=None,
                                settings=PodSettings(image="reg/session-{application}:1"))
    assert {c["image"] for c in image["spec"]["containers"]} == {"reg/session-inkscape:1"}
    assert PodSettings().image == (f"ghcr.io/gimp-streaming-platform/session-{{application}}:"
                                   f"{objects.IMAGE_TAG}")


def test_gpu_pod_uses_integer_gpus_and_the_gpu_pool() -> None:
    settings = PodSettings(gpu_pool=Placement({"pool": "t4"}, ({"key": "gpu", "operator":
                                                               "Exists"},)),
                           gpu_runtime_class="nvidia")
    manifest = pod(resources={"gpu": "1"}, settings=settings)
    container, app = manifest["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # NVENC: the agent's
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "nvidia.com/gpu" not in app["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "video" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")
    assert manifest["spec"]["nodeSelector"] == {"pool": "t4"}
    assert manifest["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert manifest["spec"]["runtimeClassName"] == "nvidia"
    with pytest.raises(ManifestError):
        pod(resources={"gpu": "0.5"})


def test_cloud_storage_sidecar_is_unprivileged_and_flushes_last() -> None:
    spec = pod(cloud_storage=True)["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"  # native sidecar: stops after the app
    assert not sidecar["securityContext"].get("privileged")
    assert all("mountPropagation" not in m for m in sidecar["volumeMounts"])
    assert "trap" in sidecar["command"][-1] and "rclone copy" in sidecar["command"][-1]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["rclone-config"]["secret"]["secretName"] == f"rclone-alice-{user_hash('alice')}"
    for container in spec["containers"]:
        assert "/data/cloud" in {m["mountPath"] for m in container["volumeMounts"]}
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize("configured", [False, True])
def test_cloud_storage_sidecar_runs_only_with_the_users_config(tmp_path: Path,
                                                                configured: bool) -> None:
    """The sidecar's script, run for real (`rclone` is a stand-in that logs its arguments): with
    no rclone config mounted (the optional Secret is absent) it says so, touches nothing and
    waits for SIGTERM; with one it pulls at start and pushes on SIGTERM."""
    sidecar = pod(cloud_storage=True)["spec"]["initContainers"][0]
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    calls = tmp_path / "calls"
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "rclone"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    config = tmp_path / "rclone.conf"
    if configured:
        config.write_text("[cloud]\ntype = memory\n")
    env.update(RCLONE_CONFIG=str(config), DIR=str(tmp_path / "cloud"), HOME=str(tmp_path),
               PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        proc = subprocess.Popen(sidecar["command"], env=env, stderr=err, start_new_session=True)
    try:
        time.sleep(0.5)
        assert proc.poll() is None  # a native sidecar that exits would be restarted forever
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):  # and the script's `sleep`, if left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log = calls.read_text().splitlines() if calls.exists() else []
    if configured:
        assert log[0] == f"copy cloud: {tmp_path / 'cloud'}"
        assert log[-1] == f"copy --update {tmp_path / 'cloud'} cloud:"
    else:
        assert log == [] and "no cloud storage configured" in stderr.read_text()


def test_warm_pod_has_no_user_until_claimed() -> None:
    warm = pod(user_id=None, owner=None, pod_name="warm-gimp-1")
    assert warm["metadata"]["labels"][objects.WARM_LABEL] == "true"
    assert "user" not in warm["metadata"]["labels"] and "ownerReferences" not in warm["metadata"]
    assert {"name": "user-storage", "emptyDir": {}} in warm["spec"]["volumes"]
    patch = objects.claim_patch({**SESSION, "spec": {"userId": "Bob", "application": "gimp"}})
    assert patch["metadata"]["labels"][objects.WARM_LABEL] is None  # removes the label
    assert patch["metadata"]["labels"]["session"] == "s1"
    assert patch["metadata"]["ownerReferences"] == [objects.owner_reference(SESSION)]


def test_other_builders_are_valid() -> None:
    pvc = objects.user_pvc("Alice@x", "20Gi", "ssd-user-storage")
    assert_valid(pvc)
    assert pvc["metadata"]["name"] == objects.pvc_name("Alice@x")
    assert "ownerReferences" not in pvc["metadata"]  # the user's data outlives sessions
    secret = objects.agent_secret("s1", "tok", SESSION)
    assert_valid(secret)
    assert secret["stringData"] == {"token": "tok"} and secret["metadata"]["name"] == "s1-agent"
    event = objects.event({**SESSION, "metadata": {**SESSION["metadata"], "namespace": "ns"}},
                          "Running", "x" * 2000, name="s1.1", timestamp="2026-01-01T00:00:00Z",
                          warning=True)
    assert_valid(event)
    assert event["type"] == "Warning" and len(event["message"]) == 1024
    lease = objects.lease("l", "me", 15, "2026-01-01T00:00:00.000000Z", transitions=2)
    assert_valid(lease)
    assert lease["spec"]["holderIdentity"] == "me"
