"""The one API client: configuration the standard way, and raw-JSON calls on top of
`kubernetes_asyncio`'s generated APIs (dicts in and out: no model (de)serialisation on the
hot path, and one error type with the HTTP status).

Every call but a watch is retried here, the one place, when the failure is transient: 429 and
5xx answers (honouring `Retry-After`), connection errors and timeouts. Waits are exponential
with full jitter, within a bounded number of tries and a total deadline (client-go's and
KubeSpawner's approach). A 4xx that says the request itself is wrong (400, 403, 404, 409, 410,
422) is the caller's to handle and is never retried. A retried write may already have been
applied before its answer was lost: callers treat 409 AlreadyExists on a create, and 404 on a
delete, as the success it may be."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from gateway.kube import objects
from gateway.logs import log_event

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
logger = logging.getLogger("gateway.kube-client")


class KubeError(Exception):
    """An API answer that is not a success (`status` its HTTP status), or no answer at all
    (`status` 0: no configuration, or the server stayed unreachable through every retry)."""

    def __init__(self, status: int, reason: str, message: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")
        self.status, self.reason, self.message = status, reason, message
        self.retry_after = retry_after  # seconds, when the server said (429, 503)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: try `tries` times within `deadline` seconds, waiting
    a random time in [0, min(cap, base * 2^(attempt-1))] between tries ("full jitter": replicas
    that failed together do not retry together), or what `Retry-After` asks for."""

    tries: int = 6
    base: float = 0.1  # seconds: the first wait's upper bound
    cap: float = 5.0  # seconds: no wait longer (unless Retry-After says so)
    deadline: float = 30.0  # seconds for every try and wait together
    request_timeout: float = 10.0  # seconds for one request, connection to last byte
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed try number `attempt` (1, 2, ...)."""
        if retry_after is not None:
            return retry_after + self.rng.uniform(0, self.base)  # as asked, spread a little
        return self.rng.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


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

    def __init__(self, api_client: client.ApiClient, namespace: str,
                 retry: RetryPolicy | None = None) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.retry = retry or RetryPolicy()
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

    async def _once(self, call: Callable[[float], Awaitable[Any]], timeout: float
                    ) -> dict[str, Any]:
        response = await call(timeout)
        try:
            body = await response.read()
        finally:
            response.release()
        try:
            data = json.loads(body) if body else {}
        except ValueError:  # a proxy's HTML page, a cut-off body: the status still speaks
            data = {}
        if not isinstance(data, dict):
            data = {}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, str(data.get("reason") or response.reason or ""),
                            str(data.get("message") or ""),
                            retry_after=_retry_after(response.headers.get("Retry-After")))
        return data

    async def _json(self, verb: str, resource: Resource, name: str | None,
                    call: Callable[[float], Awaitable[Any]]) -> dict[str, Any]:
        """One call, retried while the failure is transient (see the module's docstring)."""
        policy = self.retry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.deadline
        attempt = 0
        while True:
            attempt += 1
            left = deadline - loop.time()
            try:
                return await self._once(call, max(0.05, min(policy.request_timeout, left)))
            except KubeError as exc:
                if exc.status not in RETRIED_STATUSES:
                    raise
                failure: KubeError = exc
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if isinstance(exc, aiohttp.InvalidURL):
                    raise
                failure = KubeError(0, "Unreachable", f"{type(exc).__name__}: {exc}".rstrip(": "))
                failure.__cause__ = exc
            delay = policy.delay(attempt, failure.retry_after)
            if attempt >= policy.tries or loop.time() + delay > deadline:
                log_event(logger, "kube_request_failed", level=logging.WARNING, verb=verb,
                          resource=resource.plural, name=name, status=failure.status,
                          error=str(failure), attempts=attempt)
                raise failure
            log_event(logger, "kube_retry", level=logging.WARNING, verb=verb,
                      resource=resource.plural, name=name, status=failure.status,
                      error=str(failure), attempt=attempt, delay_ms=round(delay * 1000))
            await asyncio.sleep(delay)

    def _timed(self, resource: Resource, verb: str, *args: Any, **kwargs: Any
               ) -> Callable[[float], Awaitable[Any]]:
        """A fresh request per try, each with its own timeout."""
        return lambda timeout: self._call(resource, verb, *args, _request_timeout=timeout,
                                          **kwargs)

    async def create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        name = (body.get("metadata") or {}).get("name")
        return await self._json("create", resource, name, self._timed(resource, "create", body))

    async def get(self, resource: Resource, name: str) -> dict[str, Any]:
        verb = "get" if resource.api == "custom" else "read"
        return await self._json("get", resource, name, self._timed(resource, verb, name))

    async def list(self, resource: Resource, label_selector: str = "") -> dict[str, Any]:
        return await self._json("list", resource, None, self._timed(
            resource, "list", label_selector=label_selector))

    async def replace(self, resource: Resource, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("replace", resource, name,
                                self._timed(resource, "replace", name, body))

    async def patch(self, resource: Resource, name: str, body: dict[str, Any], *,
                    status: bool = False, content_type: str = MERGE) -> dict[str, Any]:
        # Explicit content type: the generated API would send a dict as json-patch (custom
        # objects) or strategic merge (core), and a real server rejects the former.
        return await self._json("patch", resource, name, self._timed(
            resource, "patch", name, body, status=status, _content_type=content_type))

    async def delete(self, resource: Resource, name: str, *, grace_seconds: int | None = None,
                     uid: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_seconds is not None:
            options["gracePeriodSeconds"] = grace_seconds
        if uid:
            options["preconditions"] = {"uid": uid}
        return await self._json("delete", resource, name,
                                self._timed(resource, "delete", name, body=options))

    async def watch(self, resource: Resource, resource_version: str, label_selector: str = "",
                    timeout_seconds: int = 300, idle_timeout: float | None = None
                    ) -> AsyncIterator[dict[str, Any]]:
        """Raw watch events ({"type", "object"}) from `resource_version` until the server ends
        the stream; an ERROR event is raised as KubeError (410: the version is gone). A stream
        that stays silent for `idle_timeout` seconds (a stalled watch: nothing, not even a
        bookmark) raises a timeout, so that the caller resumes it. Not retried here: the
        caller (the Informer) resumes or relists."""
        timeout = aiohttp.ClientTimeout(total=timeout_seconds + 30,
                                        sock_connect=self.retry.request_timeout,
                                        sock_read=idle_timeout)
        response = await self._call(resource, "list", label_selector=label_selector, watch=True,
                                    resource_version=resource_version,
                                    allow_watch_bookmarks=True, timeout_seconds=timeout_seconds,
                                    _request_timeout=timeout)
        try:
            if response.status != 200:
                try:
                    data = json.loads(await response.read() or b"{}")
                except ValueError:
                    data = {}
                data = data if isinstance(data, dict) else {}
                raise KubeError(response.status, str(data.get("reason") or ""),
                                str(data.get("message") or ""))
            while line := await response.content.readline():
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise KubeError(status.get("code", 500), status.get("reason", ""),
                                    status.get("message", ""))
                yield event
        finally:
            response.release()


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the API server sends whole seconds; HTTP dates are not used)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 3600 else None
