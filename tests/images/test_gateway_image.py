"""The gateway image, run as its two Deployments' pods would run it (deploy/base/gateway.yaml,
controller.yaml: their commands, env, uid 1000, read-only root) but without a cluster: both
fail at once with one clear line; `--help` works; none of the agent's libraries are there."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.images.kubelet import PodRunner

pytestmark = pytest.mark.timeout(2700)  # the first test may build the images
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"
SECRETS = {"gateway-secrets": {"jwt-secret": "s" * 32}, "coturn-auth": {"static-auth-secret": "t" * 32},
           "gimp-agent-token-key": {"key": "k" * 32}}


def deployment_pod(file: str) -> dict:
    """The Deployment's pod template as the pod its ReplicaSet makes."""
    deployment = next(d for d in yaml.safe_load_all((DEPLOY / file).read_text())
                      if d and d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": f"{deployment['metadata']['name']}-0"},
            "spec": template["spec"]}


@pytest.fixture
def runner(built_images: dict, tmp_path: Path, request: pytest.FixtureRequest) -> PodRunner:
    pod = PodRunner(deployment_pod(request.param), tmp_path, secrets=SECRETS)
    pod.prepare_volumes()
    yield pod
    pod.close()


@pytest.mark.parametrize("runner, container, message", [
    ("gateway.yaml", "gateway", "gateway: the kubernetes spawner cannot start: "),
    ("controller.yaml", "controller", "gateway.controller: cannot reach Kubernetes: "),
], indirect=["runner"])
def test_without_a_cluster_it_fails_with_one_clear_line(runner: PodRunner, container: str,
                                                       message: str) -> None:
    spec = runner.spec["containers"][0]
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    status, log = runner.run_once(container, timeout=120)
    assert status == 1, log
    last = log.strip().splitlines()[-1]
    assert last.startswith(message) and "service account" in last, log


@pytest.mark.parametrize("runner", ["gateway.yaml"], indirect=True)
def test_help_and_only_the_gateways_libraries(runner: PodRunner) -> None:
    status, log = runner.run_once("gateway", {"command": ["python", "-m", "gateway", "--help"],
                                              "args": []})
    assert status == 0 and "--spawner" in log, log
    probe = ("import importlib.util as u; print(sorted(m for m in ('aiortc', 'av', 'numpy', "
             "'Xlib', 'mss', 'session_agent', 'kubernetes_asyncio', 'jwt') if u.find_spec(m)))")
    status, log = runner.run_once("gateway", {"command": ["python", "-c", probe], "args": []})
    assert status == 0 and log.strip().splitlines()[-1] == "['jwt', 'kubernetes_asyncio']", log
