"""An in-process Kubernetes API server (aiohttp) for the resources the platform uses.

It speaks the real REST + watch protocol so the production code runs unchanged through
`kubernetes_asyncio`, and it is strict where clients commonly go wrong: resourceVersion
preconditions (409), stale watches (410 as an ERROR event), a JSON object sent as
json-patch (400), strategic-merge patches on custom resources (415), invalid names and
labels (422), schema-invalid built-in objects (kubernetes-validate, strict), Sessions
checked against the CRD schema from deploy/ (with 1.30's validation ratcheting on updates), immutable pod specs, finalizers with
deletionTimestamp, graceful pod deletion through the kubelet, and owner-reference garbage
collection.

And it is as unreliable as real ones on demand: `fail_next` (the next N matching requests
answered with a status), `unreliable(...)` (a seeded fraction of mutating requests answered
500/503/429 with Retry-After or reset mid-connection, before or after the write is applied;
slow answers; stalled or slow watches; every fault drawn from one `random.Random(seed)` in
request order and recorded in `injected`, so a failure can be replayed), dropped watches and
compacted history. With `enforce(roles)` each caller is a ServiceAccount (by its bearer
token, see `kubeconfig(identity=...)`) held to its Role's rules (403 otherwise, recorded in
`denied`), so tests prove the components work with exactly the permissions deploy/ grants.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import importlib.resources
import json
import random
import re
import secrets
import socket
import struct
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from aiohttp import web

K8S_VERSION = "1.32.0"
GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # what Go's strconv.ParseBool accepts
CRD_PATH = Path(__file__).resolve().parents[2] / "deploy" / "base" / "crd-session.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Strategic-merge list keys for the fields the platform patches (from the API's patchMergeKey).
SMP_KEYS = {"ownerReferences": "uid", "containers": "name", "volumes": "name", "env": "name",
            "conditions": "type", "volumeMounts": "mountPath", "ports": "containerPort"}


@functools.cache
def strict_validator(kind: Kind) -> jsonschema.protocols.Validator:
    """The official strict schema of a built-in kind (kubernetes-validate's files), with its
    references inlined once (resolving them per object is most of the cost otherwise)."""
    root = importlib.resources.files(kubernetes_validate) / "kubernetes-json-schema" / \
        f"v{K8S_VERSION}-local-strict"
    api = f"{kind.group.split('.')[0]}-{kind.version}" if kind.group else kind.version
    schema = json.loads((root / f"{kind.kind.lower()}-{api}.json").read_text())
    definitions = json.loads((root / "_definitions.json").read_text())["$defs"]

    def inline(node: Any, seen: tuple[str, ...] = ()) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].split("/$defs/", 1)[1]
                return {} if name in seen else inline(definitions[name], (*seen, name))
            return {k: inline(v, seen) for k, v in node.items() if k not in ("$id", "$schema")}
        if isinstance(node, list):
            return [inline(v, seen) for v in node]
        return node

    return jsonschema.Draft202012Validator(inline(schema))


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = [
    Kind("", "v1", "pods", "Pod", status_subresource=True),
    Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status_subresource=True),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "services", "Service", status_subresource=True),
    Kind("", "v1", "configmaps", "ConfigMap"),
    Kind("", "v1", "events", "Event"),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    Kind("streaming.platform", "v1", "sessions", "Session", status_subresource=True),
]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy)."""
    return json.loads(json.dumps(obj))


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field_name: str = "") -> Any:
    """The subset of strategic merge patch the platform's built-in kinds need."""
    if isinstance(patch, list):
        if field_name == "finalizers":
            return list(dict.fromkeys([*(target or []), *patch]))
        key = SMP_KEYS.get(field_name)
        if key is None or not isinstance(target, list):
            return clone(patch)
        merged = {item.get(key): item for item in target}
        for item in patch:
            if item.get("$patch") == "delete":
                merged.pop(item.get(key), None)
            else:
                merged[item.get(key)] = strategic_merge_patch(merged.get(item.get(key)), item)
        return list(merged.values())
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


_MISSING = object()


def _at(doc: Any, path: Any) -> Any:
    """The value at a JSON path (a jsonschema error's absolute_path), or _MISSING."""
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return doc


def _fold_string_data(obj: dict[str, Any]) -> None:
    """A Secret's write-only stringData is stored base64-encoded in data, as a server does."""
    if obj.get("kind") == "Secret" and "stringData" in obj:
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(value.encode()).decode()


def parse_selector(text: str | None) -> list[tuple[str, str, str | None]]:
    """Label selector: k=v, k==v, k!=v, k, !k (comma-separated, all must match)."""
    rules: list[tuple[str, str, str | None]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if "!=" in part:
            k, v = part.split("!=", 1)
            rules.append(("!=", k.strip(), v.strip()))
        elif "=" in part:
            k, v = part.replace("==", "=").split("=", 1)
            rules.append(("=", k.strip(), v.strip()))
        elif part.startswith("!"):
            rules.append(("!", part[1:].strip(), None))
        else:
            rules.append(("exists", part, None))
    return rules


def matches(obj: dict[str, Any] | None, rules: list[tuple[str, str, str | None]]) -> bool:
    if obj is None:
        return False
    labels = obj["metadata"].get("labels") or {}
    for op, key, value in rules:
        if op == "=" and labels.get(key) != value:
            return False
        if op == "!=" and labels.get(key) == value:
            return False
        if op == "exists" and key not in labels:
            return False
        if op == "!" and key in labels:
            return False
    return True


@dataclass
class Fault:
    method: str | None
    path_contains: str
    remaining: int
    code: int = 500  # 0: reset the connection instead of answering
    retry_after: int | None = None


@dataclass(frozen=True)
class Unreliable:
    """How unreliable the server is (all rates are fractions, 0..1)."""

    seed: int = 0
    error_rate: float = 0.0  # mutating requests answered 500, 503 (Retry-After) or 429 (Retry-After)
    reset_rate: float = 0.0  # mutating requests whose connection is reset (no answer at all)
    applied_rate: float = 0.5  # of those faulted, the share applied first (only the answer is lost)
    slow_rate: float = 0.0  # requests (not watches) answered only after `slow_s`
    slow_s: float = 0.0
    retry_after: int = 1  # seconds, on 429 and 503
    watch_stall_rate: float = 0.0  # watches that send nothing (not even an error) until dropped
    watch_delay_s: float = 0.0  # every watch event is held back this long
    codes: tuple[int, ...] = (500, 503, 429)

    def draw(self, rng: random.Random, mutating: bool) -> tuple[str | None, bool, bool]:
        """(fault, applied, slow) for one request: fault is a status ("500"), "reset" or None."""
        slow = rng.random() < self.slow_rate
        fault = None
        if mutating:
            r = rng.random()
            if r < self.error_rate:
                fault = str(rng.choice(self.codes))
            elif r < self.error_rate + self.reset_rate:
                fault = "reset"
        applied = fault is not None and rng.random() < self.applied_rate
        return fault, applied, slow


@dataclass(eq=False)
class Gate:
    """Holds matching requests until released, one by one or all: races staged on purpose."""

    method: str | None
    path_contains: str
    held: list[asyncio.Future] = field(default_factory=list)
    passed: int = 0  # released, or arrived after `release()` opened it for good
    open: bool = False

    def matches(self, request: web.Request) -> bool:
        return self.method in (None, request.method) and self.path_contains in request.path_qs

    async def wait(self) -> None:
        if self.open:
            self.passed += 1
            return
        future = asyncio.get_running_loop().create_future()
        self.held.append(future)
        await future

    def release(self, count: int | None = None) -> None:
        """Let the first `count` held requests through (None: all, now and from now on)."""
        if count is None:
            self.open = True
        for future in self.held[:len(self.held) if count is None else count]:
            self.held.remove(future)
            self.passed += 1
            future.set_result(None)

    async def arrivals(self, count: int) -> None:
        """Until `count` requests have reached the gate (held or let through)."""
        while len(self.held) + self.passed < count:
            await asyncio.sleep(0.005)


MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ADMIN_TOKEN = "fake-token"  # the tests' own client: a cluster admin, like kubectl


def token_of(identity: str) -> str:
    return f"serviceaccount-{identity}"


@dataclass(eq=False)
class Watcher:
    kind: Kind
    namespace: str | None
    selector: list[tuple[str, str, str | None]]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    stalled: bool = False  # sends nothing until dropped (unreliable mode)


class FakeKube:
    """The object store and its HTTP face. `url` is set once `start()` has bound a free port."""

    def __init__(self, history: int = 50_000) -> None:
        self.kinds = {(k.group, k.version, k.plural): k for k in KINDS}
        self.store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k.plural: {} for k in KINDS}
        self.rv = 0
        self.history: deque[tuple[int, Kind, str, dict[str, Any], dict[str, Any] | None]] = deque(
            maxlen=history)
        self.watchers: set[Watcher] = set()
        self.faults: list[Fault] = []
        self.gates: list[Gate] = []
        self.chaos = Unreliable()
        self.rng = random.Random(0)
        self.injected: list[tuple[str, str, str]] = []  # (method, path, fault), in order
        self.roles: dict[str, list[dict[str, Any]]] | None = None  # identity -> rules
        self.denied: list[tuple[str, str, str, str]] = []  # (identity, verb, resource, name)
        self.requests = 0
        self.pod_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self.session_validator = jsonschema.Draft7Validator(self._load_session_schema())
        self.url = ""
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", r"/api/{version}/namespaces/{ns}/{plural}", self._collection)
        app.router.add_route("*", r"/api/{version}/namespaces/{ns}/{plural}/{name}", self._item)
        app.router.add_route("*", r"/api/{version}/namespaces/{ns}/{plural}/{name}/status",
                             self._status)
        app.router.add_route("*", r"/apis/{group}/{version}/namespaces/{ns}/{plural}",
                             self._collection)
        app.router.add_route("*", r"/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
                             self._item)
        app.router.add_route(
            "*", r"/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/status", self._status)
        app.router.add_get("/version", self._version)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for gate in self.gates:
            gate.release()
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: Path, namespace: str, identity: str | None = None) -> Path:
        """A kubeconfig pointing at this server, for the standard loading path: as the admin,
        or as the ServiceAccount `identity` (held to its Role once `enforce` is on)."""
        token = ADMIN_TOKEN if identity is None else token_of(identity)
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake",
                                                      "namespace": namespace}}],
        }))
        return path

    # ---- fault injection -------------------------------------------------------------------
    def fail_next(self, count: int, method: str | None = None, path_contains: str = "",
                  code: int = 500, retry_after: int | None = None) -> None:
        self.faults.append(Fault(method, path_contains, count, code, retry_after))

    def hold(self, method: str | None = None, path_contains: str = "") -> Gate:
        """Hold the matching requests at the door until the Gate releases them."""
        gate = Gate(method, path_contains)
        self.gates.append(gate)
        return gate

    def unreliable(self, **settings: Any) -> Unreliable:
        """Misbehave from now on as `Unreliable(**settings)` says, with a fresh seeded draw
        sequence; `unreliable()` alone makes the server reliable again."""
        self.chaos = Unreliable(**settings)
        self.rng = random.Random(self.chaos.seed)
        return self.chaos

    def enforce(self, roles: dict[str, list[dict[str, Any]]]) -> None:
        """Hold every caller but the admin to the rules of its identity (tests/kube/rbac.py
        reads them from deploy/base/rbac.yaml)."""
        self.roles = roles

    def drop_watches(self) -> None:
        """End every open watch stream, as an apiserver restart or a load balancer would."""
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the event history, so a watch from an older resourceVersion gets 410 Gone."""
        self.history.clear()

    # ---- direct store access (the kubelet and test assertions) -----------------------------
    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [clone(o) for (ns, _), o in self.store[plural].items()
                if namespace in (None, ns)]

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.store[plural].get((namespace, name))
        return clone(obj) if obj else None

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any],
                   spec_patch: dict[str, Any] | None = None) -> None:
        """What a node component does with its own write path (status, and the binding)."""
        obj = self.store[plural].get((namespace, name))
        if obj is None:
            return
        new = clone(obj)
        new["status"] = status
        if spec_patch:
            new["spec"] = merge_patch(new["spec"], spec_patch)
        self._commit(self._kind(plural), new, "MODIFIED", obj)

    def inject(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as it is, unvalidated, and tell the watchers: what a server with an
        older or looser schema, or a buggy writer, leaves for the components to read."""
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        old = self.store[plural].get((namespace, meta["name"]))
        self._commit(self._kind(plural), obj, "MODIFIED" if old else "ADDED", old)
        return clone(obj)

    def finish_delete(self, plural: str, namespace: str, name: str) -> None:
        obj = self.store[plural].get((namespace, name))
        if obj is not None:
            self._remove(self._kind(plural), obj)

    # ---- HTTP ------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Awaitable[Any]]
                          ) -> web.StreamResponse:
        self.requests += 1
        try:
            self._authorize(request)
        except ApiError as err:
            return web.json_response(err.status(), status=err.code)
        for gate in self.gates:
            if gate.matches(request):
                await gate.wait()
        for fault in self.faults:
            if fault.remaining > 0 and fault.method in (None, request.method) \
                    and fault.path_contains in request.path_qs:
                fault.remaining -= 1
                if fault.code == 0:
                    return self._fault(request, "reset")
                self.injected.append((request.method, request.path_qs, str(fault.code)))
                err = ApiError(fault.code, "InternalError", "injected fault")
                headers = None if fault.retry_after is None else {
                    "Retry-After": str(fault.retry_after)}
                return web.json_response(err.status(), status=err.code, headers=headers)
        watch = request.query.get("watch") in GO_TRUE
        fault, applied, slow = self.chaos.draw(self.rng, request.method in MUTATING)
        slow = slow and not watch
        if slow:  # the request arrives whole and is served; its answer is what comes late
            self.injected.append((request.method, request.path_qs, "slow"))
            await request.read()
        if fault is not None and not applied:
            response = self._fault(request, fault)
        else:
            try:
                response = await handler(request)
            except ApiError as err:
                response = web.json_response(err.status(), status=err.code)
            if fault is not None:
                response = self._fault(request, f"{fault} after the write")
        if slow:
            await asyncio.sleep(self.chaos.slow_s)
        return response

    def _fault(self, request: web.Request, fault: str) -> web.StreamResponse:
        self.injected.append((request.method, request.path_qs, fault))
        if fault.startswith("reset"):
            sock = request.transport.get_extra_info("socket") if request.transport else None
            if sock is not None:  # SO_LINGER 0: close with a TCP RST, as a dying proxy does
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        code = int(fault.split()[0])
        reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(code, "InternalError")
        err = ApiError(code, reason, "injected fault")
        headers = {"Retry-After": str(self.chaos.retry_after)} if code in (429, 503) else None
        return web.json_response(err.status(), status=code, headers=headers)

    def _authorize(self, request: web.Request) -> None:
        """RBAC, as the API server's authorizer does it for namespaced resources."""
        if self.roles is None:
            return
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token == ADMIN_TOKEN:
            return
        identity = next((i for i in self.roles if token_of(i) == token), None)
        if identity is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        info = request.match_info
        if "plural" not in info:
            return  # discovery (/version): every authenticated caller may
        name = info.get("name", "")
        resource = info["plural"] + ("/status" if request.path.endswith("/status") and name
                                     else "")
        if request.method == "GET":
            verb = "get" if name else (
                "watch" if request.query.get("watch") in GO_TRUE else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(
                request.method, "delete" if name else "deletecollection")
        group = info.get("group", "")
        for rule in self.roles[identity]:
            if (group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", [])) and \
                    (resource in rule.get("resources", []) or "*" in rule.get("resources", [])) and \
                    (verb in rule.get("verbs", []) or "*" in rule.get("verbs", [])) and \
                    (not rule.get("resourceNames") or name in rule["resourceNames"]):
                return
        self.denied.append((identity, verb, resource, name))
        raise ApiError(403, "Forbidden", f'{resource} "{name}" is forbidden: User '
                                         f'"system:serviceaccount:{info["ns"]}:{identity}" cannot '
                                         f'{verb} resource "{resource}" in API group "{group}" '
                                         f'in the namespace "{info["ns"]}"')

    async def _version(self, request: web.Request) -> web.Response:
        major, minor, _ = K8S_VERSION.split(".")
        return web.json_response({"major": major, "minor": minor, "gitVersion": f"v{K8S_VERSION}"})

    def _route(self, request: web.Request) -> tuple[Kind, str]:
        info = request.match_info
        key = (info.get("group", ""), info["version"], info["plural"])
        if key not in self.kinds:
            raise ApiError(404, "NotFound",
                           f"the server could not find the requested resource {key}")
        return self.kinds[key], info["ns"]

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        kind, ns = self._route(request)
        if request.method == "GET":
            if request.query.get("watch") in GO_TRUE:
                return await self._watch(request, kind, ns)
            rules = parse_selector(request.query.get("labelSelector"))
            items = [o for (ons, _), o in self.store[kind.plural].items()
                     if ons == ns and matches(o, rules)]
            return self._json({"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                               "metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if request.method == "POST":
            body = await self._body(request)
            return self._json(self._create(kind, ns, body), 201)
        raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    async def _item(self, request: web.Request) -> web.Response:
        return await self._object(request, subresource=False)

    async def _status(self, request: web.Request) -> web.Response:
        kind, _ = self._route(request)
        if not kind.status_subresource:
            raise ApiError(404, "NotFound", f"{kind.plural} has no status subresource")
        return await self._object(request, subresource=True)

    async def _object(self, request: web.Request, subresource: bool) -> web.Response:
        kind, ns = self._route(request)
        name = request.match_info["name"]
        current = self.store[kind.plural].get((ns, name))
        if request.method == "GET":
            if current is None:
                raise self._not_found(kind, name)
            return self._json(current)
        if request.method == "DELETE":
            if subresource:
                raise ApiError(405, "MethodNotAllowed", "cannot delete a status subresource")
            options = await self._body(request) if request.can_read_body else {}
            return self._json(self._delete(kind, ns, name, options or {}))
        if current is None:
            raise self._not_found(kind, name)
        body = await self._body(request)
        if request.method == "PUT":
            new = clone(body)
        elif request.method == "PATCH":
            new = self._apply_patch(kind, current, body, request.content_type)
        else:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not allowed here")
        return self._json(self._update(kind, current, new, subresource))

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from exc

    def _json(self, body: Any, status: int = 200) -> web.Response:
        return web.Response(body=json.dumps(body).encode(), status=status,
                            content_type="application/json")

    def _not_found(self, kind: Kind, name: str) -> ApiError:
        return ApiError(404, "NotFound", f'{kind.plural} "{name}" not found')

    # ---- semantics -------------------------------------------------------------------------
    def _kind(self, plural: str) -> Kind:
        return next(k for k in KINDS if k.plural == plural)

    def _apply_patch(self, kind: Kind, current: dict[str, Any], body: Any,
                     content_type: str) -> dict[str, Any]:
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest",
                               "json: cannot unmarshal object into Go value of type "
                               "[]handlers.jsonPatchOp")
            raise ApiError(415, "UnsupportedMediaType", "this fake does not apply JSON patches")
        if content_type == "application/merge-patch+json":
            return merge_patch(current, body)
        if content_type == "application/strategic-merge-patch+json":
            if kind.group == "streaming.platform":
                raise ApiError(415, "UnsupportedMediaType",
                               "strategic merge patch is not supported for custom resources")
            return strategic_merge_patch(current, body)
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format ({content_type}) - "
                       f"accepted media types include: application/json-patch+json, "
                       f"application/merge-patch+json, application/strategic-merge-patch+json")

    def _create(self, kind: Kind, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "body must be an object")
        obj = clone(body)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the "
                                              "namespace on the request")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value: name or generateName "
                                           "is required")
        if (ns, name) in self.store[kind.plural]:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        if kind.status_subresource and kind.group:
            obj.pop("status", None)
        _fold_string_data(obj)
        self._validate(kind, obj)
        self._commit(kind, obj, "ADDED", None)
        return obj

    def _update(self, kind: Kind, current: dict[str, Any], new: dict[str, Any],
                subresource: bool) -> dict[str, Any]:
        meta = new.get("metadata") or {}
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {kind.plural} '
                                            f'"{current["metadata"]["name"]}": the object has been '
                                            f'modified; please apply your changes to the latest '
                                            f'version and try again')
        if meta.get("name", current["metadata"]["name"]) != current["metadata"]["name"]:
            raise ApiError(400, "BadRequest", "the name of the object does not match the request")
        if subresource:
            result = clone(current)
            result["status"] = new.get("status")
        else:
            result = clone(new)
            result["apiVersion"], result["kind"] = kind.api_version, kind.kind
            rmeta = result.setdefault("metadata", {})
            for key in ("uid", "creationTimestamp", "namespace", "deletionTimestamp",
                        "deletionGracePeriodSeconds", "generation"):
                if key in current["metadata"]:
                    rmeta[key] = current["metadata"][key]
                else:
                    rmeta.pop(key, None)
            if kind.status_subresource:
                result["status"] = clone(current.get("status"))
                if result["status"] is None:
                    result.pop("status")
            if kind.plural == "pods" and result.get("spec") != current.get("spec"):
                raise ApiError(422, "Invalid", "Pod is invalid: spec: Forbidden: pod updates may "
                                               "not change fields other than image, "
                                               "activeDeadlineSeconds, tolerations")
            if result.get("spec") != current.get("spec"):
                rmeta["generation"] = current["metadata"].get("generation", 1) + 1
            if current["metadata"].get("deletionTimestamp"):
                added = set(rmeta.get("finalizers") or []) - set(
                    current["metadata"].get("finalizers") or [])
                if added:
                    raise ApiError(422, "Invalid", "metadata.finalizers: Forbidden: no new "
                                                   "finalizers can be added if the object is "
                                                   "being deleted")
        _fold_string_data(result)
        self._validate(kind, result, current)
        result["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if result == current:  # a no-op write keeps its resourceVersion, like a real server
            return result
        self._commit(kind, result, "MODIFIED", current)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get(
                "finalizers") and not self._kubelet_owns(kind, result):
            self._remove(kind, result)
        return result

    def _kubelet_owns(self, kind: Kind, obj: dict[str, Any]) -> bool:
        return kind.plural == "pods" and bool(obj.get("spec", {}).get("nodeName")) and \
            bool(self.pod_listeners)

    def _delete(self, kind: Kind, ns: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        current = self.store[kind.plural].get((ns, name))
        if current is None:
            raise self._not_found(kind, name)
        pre = (options.get("preconditions") or {})
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", "Precondition failed: UID in precondition does not "
                                            "match the object")
        if pre.get("resourceVersion") and pre["resourceVersion"] != \
                current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "Precondition failed: resourceVersion mismatch")
        grace = options.get("gracePeriodSeconds")
        kubelet = self._kubelet_owns(kind, current) and grace != 0
        if current["metadata"].get("finalizers") or kubelet:
            if current["metadata"].get("deletionTimestamp"):
                return current
            new = clone(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 30 if grace is None else grace
            self._commit(kind, new, "MODIFIED", current)
            return new
        self._remove(kind, current)
        return current

    def _remove(self, kind: Kind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        del self.store[kind.plural][(meta["namespace"], meta["name"])]
        gone = clone(obj)
        self.rv += 1
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._publish(kind, "DELETED", gone, obj)
        self._collect_garbage(meta["uid"])

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascade: a dependent whose owners are all gone is deleted."""
        live = {o["metadata"]["uid"] for objs in self.store.values() for o in objs.values()}
        for plural, objs in self.store.items():
            for (ns, name), obj in list(objs.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in owners) and \
                        not any(r.get("uid") in live for r in owners):
                    if (ns, name) in objs:
                        self._delete(self._kind(plural), ns, name, {})

    def _commit(self, kind: Kind, obj: dict[str, Any], event: str,
                old: dict[str, Any] | None) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        self.store[kind.plural][(meta["namespace"], meta["name"])] = obj
        self._publish(kind, event, obj, old)

    def _publish(self, kind: Kind, event: str, obj: dict[str, Any],
                 old: dict[str, Any] | None) -> None:
        self.history.append((self.rv, kind, event, obj, old))
        for watcher in self.watchers:
            self._offer(watcher, kind, event, obj, old)
        if kind.plural == "pods":
            for listener in self.pod_listeners:
                listener(event, clone(obj))

    def _offer(self, watcher: Watcher, kind: Kind, event: str, obj: dict[str, Any],
               old: dict[str, Any] | None) -> None:
        """Deliver with the selector semantics of a real watch (leaving the selector = DELETED)."""
        if watcher.kind != kind or watcher.namespace not in (None, obj["metadata"]["namespace"]):
            return
        now_in, was_in = matches(obj, watcher.selector), matches(old, watcher.selector)
        if event == "MODIFIED" and now_in and not was_in:
            event = "ADDED"
        elif event == "MODIFIED" and was_in and not now_in:
            event = "DELETED"
        elif not now_in and not (event == "DELETED" and was_in):
            return
        watcher.queue.put_nowait(json.dumps({"type": event, "object": obj}).encode() + b"\n")

    async def _watch(self, request: web.Request, kind: Kind, ns: str) -> web.StreamResponse:
        watcher = Watcher(kind, ns, parse_selector(request.query.get("labelSelector")),
                          stalled=self.rng.random() < self.chaos.watch_stall_rate)
        if watcher.stalled:
            self.injected.append((request.method, request.path_qs, "stalled watch"))
        rv = request.query.get("resourceVersion")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if rv in (None, "", "0"):
            for obj in list(self.store[kind.plural].values()):
                if obj["metadata"]["namespace"] == ns and matches(obj, watcher.selector):
                    watcher.queue.put_nowait(
                        json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        else:
            since = int(rv)
            oldest = self.history[0][0] if self.history else self.rv + 1
            if since < oldest - 1 and since < self.rv:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
                await response.write(json.dumps({"type": "ERROR", "object": gone.status()}
                                                ).encode() + b"\n")
                return response
            for item_rv, ekind, event, obj, old in list(self.history):
                if item_rv > since:
                    self._offer(watcher, ekind, event, obj, old)
        self.watchers.add(watcher)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = await watcher.queue.get()
                    if line is None:
                        break
                    if watcher.stalled:  # a hung stream: open, but nothing ever arrives
                        if request.transport is None or request.transport.is_closing():
                            break  # the client gave up on it
                        continue
                    if self.chaos.watch_delay_s:
                        await asyncio.sleep(self.chaos.watch_delay_s)
                    await response.write(line)
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watchers.discard(watcher)
        return response

    # ---- validation ------------------------------------------------------------------------
    def _load_session_schema(self) -> dict[str, Any]:
        crd = yaml.safe_load(CRD_PATH.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        return version["schema"]["openAPIV3Schema"]

    def _validate(self, kind: Kind, obj: dict[str, Any],
                  old: dict[str, Any] | None = None) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        pattern = DNS_LABEL if kind.plural in ("pods", "services") else DNS_SUBDOMAIN
        if len(name) > 253 or not pattern.match(name) or (
                kind.plural == "services" and len(name) > 63):
            raise ApiError(422, "Invalid", f'metadata.name: Invalid value: "{name}": a lowercase '
                                           f'RFC 1123 name must consist of lower case alphanumeric '
                                           f"characters or '-'")
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, label = key.rpartition("/")
            if (prefix and not DNS_SUBDOMAIN.match(prefix)) or not label or len(label) > 63 \
                    or not LABEL_VALUE.match(label):
                raise ApiError(422, "Invalid", f'metadata.labels: Invalid value: "{key}": not '
                                               f'a qualified name')
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                raise ApiError(422, "Invalid", f'metadata.labels: Invalid value: "{value}": a '
                                               f'valid label must be 63 characters or less')
        if kind.plural == "sessions":
            errors = self.session_validator.iter_errors(obj)
            if old is not None:  # validation ratcheting (1.30+): what an update left alone passes
                errors = (e for e in list(errors)
                          if _at(obj, e.absolute_path) != _at(old, e.absolute_path))
            error = jsonschema.exceptions.best_match(errors)
            if error is not None:
                path = ".".join(str(p) for p in error.absolute_path)
                raise ApiError(422, "Invalid", f"Session.streaming.platform \"{name}\" is "
                                               f"invalid: {path}: {error.message}")
            return
        error = jsonschema.exceptions.best_match(strict_validator(kind).iter_errors(obj))
        if error is not None:
            path = ".".join(str(p) for p in error.absolute_path)
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: {path}: {error.message}")
        if kind.plural == "pods":
            for container in obj["spec"].get("containers", []) + obj["spec"].get(
                    "initContainers", []):
                for section in ("requests", "limits"):
                    for res, qty in (container.get("resources", {}).get(section) or {}).items():
                        if "/" in res and not re.fullmatch(r"\d+", str(qty)):
                            raise ApiError(422, "Invalid", f"Pod is invalid: spec.containers."
                                                           f"resources.{section}[{res}]: Invalid "
                                                           f"value: {qty}: must be an integer")
