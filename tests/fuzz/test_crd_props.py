"""Session objects from hypothesis, given to the real controller through the fake API server:
whatever the API server admits (the CRD schema decides), the controller brings to `running` or
to `failed` with a reason, never crashes a worker, and ends it cleanly when it is deleted."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.kube import objects
from gateway.kube.client import SESSIONS, Kube, KubeError
from tests.input.strategies import json_values
from tests.kube.conftest import NAMESPACE, api, controllers, eventually, kube, kubeconfig, kubelet  # noqa: F401  (fixtures)
from tests.kube.fakeapi import FakeKube

SESSIONS_PER_RUN = 40

quantities = st.sampled_from(["1", "500m", "0.5", "2", "2Gi", "1.5Gi", "100", "1k", "3T"])
wild = st.text(max_size=12) | json_values


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` four times in five, else anything: most objects get past the schema."""
    return st.integers(0, 4).flatmap(lambda n: valid if n else wild)


user_ids = (st.sampled_from(["alice", "Alice@example.org", "-", "a" * 253, "ü", "x.y", "0"])
            | st.text(min_size=1, max_size=40))
specs = st.fixed_dictionaries(
    {"userId": mostly(user_ids),
     "application": mostly(st.sampled_from(list(objects.APPLICATIONS)))},
    optional={"resources": mostly(st.fixed_dictionaries({}, optional={
                  "cpu": mostly(quantities), "memory": mostly(quantities),
                  "gpu": mostly(st.sampled_from(["0", "1", "2", "01"]))})),
              "storage": mostly(st.fixed_dictionaries({}, optional={
                  "size": mostly(st.sampled_from(["1Gi", "5Gi", "0", "1.5Gi"])),
                  "class": mostly(st.sampled_from(["standard", "ssd-user-storage", "Not Valid",
                                                   "", "a" * 300]))})),
              "timeout": mostly(st.integers(-5, 2 ** 40)),
              "ephemeral": mostly(st.booleans()),
              "unknownField": json_values})
statuses = st.none() | st.fixed_dictionaries({}, optional={
    "phase": mostly(st.sampled_from(["pending", "running", "terminating", "failed"])),
    "podName": st.text(max_size=12), "endpoint": st.text(max_size=12)})


@st.composite
def sessions(draw: st.DrawFn, name: str) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": objects.API_VERSION, "kind": objects.KIND,
                            "metadata": {"name": name}, "spec": draw(specs)}
    status = draw(statuses)
    if status is not None:
        body["status"] = status  # ignored on create (status subresource), as in a cluster
    if draw(st.booleans()):
        body["metadata"]["finalizers"] = [objects.FINALIZER]
    return body


def drawn() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @settings(max_examples=SESSIONS_PER_RUN, derandomize=True, database=None, deadline=None)
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        found.append(data.draw(sessions(f"fuzz-{len(found)}")))

    collect()
    return found


def settled(api: FakeKube, name: str) -> bool:
    status = (api.get("sessions", NAMESPACE, name) or {}).get("status") or {}
    return status.get("phase") == "running" or (
        status.get("phase") == "failed" and bool(status.get("message")))


async def test_controller_settles_every_admitted_session(
        api: FakeKube, kubelet: Any, kube: Kube, controllers: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    await controllers(start_timeout=30)
    admitted: list[str] = []
    refused = 0
    for body in drawn():
        try:
            await kube.create(SESSIONS, body)
            admitted.append(body["metadata"]["name"])
        except KubeError as exc:
            assert exc.status == 422, exc  # the CRD schema refused it, with a reason
            refused += 1
    assert admitted and refused
    for name in admitted:
        await eventually(lambda: settled(api, name), timeout=90)
    assert any(api.get("sessions", NAMESPACE, n)["status"]["phase"] == "running"
               for n in admitted)
    for name in admitted:
        await kube.delete(SESSIONS, name)
    await eventually(lambda: not api.objects("sessions", NAMESPACE), timeout=90)
    assert not api.objects("pods", NAMESPACE)
    crashes = [r for r in caplog.records
               if r.name.startswith("gateway") and r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]
