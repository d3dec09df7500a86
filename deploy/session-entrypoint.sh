#!/bin/sh
# Session pod entrypoint: Xvfb on $DISPLAY with a framebuffer as large as the largest
# allowed resize, then the agent, which starts the window manager and the application.
# On SIGTERM (pod deletion) the agent stops the application, the X server goes, and the
# file system is synced so the user's home volume holds everything before the pod is gone.
set -eu

: "${DISPLAY:=:99}"
: "${AGENT_PORT:=6901}"
: "${APPLICATION:=gimp}"
: "${SESSION_SIZE:=1920x1080}"
: "${MAX_SIZE:=3840x2160}"

case "$APPLICATION" in
  gimp) default_launch="gimp --no-splash" ;;
  inkscape) default_launch="inkscape" ;;
  blender) default_launch="blender" ;;
  *) echo "session-entrypoint: unknown APPLICATION '$APPLICATION'" >&2; exit 2 ;;
esac
: "${SESSION_LAUNCH:=$default_launch}"

# The token comes from the per-session Secret, mounted as a file: never a plain env value in
# the pod spec. The agent reads it from its own environment.
if [ -n "${AGENT_TOKEN_FILE:-}" ]; then
  if [ ! -r "$AGENT_TOKEN_FILE" ]; then
    echo "session-entrypoint: cannot read AGENT_TOKEN_FILE $AGENT_TOKEN_FILE" >&2
    exit 2
  fi
  AGENT_TOKEN=$(cat "$AGENT_TOKEN_FILE")
  export AGENT_TOKEN
fi

number=${DISPLAY#:}
Xvfb "$DISPLAY" -screen 0 "${MAX_SIZE}x24" -nolisten tcp -noreset \
  +extension RANDR +extension DAMAGE +extension MIT-SHM &
xvfb=$!

waited=0
until [ -S "/tmp/.X11-unix/X$number" ]; do
  if ! kill -0 "$xvfb" 2>/dev/null; then
    echo "session-entrypoint: Xvfb on $DISPLAY exited" >&2
    exit 1
  fi
  waited=$((waited + 1))
  if [ "$waited" -gt 100 ]; then
    echo "session-entrypoint: Xvfb on $DISPLAY did not start within 10s" >&2
    kill "$xvfb" 2>/dev/null || true
    exit 1
  fi
  sleep 0.1
done

python3 -m session_agent --display "$DISPLAY" --host "${AGENT_HOST:-0.0.0.0}" \
  --port "$AGENT_PORT" --size "$SESSION_SIZE" --max-size "$MAX_SIZE" \
  --launch "$SESSION_LAUNCH" &
agent=$!

stop() {
  kill -TERM "$agent" 2>/dev/null || true
  wait "$agent" 2>/dev/null || true
  kill -TERM "$xvfb" 2>/dev/null || true
  wait "$xvfb" 2>/dev/null || true
  sync
  exit 0
}
trap stop TERM INT

# The pod lives as long as the agent: if it exits, so do we (and the kubelet restarts us).
status=0
wait "$agent" || status=$?
kill -TERM "$xvfb" 2>/dev/null || true
wait "$xvfb" 2>/dev/null || true
sync
exit "$status"
