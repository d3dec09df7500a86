"""deploy/ and the images, checked without a cluster or a Docker engine: the kustomize
render validates strictly against the official schemas, the example Sessions against the
CRD, pod templates against the restricted level; the Dockerfiles are parsed; the session
entrypoint runs for real (outside a container)."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from gateway.config import load_config
from gateway.controller.settings import load_settings
from tests.agent_process import free_port
from tests.kube import rbac
from tests.kube.kubelet import free_display
from tests.kube.rbac import permissions
from tests.kube.restricted import violations

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KIOSK = DEPLOY / "optional" / "kiosk"
K8S = "1.32.0"
# Kinds from other projects' CRDs: no official schema in kubernetes-validate.
FOREIGN = {("networking.istio.io/v1", "Gateway"), ("networking.istio.io/v1", "VirtualService"),
           ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass")}
POD_TEMPLATE_KINDS = {"Deployment": ("spec", "template", "spec"),
                      "CronJob": ("spec", "jobTemplate", "spec", "template", "spec")}


# scripts/setup unpacks Debian's kubernetes-client here; KUBECTL names another one.
KUBECTL = os.environ.get("KUBECTL") or str(ROOT / ".tools" / "kubernetes-client" / "usr" / "bin" / "kubectl")


def render(path: Path) -> list[dict]:
    assert Path(KUBECTL).is_file(), f"{KUBECTL} is missing: run scripts/setup (it unpacks Debian's kubectl)"
    out = subprocess.run([KUBECTL, "kustomize", str(path)], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return render(DEPLOY)


def pod_spec(doc: dict) -> dict:
    node = doc
    for key in POD_TEMPLATE_KINDS[doc["kind"]]:
        node = node[key]
    return node


@pytest.fixture(scope="module")
def kiosk() -> list[dict]:
    return render(KIOSK)


def test_every_built_in_kind_is_valid(rendered: list[dict], kiosk: list[dict]) -> None:
    foreign = set()
    for doc in rendered + kiosk + render(DEPLOY / "optional" / "etcd-backup"):
        try:
            kubernetes_validate.validate(doc, K8S, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            foreign.add((doc["apiVersion"], doc["kind"]))
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert foreign == FOREIGN


def test_everything_the_spec_lists_is_installed(rendered: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    for expected in [("CustomResourceDefinition", "sessions.streaming.platform"),
                     ("Namespace", "gimp-streaming"), ("Deployment", "session-gateway"),
                     ("Deployment", "session-controller"), ("Service", "session-gateway"),
                     ("HorizontalPodAutoscaler", "session-gateway"),
                     ("NetworkPolicy", "default-deny-all"), ("NetworkPolicy", "gimp-session"),
                     ("Gateway", "gimp-streaming-gateway"), ("VirtualService", "gimp-streaming"),
                     ("StorageClass", "ssd-user-storage"), ("StorageClass", "nvme-temp-storage"),
                     ("VolumeSnapshotClass", "ebs-snapshots"), ("CronJob", "user-snapshots"),
                     ("CronJob", "user-data-backup"), ("ConfigMap", "nvidia-time-slicing"),
                     ("Deployment", "coturn"), ("Secret", "coturn-auth"),
                     ("Role", "session-controller"), ("Role", "session-gateway")]:
        assert expected in kinds


def test_crd_has_status_subresource_and_printer_columns(rendered: list[dict]) -> None:
    crd = next(d for d in rendered if d["kind"] == "CustomResourceDefinition")
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1" and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"User", "Application", "Phase", "Pod", "Age"} <= columns
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["application"]["enum"] == ["gimp", "blender", "inkscape"]
    assert {"userId", "resources", "storage", "timeout"} <= set(spec)


def test_example_sessions_match_the_crd(rendered: list[dict]) -> None:
    crd = next(d for d in rendered if d["kind"] == "CustomResourceDefinition")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    examples = sorted((DEPLOY / "examples").glob("session-*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = yaml.safe_load(examples[0].read_text())
    bad["spec"]["resources"] = {"gpu": "0.25"}  # the design's fractional GPU
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_namespace_enforces_restricted_and_every_pod_meets_it(rendered: list[dict]) -> None:
    namespace = next(d for d in rendered if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    templates = [d for d in rendered if d["kind"] in POD_TEMPLATE_KINDS]
    assert {d["metadata"]["namespace"] for d in templates} == {"gimp-streaming"}
    for doc in templates:
        assert violations(pod_spec(doc)) == [], doc["metadata"]["name"]


# The exact permissions of each ServiceAccount, as deploy/README.md ("RBAC") states them.
# patch: a session's share links live on its Session (spec.shares), written by the gateway.
GATEWAY_PERMISSIONS = {("streaming.platform", "sessions", v)
                       for v in ("get", "list", "watch", "create", "patch", "delete")}
CONTROLLER_PERMISSIONS = {
    *(("streaming.platform", "sessions", v) for v in ("list", "watch", "patch", "delete")),
    ("streaming.platform", "sessions/status", "patch"),
    *(("", "pods", v) for v in ("get", "list", "watch", "create", "patch", "delete")),
    ("", "secrets", "create"), ("", "events", "create"),
    *(("", "persistentvolumeclaims", v) for v in ("create", "get")),  # get: whose it is
    *(("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")),
}


def test_rbac_is_least_privilege(rendered: list[dict]) -> None:
    """Rendered by kustomize: only namespaced Roles, and exactly the permissions the code
    needs (tests/kube/test_rbac.py proves it works with no more). No Secret can be read by
    either ServiceAccount: users' cloud credentials live in Secrets of this namespace."""
    assert not any(d["kind"] in ("ClusterRole", "ClusterRoleBinding") for d in rendered)
    granted = rbac.roles(rendered)
    assert permissions(granted[rbac.GATEWAY]) == GATEWAY_PERMISSIONS
    assert permissions(granted[rbac.CONTROLLER]) == CONTROLLER_PERMISSIONS
    for account in (rbac.GATEWAY, rbac.CONTROLLER):
        verbs = {v for g, r, v in permissions(granted[account]) if r == "secrets"}
        assert not verbs & {"get", "list", "watch", "update", "patch", "delete", "*"}
        assert all(not rule.get("resourceNames") for rule in granted[account])
    assert ("", "persistentvolumeclaims", "delete") not in CONTROLLER_PERMISSIONS  # users' data


def test_session_pods_reachable_only_from_gateway_and_controller(rendered: list[dict]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered
                if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-all"] == {"podSelector": {}, "policyTypes": ["Ingress",
                                                                               "Egress"]}
    rule = policies["gimp-session"]["ingress"][0]
    assert [p["port"] for p in rule["ports"]] == [6901]
    sources = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
    assert sources == {"session-gateway", "session-controller"}


def test_gpu_time_slicing_config(rendered: list[dict]) -> None:
    config = next(d for d in rendered if d["metadata"]["name"] == "nvidia-time-slicing")
    sharing = yaml.safe_load(config["data"]["any"])["sharing"]["timeSlicing"]
    assert sharing["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]


def dockerfile(name: str) -> DockerfileParser:
    with open(ROOT / name, "rb") as f:
        return DockerfileParser(fileobj=io.BytesIO(f.read()))


@pytest.mark.parametrize("name", ["Dockerfile.gateway", "Dockerfile.session"])
def test_dockerfiles(name: str) -> None:
    parser = dockerfile(name)
    assert parser.baseimage.startswith("debian:")
    instructions = parser.structure
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] == "1000"
    for copy in (i["value"].split() for i in instructions if i["instruction"] == "COPY"):
        for source in copy[:-1]:
            assert (ROOT / source).exists(), f"{name}: COPY source {source} is missing"


def test_session_image_contract() -> None:
    parser = dockerfile("Dockerfile.session")
    values = {i["instruction"]: i["value"] for i in parser.structure}
    assert "6901" in values["EXPOSE"].split()
    assert parser.envs["DISPLAY"] == ":99"
    assert "session-entrypoint" in values["ENTRYPOINT"]
    run = " ".join(i["value"] for i in parser.structure if i["instruction"] == "RUN")
    for package in ("xvfb", "openbox", "${APPLICATION}"):
        assert package in run


@pytest.fixture
def entrypoint_env(tmp_path: Path) -> dict[str, str]:
    """The pod's environment, on this machine: python3 is this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: a symlinked venv interpreter does not find its pyvenv.cfg.
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    token = tmp_path / "token"
    token.write_text("entry-token")
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "DISPLAY": f":{free_display()}", "AGENT_PORT": str(free_port()),
            "AGENT_HOST": "127.0.0.1", "AGENT_TOKEN_FILE": str(token), "APPLICATION": "gimp",
            "SESSION_LAUNCH": "sleep 3600", "SESSION_SIZE": "640x480", "MAX_SIZE": "1280x720",
            "XAUTHORITY": str(tmp_path / "Xauthority")}


async def test_entrypoint_runs_xvfb_and_the_agent_and_stops_cleanly(
        entrypoint_env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(DEPLOY / "session-entrypoint.sh"), env=entrypoint_env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    base = f"http://127.0.0.1:{entrypoint_env['AGENT_PORT']}"
    socket_path = Path(f"/tmp/.X11-unix/X{entrypoint_env['DISPLAY'][1:]}")
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(90):
                while True:
                    assert proc.returncode is None, (await proc.stderr.read()).decode()
                    try:
                        async with http.get(f"{base}/health") as response:
                            if response.status == 200:
                                health = await response.json()
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.2)
            assert health["display"] == entrypoint_env["DISPLAY"]
            # the X server's size is SESSION_SIZE, not its MAX_SIZE framebuffer
            assert (health["width"], health["height"]) == (640, 480)
            async with http.post(f"{base}/whep", data="v=0",
                                 headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 401  # the token file was honoured
        assert socket_path.exists()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert not socket_path.exists()  # Xvfb went with it
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def test_entrypoint_x_server_wants_the_cookie(entrypoint_env: dict[str, str]) -> None:
    """Xvfb only takes clients with the cookie the entrypoint wrote to $XAUTHORITY."""
    proc = subprocess.Popen([str(DEPLOY / "session-entrypoint.sh")], env=entrypoint_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    display = entrypoint_env["DISPLAY"]
    try:
        deadline = time.monotonic() + 60
        while not Path(entrypoint_env["XAUTHORITY"]).exists() or not Path(
                f"/tmp/.X11-unix/X{display[1:]}").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        with_cookie = {**os.environ, "DISPLAY": display, "XAUTHORITY": entrypoint_env["XAUTHORITY"]}
        without = {**with_cookie, "XAUTHORITY": str(Path(entrypoint_env["XAUTHORITY"]).parent / "none")}
        probe = [sys.executable, "-c", "import sys; from Xlib import display; "
                 "display.Display(sys.argv[1]).close()", display]
        assert subprocess.run(probe, env=with_cookie, capture_output=True, timeout=30).returncode == 0
        denied = subprocess.run(probe, env=without, capture_output=True, text=True, timeout=30)
        assert denied.returncode != 0 and "Authorization" in denied.stderr + denied.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


APP_PROBE = """
import sys, time
from Xlib import X, display
d = display.Display()
root = d.screen().root
wm = root.get_full_property(d.intern_atom("_NET_SUPPORTING_WM_CHECK"), X.AnyPropertyType)
geometry = root.get_geometry()
open(sys.argv[1], "w").write(f"{geometry.width}x{geometry.height} {'wm' if wm else 'no-wm'}")
time.sleep(3600)
"""


def test_the_app_container_starts_the_application_on_a_ready_display(
        entrypoint_env: dict[str, str], tmp_path: Path) -> None:
    """The pod's two containers start together: the application must not come before the
    agent has set SESSION_SIZE and runs the window manager, or its first windows are placed on
    the framebuffer's size, unfocused (Inkscape's welcome dialog half off a 1280x720 screen,
    out of reach of the keyboard: seen in CI)."""
    probe, seen = tmp_path / "probe.py", tmp_path / "seen"
    probe.write_text(APP_PROBE)
    env = {**entrypoint_env, "SESSION_LAUNCH": f"python3 {probe} {seen}", "HOME": str(tmp_path)}
    ready = Path(f"/tmp/.X11-unix/X{env['DISPLAY'][1:]}.ready")
    procs = []
    try:
        for role in ("app", "session"):  # the app's container may well be first
            procs.append(subprocess.Popen([str(DEPLOY / "session-entrypoint.sh"), role], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          start_new_session=True))
        deadline = time.monotonic() + 90
        while not seen.exists() or not seen.read_text():
            for proc in procs:
                assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the application never started"
            time.sleep(0.1)
        assert seen.read_text() == "640x480 wm"  # SESSION_SIZE, managed: not 1280x720 unmanaged
        assert ready.read_text() == "640x480\n"
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    assert not ready.exists()  # the session container took it with it


@pytest.mark.parametrize("after", [0.05, 1.0])  # Xvfb starting; the agent starting
def test_entrypoint_as_pid_1_ends_at_once_on_sigterm_while_starting(
        entrypoint_env: dict[str, str], after: float) -> None:
    """In a pod the entrypoint is PID 1, which ignores a signal it has no handler for: it traps
    TERM before anything else, so a pod deleted while it starts ends at once, not after its
    grace period (bwrap gives it a PID namespace of its own here, as a runtime does)."""
    info_r, info_w = os.pipe()
    proc = subprocess.Popen(
        ["bwrap", "--dev-bind", "/", "/", "--unshare-pid", "--as-pid-1", "--proc", "/proc",
         "--die-with-parent", "--info-fd", str(info_w), "--",
         str(DEPLOY / "session-entrypoint.sh"), "session"],
        env=entrypoint_env, pass_fds=(info_w,), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    os.close(info_w)
    try:
        with os.fdopen(info_r) as info:
            pid_1 = json.loads(info.read())["child-pid"]
        time.sleep(after)
        os.kill(pid_1, signal.SIGTERM)
        assert proc.wait(15) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("change, message", [
    ({"APPLICATION": "word"}, "unknown APPLICATION"),
    ({"AGENT_TOKEN_FILE": "/nonexistent/token"}, "cannot read AGENT_TOKEN_FILE"),
])
def test_entrypoint_rejects_bad_settings(entrypoint_env: dict[str, str], change: dict,
                                         message: str) -> None:
    result = subprocess.run([str(DEPLOY / "session-entrypoint.sh")],
                            env={**entrypoint_env, **change}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and message in result.stderr


def container_env(doc: dict) -> dict[str, str]:
    container = pod_spec(doc)["containers"][0]
    return {e["name"]: e.get("value", "from-a-secret-reference") for e in container.get("env", [])}


def test_deployments_configure_what_they_mean_to(rendered: list[dict]) -> None:
    """The manifests' flags and env parse with the programs' own configuration loaders."""
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    controller = deployments["session-controller"]
    settings = load_settings([], container_env(controller))
    assert settings.cloud_storage and settings.agent_token_key
    assert settings.warm_pool == {}  # no warm pool where nothing would claim it
    assert "{application}" in settings.pod.image
    gateway = deployments["session-gateway"]
    config = load_config(pod_spec(gateway)["containers"][0]["args"], container_env(gateway))
    assert (config.spawner, config.auth, config.port) == ("kubernetes", "jwt", 8080)
    assert config.turn_urls and config.turn_secret and config.agent_token_key
    assert not config.ephemeral
    for name in ("session-gateway", "session-controller"):  # the same key, from one Secret
        env = pod_spec(deployments[name])["containers"][0]["env"]
        key = next(e for e in env if e["name"].endswith("_AGENT_TOKEN_KEY"))
        assert key["valueFrom"] == {"secretKeyRef": {"name": "gimp-agent-token-key",
                                                     "key": "key"}}


def test_kiosk_overlay_ships_the_warm_pool_with_its_user(kiosk: list[dict]) -> None:
    """The warm pool comes only with the gateway setting that makes its Sessions ephemeral,
    the only ones a warm pod can serve."""
    deployments = {d["metadata"]["name"]: d for d in kiosk if d["kind"] == "Deployment"}
    settings = load_settings([], container_env(deployments["session-controller"]))
    assert settings.warm_pool and all(settings.warm_pool.values())
    gateway = deployments["session-gateway"]
    config = load_config(pod_spec(gateway)["containers"][0]["args"], container_env(gateway))
    assert config.ephemeral and config.spawner == "kubernetes"
