#!/usr/bin/env bash
# End-to-end smoke test against a real cluster (kind or k3s), for people who have one; CI
# runs the same scenario against the in-process fake API server instead (tests/kube).
#
#   deploy/smoke.sh            # images already pullable by the cluster
#   BUILD=1 deploy/smoke.sh    # docker build both images and `kind load` them first
#
# Needs: kubectl (pointing at the cluster), python3 with this repository's dependencies
# (aiortc, PyJWT) for the viewer; docker and kind with BUILD=1.
# What it checks: install with kubectl apply -k, a Session created through the gateway API
# becomes a running, restricted pod; a real WebRTC viewer gets frames through the gateway;
# deleting it removes pod and Secret and keeps the user's volume.
set -euo pipefail

NS=gimp-streaming
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${TAG:-0.1.0}
APP=${APP:-gimp}
PORT=${PORT:-18080}
USER_ID=${USER_ID:-smoke-user}

step() { printf '\n== %s\n' "$*"; }
fail() { echo "smoke: $*" >&2; exit 1; }

if [ "${BUILD:-0}" = 1 ]; then
  step "building images"
  docker build -f "$ROOT/Dockerfile.gateway" -t "ghcr.io/gimp-streaming-platform/gateway:$TAG" "$ROOT"
  docker build -f "$ROOT/Dockerfile.session" --build-arg "APPLICATION=$APP" \
    -t "ghcr.io/gimp-streaming-platform/session-$APP:$TAG" "$ROOT"
  kind load docker-image "ghcr.io/gimp-streaming-platform/gateway:$TAG" \
    "ghcr.io/gimp-streaming-platform/session-$APP:$TAG"
fi

step "installing (kinds whose CRDs the cluster lacks, e.g. Istio, are left out)"
known=$(kubectl api-resources -o name)
kubectl kustomize "$ROOT/deploy" | python3 -c '
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
jwt=$(python3 -c 'import jwt, sys, time; print(jwt.encode({"sub": sys.argv[2], "exp": int(time.time()) + 3600}, sys.argv[1], "HS256"))' "$secret" "$USER_ID")
session=$(curl -fsS -X POST "http://127.0.0.1:$PORT/api/sessions" \
  -H "Authorization: Bearer $jwt" -H 'Content-Type: application/json' \
  -d "{\"application\":\"$APP\"}")
id=$(printf '%s' "$session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
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

step "a WebRTC viewer gets frames through the gateway"
(cd "$ROOT" && python3 - "http://127.0.0.1:$PORT/streaming/$id/whep" "$jwt" <<'PY'
import asyncio, sys
import aiohttp
from tests.gateway.whep_client import connect

async def main(url: str, jwt: str) -> None:
    async with aiohttp.ClientSession() as http:
        viewer = await connect(http, url, {"Authorization": f"Bearer {jwt}"})
        frames = await viewer.frames(5, timeout=60)
        print(f"received {len(frames)} frames of {frames[0].width}x{frames[0].height}")
        await viewer.close()

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
