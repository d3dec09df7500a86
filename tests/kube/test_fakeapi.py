"""The fake API server is as strict as a real one where clients commonly go wrong; and the
shared list+watch cache survives what real watches do (drops, 410 Gone, errors)."""
from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from gateway.kube import objects
from gateway.kube.cache import Informer
from gateway.kube.client import PODS, SECRETS, SESSIONS, STRATEGIC, Kube, KubeError
from gateway.kube.objects import PodSettings
from tests.kube.conftest import NAMESPACE, eventually
from tests.kube.fakeapi import FakeKube


def secret(name: str, owner: dict | None = None) -> dict:
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": {"app": "x"}}, "stringData": {"k": "v"}}
    if owner:
        body["metadata"]["ownerReferences"] = [objects.owner_reference(owner)]
    return body


async def test_dict_sent_as_json_patch_is_rejected(api: FakeKube, kube: Kube) -> None:
    """kubernetes_asyncio's CustomObjectsApi sends a dict as json-patch unless told otherwise."""
    await kube.create(SESSIONS, objects.session_manifest("p1", "u", "gimp"))
    custom = client.CustomObjectsApi(kube.api_client)
    with pytest.raises(ApiException) as info:
        await custom.patch_namespaced_custom_object(
            objects.GROUP, objects.VERSION, NAMESPACE, objects.PLURAL, "p1",
            {"metadata": {"labels": {"x": "y"}}})
    assert info.value.status == 400
    with pytest.raises(KubeError) as err:
        await kube.patch(SESSIONS, "p1", {"metadata": {"labels": {"x": "y"}}},
                         content_type=STRATEGIC)
    assert err.value.status == 415  # no strategic merge for custom resources
    patched = await kube.patch(SESSIONS, "p1", {"metadata": {"labels": {"x": "y"}}})
    assert patched["metadata"]["labels"]["x"] == "y"


async def test_conflicts(api: FakeKube, kube: Kube) -> None:
    created = await kube.create(SECRETS, secret("c1"))
    with pytest.raises(KubeError) as err:
        await kube.create(SECRETS, secret("c1"))
    assert (err.value.status, err.value.reason) == (409, "AlreadyExists")
    await kube.patch(SECRETS, "c1", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(KubeError) as err:  # the version we read is stale
        await kube.patch(SECRETS, "c1", {"metadata": {
            "labels": {"a": "c"}, "resourceVersion": created["metadata"]["resourceVersion"]}})
    assert err.value.status == 409
    assert api.get("secrets", NAMESPACE, "c1")["metadata"]["labels"]["a"] == "b"


@pytest.mark.parametrize("body, fragment", [
    (objects.session_manifest("v1", "u", "gimp") | {"spec": {"userId": "u", "application": "word"}},
     "application"),
    (objects.session_manifest("v2", "u", "gimp") | {"spec": {"userId": "u", "application": "gimp",
                                                            "resources": {"gpu": "0.25"}}},
     "gpu"),
    ({**objects.session_manifest("v3", "u", "gimp"),
      "metadata": {"name": "v3", "labels": {"user": "not a label"}}}, "label"),
    ({**objects.session_manifest("v4", "u", "gimp"), "metadata": {"name": "Not_DNS"}}, "name"),
])
async def test_invalid_sessions_are_rejected(api: FakeKube, kube: Kube, body: dict,
                                             fragment: str) -> None:
    with pytest.raises(KubeError) as err:
        await kube.create(SESSIONS, body)
    assert err.value.status == 422 and fragment in err.value.message
    assert api.objects("sessions") == []


async def test_pods_are_validated_strictly(api: FakeKube, kube: Kube) -> None:
    owner = await kube.create(SESSIONS, objects.session_manifest("o1", "u", "gimp"))
    pod = objects.session_pod(pod_name="o1", application="gimp", settings=PodSettings(),
                              user_id="u", owner=owner)
    bad = {**pod, "spec": {**pod["spec"], "containers": [
        {**pod["spec"]["containers"][0], "resource": {}}]}}  # a typo: unknown field
    with pytest.raises(KubeError) as err:
        await kube.create(PODS, bad)
    assert err.value.status == 422
    fractional = {**pod, "spec": {**pod["spec"], "containers": [
        {**pod["spec"]["containers"][0], "resources": {"limits": {"nvidia.com/gpu": "0.5"}}}]}}
    with pytest.raises(KubeError) as err:
        await kube.create(PODS, fractional)
    assert err.value.status == 422 and "must be an integer" in err.value.message
    await kube.create(PODS, pod)
    with pytest.raises(KubeError) as err:  # a pod's spec is immutable
        await kube.patch(PODS, "o1", {"spec": {"nodeSelector": {"a": "b"}}},
                         content_type=STRATEGIC)
    assert err.value.status == 422


async def test_status_subresource(api: FakeKube, kube: Kube) -> None:
    await kube.create(SESSIONS, objects.session_manifest("st", "u", "gimp"))
    await kube.patch(SESSIONS, "st", {"status": {"phase": "running"}})  # main endpoint: ignored
    assert "status" not in api.get("sessions", NAMESPACE, "st")
    await kube.patch(SESSIONS, "st", {"status": {"phase": "running"}, "spec": {"timeout": 5}},
                     status=True)  # status endpoint: only status changes
    stored = api.get("sessions", NAMESPACE, "st")
    assert stored["status"]["phase"] == "running" and "timeout" not in stored["spec"]
    with pytest.raises(KubeError) as err:
        await kube.patch(SESSIONS, "st", {"status": {"phase": "bogus"}}, status=True)
    assert err.value.status == 422


async def test_finalizers_and_cascade(api: FakeKube, kube: Kube) -> None:
    owner = await kube.create(SESSIONS, objects.session_manifest("f1", "u", "gimp"))
    await kube.create(SECRETS, secret("f1-owned", owner))
    deleting = await kube.delete(SESSIONS, "f1")
    assert deleting["metadata"]["deletionTimestamp"]
    assert api.get("sessions", NAMESPACE, "f1") is not None  # held by its finalizer
    with pytest.raises(KubeError) as err:
        await kube.patch(SESSIONS, "f1", {"metadata": {"finalizers": ["a/b", objects.FINALIZER]}})
    assert err.value.status == 422  # no new finalizers while deleting
    await kube.patch(SESSIONS, "f1", {"metadata": {"finalizers": []}})
    assert api.get("sessions", NAMESPACE, "f1") is None
    assert api.get("secrets", NAMESPACE, "f1-owned") is None  # garbage collected


async def test_stale_watch_gets_410(api: FakeKube, kube: Kube) -> None:
    first = await kube.create(SECRETS, secret("w1"))
    await kube.create(SECRETS, secret("w2"))
    api.compact()
    with pytest.raises(KubeError) as err:
        async for _ in kube.watch(SECRETS, first["metadata"]["resourceVersion"]):
            pass
    assert err.value.status == 410


async def test_watch_selector_semantics(api: FakeKube, kube: Kube) -> None:
    listing = await kube.list(SECRETS, "app=x")
    events: list[tuple[str, str]] = []

    async def follow() -> None:
        async for event in kube.watch(SECRETS, listing["metadata"]["resourceVersion"], "app=x"):
            events.append((event["type"], event["object"]["metadata"]["name"]))

    task = asyncio.create_task(follow())
    # resourceVersion "0" (an empty store) means "from now": wait until the watch is open.
    await eventually(lambda: api.watchers)
    await kube.create(SECRETS, secret("sel"))
    await kube.patch(SECRETS, "sel", {"metadata": {"labels": {"app": "y"}}},
                     content_type=STRATEGIC)  # leaves the selector: a watcher sees DELETED
    await eventually(lambda: len(events) == 2)
    task.cancel()
    assert events == [("ADDED", "sel"), ("DELETED", "sel")]


async def test_informer_relists_after_410_and_resumes_after_drops(api: FakeKube,
                                                                 kube: Kube) -> None:
    informer = Informer(kube, SECRETS, "app=x")
    seen: list[tuple[str, str]] = []
    informer.add_handler(lambda kind, obj, old: seen.append((kind, obj["metadata"]["name"])))
    await kube.create(SECRETS, secret("i1"))
    informer.start()
    await informer.wait_synced()
    api.fail_next(2, "GET", "watch=True")  # the reconnects fail at first
    api.drop_watches()
    await kube.create(SECRETS, secret("i2"))
    await eventually(lambda: "i2" in informer.store)
    # A gap with compaction: the watch cannot resume; the relist finds what changed.
    api.fail_next(1, "GET", "watch=True")
    api.drop_watches()
    await kube.delete(SECRETS, "i1")
    await kube.create(SECRETS, secret("i3"))
    api.compact()
    await eventually(lambda: set(informer.store) == {"i2", "i3"})
    assert ("DELETED", "i1") in seen and ("ADDED", "i3") in seen
    await informer.stop()
