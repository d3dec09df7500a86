"""The permissions deploy/ grants, read from deploy/base/rbac.yaml: ServiceAccount -> the rules
of every Role bound to it, for the fake API server to enforce (FakeKube.enforce)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "base" / "rbac.yaml"
GATEWAY, CONTROLLER = "session-gateway", "session-controller"


def roles(docs: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """From rendered manifests (or the file): each ServiceAccount's rules."""
    if docs is None:
        docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    rules = {d["metadata"]["name"]: d.get("rules") or [] for d in docs if d["kind"] == "Role"}
    granted: dict[str, list[dict[str, Any]]] = {
        d["metadata"]["name"]: [] for d in docs if d["kind"] == "ServiceAccount"}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", "only namespaced Roles are expected"
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount":
                granted.setdefault(subject["name"], []).extend(rules[binding["roleRef"]["name"]])
    return granted


def permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """{(apiGroup, resource, verb)} a list of rules grants (no wildcards are used in deploy/)."""
    return {(group, resource, verb) for rule in rules for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", []) for verb in rule.get("verbs", [])}
