"""The node calculation (pure), its metrics, and the controller's command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from gateway.controller.nodes import NodeMetrics, NodeShape, required_nodes
from gateway.controller.settings import load_settings
from tests.kube.conftest import TOKEN_KEY


@pytest.mark.parametrize("active, gpu, expected", [
    (0, 0, (0, 0)), (10, 0, (1, 0)),  # the design truncates the 20% buffer
    (100, 0, (12, 0)), (100, 16, (10, 2)), (8, 8, (0, 1)), (1, 1, (0, 1)), (500, 80, (50, 12)),
])
def test_required_nodes(active: int, gpu: int, expected: tuple[int, int]) -> None:
    assert required_nodes(active, gpu) == expected


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_required_nodes_always_has_room(a: int, b: int) -> None:
    active, gpu = max(a, b), min(a, b)
    shape = NodeShape()
    cpu_nodes, gpu_nodes = required_nodes(active, gpu, shape)
    assert cpu_nodes * shape.cpu_sessions_per_node >= active - gpu
    assert gpu_nodes * shape.gpus_per_node * shape.gpu_sessions_per_gpu >= gpu


@pytest.mark.parametrize("active, gpu", [(-1, 0), (1, 2)])
def test_required_nodes_rejects_bad_counts(active: int, gpu: int) -> None:
    with pytest.raises(ValueError):
        required_nodes(active, gpu)


def test_node_metrics_are_exported() -> None:
    registry = CollectorRegistry()
    registry.register(NodeMetrics(lambda: (100, 16)))
    text = generate_latest(registry).decode()
    assert 'gimp_required_nodes{pool="cpu"} 10.0' in text
    assert 'gimp_required_nodes{pool="gpu"} 2.0' in text


def test_settings_from_flags_and_env() -> None:
    settings = load_settings(["--warm-pool", "gimp=2,blender=0", "--agent-port", "7000"],
                             {"CONTROLLER_CLOUD_STORAGE": "true", "GATEWAY_NAMESPACE": "ns",
                              "CONTROLLER_GPU_NODE_SELECTOR": "pool=t4,zone=a",
                              "CONTROLLER_GPU_TOLERATIONS": '[{"key": "t4", "operator": "Exists"}]'})
    assert settings.warm_pool == {"gimp": 2, "blender": 0}
    assert settings.pod.agent_port == 7000 and settings.cloud_storage
    assert settings.namespace == "ns"
    assert settings.pod.gpu_pool.node_selector == {"pool": "t4", "zone": "a"}
    assert settings.pod.gpu_pool.tolerations == ({"key": "t4", "operator": "Exists"},)
    assert load_settings([], {}).pod.gpu_pool.tolerations[0]["key"] == "nvidia.com/gpu"
    sized = load_settings(["--session-size", "1280x720"], {"CONTROLLER_MAX_SIZE": "2560x1440"})
    assert (sized.pod.session_size, sized.pod.max_size) == ("1280x720", "2560x1440")


@pytest.mark.parametrize("argv, message", [
    (["--warm-pool", "word=2"], "warm pool entry"),
    (["--agent-port", "0"], "--agent-port"),
    (["--cpu-node-selector", "nokey"], "node selector"),
    (["--gpu-tolerations", "{oops"], "tolerations are not JSON"),
    (["--session-size", "1280x721"], "--session-size '1280x721': expected WIDTHxHEIGHT"),
    (["--max-size", "huge"], "--max-size 'huge'"),
    (["--session-size", "3840x2160", "--max-size", "1920x1080"], "exceeds --max-size"),
    (["--agent-token-key", "short"], "at least 16 bytes"),
    ([], "--agent-token-key (CONTROLLER_AGENT_TOKEN_KEY) is required"),
])
def test_bad_flags_exit_with_one_clear_line(argv: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONTROLLER_AGENT_TOKEN_KEY"}
    result = subprocess.run([sys.executable, "-m", "gateway.controller", *argv],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and message in result.stderr


def test_controller_without_a_cluster_says_so(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "missing"),
           "HOME": str(tmp_path), "CONTROLLER_AGENT_TOKEN_KEY": TOKEN_KEY}
    result = subprocess.run([sys.executable, "-m", "gateway.controller", "--metrics-port", "0"],
                            capture_output=True, text=True, timeout=60, env=env,
                            cwd=str(Path(__file__).parents[2]))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "gateway.controller: cannot reach Kubernetes")
