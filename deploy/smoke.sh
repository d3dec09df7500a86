#!/usr/bin/env bash
# End-to-end smoke test against a real cluster (kind or k3s), for people who have one; CI
# runs the same scenario against the in-process fake API server instead (tests/kube).
#
#   deploy/smoke.sh            # images already pullable by the cluster
#   BUILD=1 deploy/smoke.sh    # scripts/build-images (as root), then load them into kind
#
# Needs: kubectl (pointing at the cluster), python3 with this repository's test extra (aiortc,
# PyJWT: ./.venv after scripts/setup) for the viewer; podman, buildah, debootstrap and kind
# with BUILD=1.
# What it checks (what tests/images cannot: deploy/README.md): install with kubectl apply -k,
# a Session created through the gateway API becomes a running pod admitted at the restricted
# level, two containers on read-only roots; a real WebRTC viewer gets frames of the session
# size through the gateway; deleting it removes pod and Secret and keeps the user's volume.
set -euo pipefail

NS=gimp-streaming
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${TAG:-0.1.0}
APP=${APP:-gimp}
PORT=${PORT:-18080}
USER_ID=${USER_ID:-smoke-user}

step() { printf '\n== %s\n' "$*"; }
fail() { echo "smoke: $*" >&2; exit 1; }

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

if [ "${BUILD:-0}" = 1 ]; then
  step "building images"
  "$ROOT/scripts/build-images" gateway "session-$APP"
  for image in "ghcr.io/gimp-streaming-platform/gateway:$TAG" \
               "ghcr.io/gimp-streaming-platform/session-$APP:$TAG"; do
    archive=$(mktemp --suffix=.tar)
    podman save --format docker-archive -o "$archive" "$image"
    kind load image-archive "$archive"
    rm -f "$archive"
  done
fi

step "installing (kinds whose CRDs the cluster lacks, e.g. Istio, are left out)"
known=$(kubectl api-resources -o name)
kubectl kustomize "$ROOT/deploy" | "$PYTHON" -c '
import sys, yaml
known = set(sys.argv[1].split())
plural = {"Gateway": "gateways.networking.istio.io",
          "VirtualService": "virtualservices.networking.istio.io",
          "VolumeSnapshotClass": "volumesnapshotclasses.snapshot.storage.k8s.io"}
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
keep = [d for d in docs if d["kind"] not in plural or plural[d["kind"]] in known]
for d in docs:
    if d not in keep:
        print(f"skipping {d[\"kind\"]}/{d[\"metadata\"][\"name\"]}", file=sys.stderr)
yaml.safe_dump_all(keep, sys.stdout)
' "$known" | kubectl apply -f -
kubectl wait --for=condition=Established crd/sessions.streaming.platform --timeout=60s

step "adapting to a test cluster: node pool label, default StorageClass, no warm pool"
for node in $(kubectl get nodes -o name); do
  kubectl label --overwrite "$node" streaming.platform/pool=cpu >/dev/null
done
storage=$(kubectl get storageclass -o jsonpath='{.items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")].metadata.name}')
[ -n "$storage" ] || fail "the cluster has no default StorageClass"
kubectl -n "$NS" set env deployment/session-controller CONTROLLER_STORAGE_CLASS="$storage" \
  CONTROLLER_WARM_POOL= CONTROLLER_CLOUD_STORAGE=false
kubectl -n "$NS" rollout status deployment/session-controller --timeout=180s
kubectl -n "$NS" rollout status deployment/session-gateway --timeout=180s

step "creating a session through the gateway API"
kubectl -n "$NS" port-forward svc/session-gateway "$PORT:8080" >/dev/null 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
sleep 2
secret=$(kubectl -n "$NS" get secret gateway-secrets -o jsonpath='{.data.jwt-secret}' | base64 -d)
jwt=$("$PYTHON" -c 'import jwt, sys, time; print(jwt.encode({"sub": sys.argv[2], "exp": int(time.time()) + 3600}, sys.argv[1], "HS256"))' "$secret" "$USER_ID")
session=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/sessions" \
  -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
  -d "{\"application\":\"$APP\"}")
id=$(printf '%s' "$session" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "session $id"

step "waiting for it to run"
for _ in $(seq 1 180); do
  phase=$(kubectl -n "$NS" get session "$id" -o jsonpath='{.status.phase}')
  [ "$phase" = running ] && break
  [ "$phase" = failed ] && fail "session failed: $(kubectl -n "$NS" get session "$id" -o jsonpath='{.status.message}')"
  sleep 2
done
[ "$phase" = running ] || fail "session not running after 6 minutes"
kubectl -n "$NS" get session "$id" -o wide
pod=$(kubectl -n "$NS" get session "$id" -o jsonpath='{.status.podName}')
[ "$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.securityContext.runAsUser}')" = 1000 ] \
  || fail "pod does not run as uid 1000"
[ "$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[*].name}')" = "session app" ] \
  || fail "pod does not have the session and app containers"
[ "$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[*].securityContext.readOnlyRootFilesystem}')" = "true true" ] \
  || fail "pod's containers are not on read-only roots"
kubectl -n "$NS" exec "$pod" -c app -- sh -c 'touch /probe' 2>/dev/null \
  && fail "the app container can write to its root"
kubectl -n "$NS" exec "$pod" -c app -- sh -c 'test ! -e /var/run/agent/token' \
  || fail "the app container sees the agent token"
size=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[0].env[?(@.name=="SESSION_SIZE")].value}')

step "a WebRTC viewer gets frames through the gateway"
(cd "$ROOT" && "$PYTHON" - "http://127.0.0.1:$PORT/streaming/$id" "$jwt" "$size" <<'PY'
import asyncio, sys
from tests.whep_client import Viewer

async def main(url: str, jwt: str, size: str) -> None:
    viewer = Viewer(url, headers={"Authorization": f"Bearer {jwt}"})
    await viewer.connect()
    frame = await viewer.wait_for(lambda f: True, timeout=60)
    print(f"received frames of {frame.width}x{frame.height}")
    await viewer.close()
    if f"{frame.width}x{frame.height}" != size:
        sys.exit(f"smoke: frames are {frame.width}x{frame.height}, the session size is {size}")

asyncio.run(main(*sys.argv[1:]))
PY
)

step "deleting it: user data synced, pod and Secret gone, volume kept"
curl -fsS -X DELETE "http://127.0.0.1:$PORT/api/sessions/$id" -H "Authorization: Bearer $jwt" >/dev/null
kubectl -n "$NS" wait --for=delete "session/$id" --timeout=180s
kubectl -n "$NS" get pod "$pod" >/dev/null 2>&1 && fail "pod $pod still exists"
kubectl -n "$NS" get secret "$pod-agent" >/dev/null 2>&1 && fail "agent Secret still exists"
kubectl -n "$NS" get pvc -l "app=gimp-session,type=persistent" -o name | grep -q . \
  || fail "the user's volume is gone"
echo; echo "smoke: OK"
