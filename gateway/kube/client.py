"""The one API client: configuration the standard way, and raw-JSON calls on top of
`kubernetes_asyncio`'s generated APIs (dicts in and out: no model (de)serialisation on the
hot path, and one error type with the HTTP status)."""
from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from gateway.kube import objects

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status, self.reason, self.message = status, reason, message


def resolve_namespace(explicit: str | None = None) -> str:
    """--namespace, else $GATEWAY_NAMESPACE, else the pod's own namespace, else "default"."""
    if explicit:
        return explicit
    if os.environ.get("GATEWAY_NAMESPACE"):
        return os.environ["GATEWAY_NAMESPACE"]
    if SA_NAMESPACE.is_file():
        return SA_NAMESPACE.read_text().strip()
    return "default"


async def connect() -> client.ApiClient:
    """The in-cluster service account inside a pod, otherwise KUBECONFIG / ~/.kube/config."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        try:
            # Read KUBECONFIG now: the library reads it once, at import.
            await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                          client_configuration=configuration)
        except (ConfigException, FileNotFoundError) as exc:
            raise KubeError(0, "NoConfig", f"no in-cluster service account and no usable "
                                           f"kubeconfig: {exc}") from exc
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class Resource:
    """A namespaced resource type and the generated-API method names that serve it."""

    plural: str
    api: str  # "core", "custom" or "coordination"
    suffix: str = ""  # generated method suffix, e.g. "pod" -> create_namespaced_pod


PODS = Resource("pods", "core", "pod")
PVCS = Resource("persistentvolumeclaims", "core", "persistent_volume_claim")
SECRETS = Resource("secrets", "core", "secret")
EVENTS = Resource("events", "core", "event")
LEASES = Resource("leases", "coordination", "lease")
SESSIONS = Resource(objects.PLURAL, "custom")


class Kube:
    """Namespaced, raw-JSON access to the resources the platform uses."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self._apis = {"core": client.CoreV1Api(api_client),
                      "coordination": client.CoordinationV1Api(api_client),
                      "custom": client.CustomObjectsApi(api_client)}

    async def close(self) -> None:
        await self.api_client.close()

    def _call(self, resource: Resource, verb: str, *args: Any, status: bool = False,
              **kwargs: Any) -> Any:
        api = self._apis[resource.api]
        if resource.api == "custom":
            name = f"{verb}_namespaced_custom_object{'_status' if status else ''}"
            return getattr(api, name)(objects.GROUP, objects.VERSION, self.namespace,
                                      resource.plural, *args, _preload_content=False, **kwargs)
        name = f"{verb}_namespaced_{resource.suffix}{'_status' if status else ''}"
        if verb in ("create", "list"):
            return getattr(api, name)(self.namespace, *args, _preload_content=False, **kwargs)
        return getattr(api, name)(args[0], self.namespace, *args[1:], _preload_content=False,
                                  **kwargs)

    async def _json(self, call: Any) -> dict[str, Any]:
        response = await call
        try:
            body = await response.read()
        finally:
            response.release()
        data = json.loads(body) if body else {}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, data.get("reason", response.reason or ""),
                            data.get("message", ""))
        return data

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json(self._call(resource, "create", body))

    async def get(self, resource: Resource, name: str) -> dict[str, Any]:
        verb = "get" if resource.api == "custom" else "read"
        return await self._json(self._call(resource, verb, name))

    async def list(self, resource: Resource, label_selector: str = "") -> dict[str, Any]:
        return await self._json(self._call(resource, "list", label_selector=label_selector))

    async def replace(self, resource: Resource, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json(self._call(resource, "replace", name, body))

    async def patch(self, resource: Resource, name: str, body: dict[str, Any], *,
                    status: bool = False, content_type: str = MERGE) -> dict[str, Any]:
        # Explicit content type: the generated API would send a dict as json-patch (custom
        # objects) or strategic merge (core), and a real server rejects the former.
        return await self._json(self._call(resource, "patch", name, body, status=status,
                                           _content_type=content_type))

    async def delete(self, resource: Resource, name: str, *, grace_seconds: int | None = None,
                     uid: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        if uid:
            options["preconditions"] = {"uid": uid}
        return await self._json(self._call(resource, "delete", name, body=options))

    async def watch(self, resource: Resource, resource_version: str, label_selector: str = "",
                    timeout_seconds: int = 300) -> AsyncIterator[dict[str, Any]]:
        """Raw watch events ({"type", "object"}) from `resource_version` until the server ends
        the stream; an ERROR event is raised as KubeError (410: the version is gone)."""
        response = await self._call(resource, "list", label_selector=label_selector, watch=True,
                                    resource_version=resource_version,
                                    allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
                                    _request_timeout=timeout_seconds + 30)
        try:
            if response.status != 200:
                data = json.loads(await response.read() or b"{}")
                raise KubeError(response.status, data.get("reason", ""), data.get("message", ""))
            while line := await response.content.readline():
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise KubeError(status.get("code", 500), status.get("reason", ""),
                                    status.get("message", ""))
                yield event
        finally:
            response.release()
