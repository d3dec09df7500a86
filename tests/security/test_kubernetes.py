"""Kubernetes: secrets reach pods as Secret references; NetworkPolicies cover the agent port and
the TURN ports (SECURITY.md §8, §9). Objects as the controller builds them, manifests as
`kubectl kustomize deploy` renders them."""
from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.config import load_config
from gateway.kube import objects
from gateway.spawners.base import new_agent_token
from tests.kube.test_deploy import DEPLOY, container_env, pod_spec, render

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|KEY|CREDENTIAL", re.I)
OWNER = {"apiVersion": "streaming.gimp.io/v1", "kind": "Session",
         "metadata": {"name": "s1", "uid": "0f7c8a2e-1111-2222-3333-444455556666"}}


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(DEPLOY)


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


@pytest.mark.parametrize("cloud_storage", [False, True])
def test_agent_token_reaches_the_pod_only_through_its_secret(cloud_storage: bool) -> None:
    token = new_agent_token()
    pod = objects.session_pod(pod_name="session-s1", application="gimp",
                              settings=objects.PodSettings(), user_id="alice", owner=OWNER,
                              cloud_storage=cloud_storage)
    secret = objects.agent_secret("session-s1", token, OWNER)
    assert token not in json.dumps(pod)  # not in env, args, annotations or anywhere else
    assert secret["kind"] == "Secret" and token in secret["stringData"].values()
    assert secret["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]  # dies with the session
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["agent-token"]["secret"]["secretName"] == secret["metadata"]["name"]
    assert volumes["agent-token"]["secret"]["defaultMode"] == 0o440
    for container in containers(spec):
        for env in container.get("env", []):
            assert "value" not in env or not SECRET_NAME.search(env["name"]) \
                or env["name"].endswith("_FILE"), env  # a path to a mounted Secret is fine
        for mount in container.get("volumeMounts", []):
            if volumes[mount["name"]].get("secret"):
                assert mount.get("readOnly") is True
    if cloud_storage:
        assert volumes["rclone-config"]["secret"]["secretName"] == objects.rclone_secret_name("alice")
    assert spec["automountServiceAccountToken"] is False  # the app gets no API credentials


def test_deployments_take_secrets_from_secret_objects(rendered: list[dict[str, Any]]) -> None:
    workloads = [d for d in rendered if d["kind"] in ("Deployment", "CronJob")]
    assert workloads
    seen = 0
    for doc in workloads:
        for container in containers(pod_spec(doc)):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    seen += 1
                    assert "secretKeyRef" in env.get("valueFrom", {}), (doc["metadata"]["name"], env)
            for source in container.get("envFrom", []):
                assert "secretRef" in source or "configMapRef" in source
    assert seen >= 3  # the gateway's JWT and TURN secrets, coturn's TURN secret


def policies(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d["spec"] for d in rendered if d["kind"] == "NetworkPolicy"}


def selects(rule_peer: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = rule_peer.get("podSelector", {}).get("matchLabels", {})
    return "namespaceSelector" not in rule_peer and wanted.items() <= labels.items()


def opens(rule: dict[str, Any], protocol: str, port: int) -> bool:
    for p in rule.get("ports", []):
        end = p.get("endPort", p["port"])
        if p.get("protocol", "TCP") == protocol and p["port"] <= port <= end:
            return True
    return not rule.get("ports")  # a rule without ports opens every port


def test_default_deny_covers_every_pod(rendered: list[dict[str, Any]]) -> None:
    assert policies(rendered)["default-deny-all"] == {"podSelector": {},
                                                      "policyTypes": ["Ingress", "Egress"]}


def test_agent_port_only_from_gateway_and_controller(rendered: list[dict[str, Any]]) -> None:
    session_labels = {"app": objects.SESSION_APP_LABEL}
    allowed = {"session-gateway", "session-controller"}
    for name, spec in policies(rendered).items():
        if not spec["podSelector"].get("matchLabels", {}).items() <= session_labels.items():
            continue  # does not select session pods
        for rule in spec.get("ingress", []):
            if opens(rule, "TCP", objects.PodSettings().agent_port):
                assert rule.get("from"), (name, "6901 open to everyone")
                for peer in rule["from"]:
                    assert "namespaceSelector" not in peer and "ipBlock" not in peer, (name, peer)
                    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] in allowed
            # UDP media only from the TURN relay.
            if any(p.get("protocol") == "UDP" for p in rule.get("ports", [])):
                assert [peer["podSelector"]["matchLabels"] for peer in rule["from"]] == [
                    {"app.kubernetes.io/name": "coturn"}]
    # And the two callers may leave their own pods for it.
    for caller in allowed:
        egress = policies(rendered)[caller]["egress"]
        assert any(opens(r, "TCP", 6901) and any(selects(p, session_labels) for p in r.get("to", []))
                   for r in egress), caller


def turn_ports(rendered: list[dict[str, Any]]) -> tuple[int, int, int]:
    coturn = next(d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "coturn")
    args = dict(a.lstrip("-").split("=", 1) for a in pod_spec(coturn)["containers"][0]["args"] if "=" in a)
    return int(args["listening-port"]), int(args["min-port"]), int(args["max-port"])


def test_turn_ports_are_covered_and_relay_goes_only_to_sessions(rendered: list[dict[str, Any]]) -> None:
    listen, low, high = turn_ports(rendered)
    spec = policies(rendered)["coturn"]
    ingress = spec["ingress"]
    assert any(opens(r, "UDP", listen) for r in ingress) and any(opens(r, "TCP", listen) for r in ingress)
    assert all(any(opens(r, "UDP", port) for r in ingress) for port in range(low, high + 1))
    assert not any(opens(r, "TCP", 6901) or opens(r, "UDP", low - 1) or opens(r, "UDP", high + 1)
                   for r in ingress)
    # The relay reaches session pods, nothing else (no open relay into the cluster).
    for rule in spec["egress"]:
        assert rule.get("to") and all(selects(p, {"app": objects.SESSION_APP_LABEL}) for p in rule["to"])
    # Session pods may send to the relay's listening and relay ports.
    session_egress = policies(rendered)["gimp-session"]["egress"]
    to_turn = [r for r in session_egress
               if any(selects(p, {"app.kubernetes.io/name": "coturn"}) for p in r.get("to", []))]
    assert all(any(opens(r, "UDP", port) for r in to_turn) for port in (listen, low, high))


def test_gateway_metrics_not_routed_from_the_internet(rendered: list[dict[str, Any]]) -> None:
    service = next(d for d in rendered if d["kind"] == "VirtualService")
    first = service["spec"]["http"][0]
    assert first["match"] == [{"uri": {"exact": "/metrics"}}] and first["directResponse"]["status"] == 404


def test_gateway_cookies_are_secure_in_the_cluster(rendered: list[dict[str, Any]]) -> None:
    gateway = next(d for d in rendered if d["kind"] == "Deployment"
                   and d["metadata"]["name"] == "session-gateway")
    config = load_config(pod_spec(gateway)["containers"][0]["args"], container_env(gateway))
    assert config.secure_cookies is True
