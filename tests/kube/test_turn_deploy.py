"""The deployed TURN relay fits together: what coturn listens on is what its Service exposes and
what the gateway advertises (udp, tcp, and tls on 443); the relay range is the one the
NetworkPolicies admit; the relay stays on the pod's address. tests/netlab runs coturn with these
very arguments behind a load balancer of this shape, with the browser's UDP blocked."""
from __future__ import annotations

import re

import pytest

from gateway.config import load_config
from tests.kube.test_deploy import pod_spec, render, ROOT


@pytest.fixture(scope="module")
def docs() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in render(ROOT / "deploy")}


def coturn_args(docs) -> dict[str, str]:
    args = pod_spec(docs[("Deployment", "coturn")])["containers"][0]["args"]
    return dict(a.removeprefix("--").partition("=")[::2] for a in args)


def test_the_service_exposes_the_listeners_and_no_relay_port(docs) -> None:
    args = coturn_args(docs)
    container = pod_spec(docs[("Deployment", "coturn")])["containers"][0]
    named = {(p["name"]): (p["protocol"], p["containerPort"]) for p in container["ports"]}
    service = docs[("Service", "coturn")]["spec"]
    exposed = {(p["protocol"], p["port"]): named[p["targetPort"]] for p in service["ports"]}
    listening, tls = int(args["listening-port"]), int(args["tls-listening-port"])
    assert exposed == {("UDP", 3478): ("UDP", listening), ("TCP", 3478): ("TCP", listening),
                       ("TCP", 443): ("TCP", tls)}
    assert tls > 1024  # no privileged port in the pod: 443 is the Service's
    assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"


def test_the_relay_is_on_the_pod_address_with_a_sized_range(docs) -> None:
    args = coturn_args(docs)
    assert args["relay-ip"] == "$(POD_IP)" and "external-ip" not in args
    env = {e["name"]: e for e in pod_spec(docs[("Deployment", "coturn")])["containers"][0]["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    low, high = int(args["min-port"]), int(args["max-port"])
    assert high - low + 1 >= 3 * 1000  # three allocations for each of GATEWAY_MAX_SESSIONS_TOTAL's viewers
    policies = {d["metadata"]["name"]: d["spec"] for k, d in docs.items() if k[0] == "NetworkPolicy"}
    session_egress = [p for rule in policies["gimp-session"]["egress"] for p in rule.get("ports", [])
                      if p["protocol"] == "UDP" and p.get("endPort")]
    assert [(p["port"], p["endPort"]) for p in session_egress] == [(low, high)]
    relay_ingress = [rule for rule in policies["coturn"]["ingress"]
                     if any(p.get("endPort") for p in rule["ports"])]
    (rule,) = relay_ingress
    assert [(p["port"], p["endPort"]) for p in rule["ports"]] == [(low, high)]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "gimp-session"}}}]  # agents only


def test_tls_certificate_comes_from_a_secret(docs) -> None:
    args = coturn_args(docs)
    spec = pod_spec(docs[("Deployment", "coturn")])
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volume = next(v for v in spec["volumes"] if v["name"] == mounts["/etc/coturn/tls"])
    assert volume["secret"]["secretName"] == "coturn-tls"
    assert args["cert"].startswith("/etc/coturn/tls/") and args["pkey"].startswith("/etc/coturn/tls/")


def test_the_gateway_advertises_udp_tcp_and_tls_on_443(docs) -> None:
    gateway = docs[("Deployment", "session-gateway")]
    env = {e["name"]: e.get("value", "") for e in pod_spec(gateway)["containers"][0]["env"]}
    config = load_config(pod_spec(gateway)["containers"][0]["args"],
                         {**env, "GATEWAY_JWT_SECRET": "x", "GATEWAY_TURN_SECRET": "x",
                          "GATEWAY_AGENT_TOKEN_KEY": "a-key-of-at-least-16-bytes"})
    forms = sorted(re.sub(r"//|turn\.gimp\.example\.com", "", u) for u in config.turn_urls)
    assert forms == ["turn::3478?transport=tcp", "turn::3478?transport=udp", "turns::443?transport=tcp"]
