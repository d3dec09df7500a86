"""What a two-container session pod's status means for its Session (controller/podstatus.py):
the session container (Xvfb and the agent) decides readiness; an application that crashes is
restarted by the kubelet meanwhile; one that keeps crashing fails the session."""
from __future__ import annotations

from gateway.controller.podstatus import read_pod


def pod(session: dict, app: dict, ready: bool) -> dict:
    return {"status": {
        "phase": "Running", "podIP": "10.0.0.7", "startTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "session", **session}, {"name": "app", **app}]}}


RUNNING = {"ready": True, "restartCount": 0, "state": {"running": {}}}


def test_both_ready_is_running() -> None:
    state = read_pod(pod(RUNNING, RUNNING, ready=True))
    assert (state.phase, state.ip) == ("running", "10.0.0.7")


def test_a_restarting_application_keeps_the_session_running() -> None:
    """The stream still works (an empty desktop, then the application again): stay routed."""
    restarting = {"ready": False, "restartCount": 1,
                  "state": {"terminated": {"exitCode": 139, "reason": "Error"}}}
    state = read_pod(pod(RUNNING, restarting, ready=False))
    assert (state.phase, state.reason) == ("running", "Ready")


def test_an_application_in_crash_loop_fails_the_session_with_the_reason() -> None:
    looping = {"ready": False, "restartCount": 5, "state": {"waiting": {
        "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}
    state = read_pod(pod(RUNNING, looping, ready=False))
    assert (state.phase, state.reason) == ("failed", "CrashLoopBackOff")
    assert "container app" in state.message


def test_readiness_comes_from_the_session_container() -> None:
    starting = {"ready": False, "restartCount": 0, "state": {"running": {}}}
    state = read_pod(pod(starting, RUNNING, ready=False))
    assert (state.phase, state.reason) == ("pending", "Starting")


def test_a_pod_without_container_statuses_falls_back_to_its_ready_condition() -> None:
    bare = {"status": {"phase": "Running", "podIP": "10.0.0.8",
                       "conditions": [{"type": "Ready", "status": "True"}]}}
    assert read_pod(bare).phase == "running"
