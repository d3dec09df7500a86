#!/bin/sh
# The session image's entrypoint. One script, three uses:
#
#   session-entrypoint session   the pod's `session` container: Xvfb on $DISPLAY (framebuffer
#                                MAX_SIZE, access only with the cookie it writes to $XAUTHORITY),
#                                then the agent, which sets the screen to SESSION_SIZE and runs
#                                the window manager
#   session-entrypoint app       the pod's `app` container: waits for that X server (socket,
#                                cookie and the agent's ready file in the shared volume), then
#                                runs the application in a D-Bus session
#   session-entrypoint           both in one container (`podman run IMAGE`; tests on a machine)
#
# SIGTERM/SIGINT (pod deletion) stop what was started, newest first, sync the file system so the
# home volume holds everything, and exit 0; they do so from the first line on.
set -eu

children=""  # pids to stop, newest first

# Stops what was started, newest first; a child that leads a process group (the application)
# is stopped with its group.
cleanup() {
  for pid in $children; do
    kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  children=""
  sync
}
stop() { trap - TERM INT; cleanup; exit 0; }
# First thing: as PID 1 the shell ignores a signal it has no handler for, so a pod deleted
# while starting would wait out its whole grace period.
trap stop TERM INT

role=${1:-all}
: "${DISPLAY:=:99}"
: "${XAUTHORITY:=/tmp/.X11-unix/Xauthority}"
: "${AGENT_PORT:=6901}"
: "${APPLICATION:=gimp}"
: "${SESSION_SIZE:=1920x1080}"
: "${MAX_SIZE:=$SESSION_SIZE}"  # Xvfb's framebuffer: memory every pod pays (deploy/README.md)
export DISPLAY XAUTHORITY
number=${DISPLAY#:}
number=${number%%.*}
socket=/tmp/.X11-unix/X$number
# Written by the agent once the screen has SESSION_SIZE and the window manager runs (and
# removed when it exits): an application mapped before that is placed on the framebuffer's
# size, unfocused (its dialogs half off the screen, out of the keyboard's reach).
ready=$socket.ready

die() { echo "session-entrypoint: $*" >&2; trap - TERM INT; cleanup; exit "${status:-1}"; }

case "$role" in
  all|session|app) ;;
  *) status=2 die "unknown role '$role' (expected session, app or nothing)" ;;
esac
case "$APPLICATION" in
  gimp) default_launch="gimp --no-splash" ;;
  inkscape) default_launch="inkscape" ;;
  blender) default_launch="blender" ;;
  *) status=2 die "unknown APPLICATION '$APPLICATION'" ;;
esac
: "${SESSION_LAUNCH:=$default_launch}"

# D-Bus and GLib want a machine id; the root is read-only, so /etc/machine-id points here.
if [ ! -s /tmp/machine-id ]; then
  tr -d '-' < /proc/sys/kernel/random/uuid > /tmp/machine-id 2>/dev/null || true
fi

started() { children="$1 $children"; }

start_display() {
  # The token comes from the per-session Secret, mounted as a file in this container only; the
  # agent takes it from its environment and never hands it to what it starts.
  if [ -n "${AGENT_TOKEN_FILE:-}" ]; then
    [ -r "$AGENT_TOKEN_FILE" ] || status=2 die "cannot read AGENT_TOKEN_FILE $AGENT_TOKEN_FILE"
    AGENT_TOKEN=$(cat "$AGENT_TOKEN_FILE")
    export AGENT_TOKEN
  fi
  # X access by cookie: the app container (another PID namespace) connects through the socket
  # in the shared X volume with the cookie written there. Two entries: one bound to the host
  # name (python-xlib matches only those; a pod's containers share its host name) and a
  # wildcard one (libX11/xcb, whatever the host name).
  cookie=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  hexnumber=$(printf '%s' "$number" | od -An -tx1 | tr -d ' \n')
  (
    umask 077
    rm -f "$XAUTHORITY"
    : > "$XAUTHORITY"
    xauth -q -f "$XAUTHORITY" add "$DISPLAY" MIT-MAGIC-COOKIE-1 "$cookie"
    printf 'ffff 0000 %04x %s 0012 4d49542d4d414749432d434f4f4b49452d31 0010 %s\n' \
      "${#number}" "$hexnumber" "$cookie" | xauth -q -f "$XAUTHORITY" nmerge -
  ) || die "cannot write the X cookie to $XAUTHORITY"
  # Only the socket in the X directory: no TCP, and no abstract socket (that would reach
  # every process in the pod's network namespace, the sidecar's too).
  # A restarted container keeps its /tmp volume: a lock left by the last Xvfb names a PID that
  # may now be another process of this new PID namespace, and Xvfb would refuse to start.
  rm -f "/tmp/.X$number-lock" "$socket" "$ready"
  # GLX loads Mesa into Xvfb: 10 MB of memory in every pod, needed by Blender alone (it draws
  # with OpenGL); GIMP and Inkscape do without (deploy/README.md, "Density").
  glx="-extension GLX"
  [ "${APPLICATION:-}" = blender ] && glx="+extension GLX"
  # shellcheck disable=SC2086  # $glx is two words
  Xvfb "$DISPLAY" -screen 0 "${MAX_SIZE}x24" -auth "$XAUTHORITY" -nolisten tcp -nolisten local \
    -noreset +extension RANDR +extension DAMAGE +extension MIT-SHM $glx &
  xvfb=$!
  started "$xvfb"
  waited=0
  until [ -S "$socket" ]; do
    kill -0 "$xvfb" 2>/dev/null || die "Xvfb on $DISPLAY exited"
    waited=$((waited + 1))
    [ "$waited" -le 100 ] || die "Xvfb on $DISPLAY did not start within 10s"
    sleep 0.1
  done
}

wait_for_display() {
  waited=0
  until [ -S "$socket" ] && [ -s "$XAUTHORITY" ] && [ -s "$ready" ]; do
    waited=$((waited + 1))
    [ "$waited" -le "${APP_WAIT_TENTHS:-1200}" ] ||
      die "no X server ready on $DISPLAY ($socket, $XAUTHORITY, $ready)"
    sleep 0.1
  done
}

# The application: in a D-Bus session of its own, files group-writable (the home volume is
# shared with the session container).
app_command() {
  if command -v dbus-run-session >/dev/null; then
    printf 'dbus-run-session -- %s' "$SESSION_LAUNCH"
  else
    printf '%s' "$SESSION_LAUNCH"
  fi
}

agent() {
  python3 -m session_agent --display "$DISPLAY" --host "${AGENT_HOST:-0.0.0.0}" \
    --port "$AGENT_PORT" --size "$SESSION_SIZE" --max-size "$MAX_SIZE" "$@" &
  started "$!"
}

case "$role" in
  session)
    start_display
    agent --window-manager --ready-file "$ready"
    ;;
  app)
    wait_for_display
    export XDG_RUNTIME_DIR="/tmp/runtime-$(id -u)"
    mkdir -p -m 0700 "$XDG_RUNTIME_DIR"
    umask 002
    cd "$HOME" 2>/dev/null || true
    # A process group of its own: stopping it reaches the D-Bus daemon and plug-ins too.
    setsid sh -c "exec $(app_command)" &
    started "$!"
    ;;
  all)
    start_display
    agent --launch "$(app_command)"
    ;;
esac

# The container lives as long as its main process (the agent, or the application): when it
# exits, so do we, with its status (and the kubelet restarts the container).
main=${children%% *}
status=0
wait "$main" || status=$?
trap - TERM INT
cleanup
exit "$status"
