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
from gateway.kube.objects import PodSettings
from gateway.resources import quantity
from tests.kube.conftest import TOKEN_KEY


DESIGN = NodeShape(cpu_sessions_per_node=10)  # the design's fixed estimate, as an operator's figure


@pytest.mark.parametrize("active, gpu, expected", [
    (0, 0, (0, 0)), (10, 0, (1, 0)),  # the design truncates the 20% buffer
    (100, 0, (12, 0)), (100, 16, (10, 2)), (8, 8, (0, 1)), (1, 1, (0, 1)), (500, 80, (50, 12)),
])
def test_required_nodes_is_the_designs_arithmetic(active: int, gpu: int, expected: tuple[int, int]) -> None:
    assert required_nodes(active, gpu, DESIGN) == expected


def test_sessions_per_node_follow_the_pod_requests() -> None:
    # The pod template's defaults (PodSettings) are the default shape's pod.
    pod = PodSettings()
    assert quantity(NodeShape().pod_cpu) == quantity(pod.cpu_request) + quantity(pod.agent_cpu_request)
    assert quantity(NodeShape().pod_memory) == quantity(pod.memory_request) + quantity(pod.agent_memory_request)
    # 16 vCPU and 64Gi, a tenth reserved: 14.4 / 0.15 = 96 by CPU, 57.6Gi / 544Mi = 108 by memory.
    assert NodeShape().sessions_per_node() == 96
    # The scarcer resource decides.
    assert NodeShape(node_memory="8Gi").sessions_per_node() == 13  # 7.2Gi / 544Mi
    # The pod requests before this (1 CPU + 500m, 2Gi + 256Mi): 9, near the design's fixed 10.
    assert NodeShape(pod_cpu="1.5", pod_memory="2304Mi").sessions_per_node() == 9
    # A pod larger than the node still counts as one a node.
    assert NodeShape(node_cpu="1", pod_cpu="2").sessions_per_node() == 1
    # The operator's own figure wins.
    assert NodeShape(cpu_sessions_per_node=40).sessions_per_node() == 40
    assert required_nodes(960, 0) == (12, 0)  # 10 nodes at 96 a node, plus the 20% buffer


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.sampled_from([None, 1, 7, 10, 96]))
def test_required_nodes_always_has_room(a: int, b: int, per_node: int | None) -> None:
    active, gpu = max(a, b), min(a, b)
    shape = NodeShape(cpu_sessions_per_node=per_node)
    cpu_nodes, gpu_nodes = required_nodes(active, gpu, shape)
    assert cpu_nodes * shape.sessions_per_node() >= active - gpu
    assert gpu_nodes * shape.gpus_per_node * shape.gpu_sessions_per_gpu >= gpu


@pytest.mark.parametrize("active, gpu", [(-1, 0), (1, 2)])
def test_required_nodes_rejects_bad_counts(active: int, gpu: int) -> None:
    with pytest.raises(ValueError):
        required_nodes(active, gpu)


def test_node_metrics_are_exported() -> None:
    registry = CollectorRegistry()
    registry.register(NodeMetrics(lambda: (100, 16), DESIGN))
    text = generate_latest(registry).decode()
    assert 'gimp_required_nodes{pool="cpu"} 10.0' in text
    assert 'gimp_required_nodes{pool="gpu"} 2.0' in text
    assert "gimp_sessions_per_node 10.0" in text


def test_node_shape_from_flags_and_env() -> None:
    key = ["--agent-token-key", TOKEN_KEY]
    default = load_settings(key, {}).nodes
    assert default == NodeShape(pod_cpu="0.150", pod_memory=str(544 * 2**20))
    assert default.sessions_per_node() == 96
    # The operator's hardware: flags and their CONTROLLER_* twins (the flag wins).
    shaped = load_settings(key, {"CONTROLLER_NODE_CPU": "32", "CONTROLLER_NODE_MEMORY": "128Gi"}).nodes
    assert (shaped.node_cpu, shaped.node_memory, shaped.sessions_per_node()) == ("32", "128Gi", 192)
    assert load_settings([*key, "--node-cpu", "8"], {"CONTROLLER_NODE_CPU": "32"}).nodes.node_cpu == "8"
    assert load_settings(key, {"CONTROLLER_SESSIONS_PER_NODE": "25"}).nodes.sessions_per_node() == 25
    assert load_settings([*key, "--sessions-per-node", "12"], {}).nodes.sessions_per_node() == 12


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
    (["--node-memory", "lots"], "--node-memory: 'lots' is not a quantity"),
    (["--node-cpu", "0"], "--node-cpu must be positive"),
    (["--sessions-per-node", "0"], "--sessions-per-node must be at least 1"),
    (["--sessions-per-node", "ten"], "--sessions-per-node 'ten': expected a whole number"),
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
