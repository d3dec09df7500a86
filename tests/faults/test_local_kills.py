"""kill -9 of the application, the agent, Xvfb or the gateway at a (seeded) random moment of a
local session: during its start, while a viewer streams, or while it is being deleted.

Each time the session either recovers (runs) or ends up `failed` with a reason in the API (or
gone, when it was being deleted), nothing of it is left running, and the file the user saved
in their home before the fault is still there."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from gateway.spawners.local import user_home
from tests.faults import procs
from tests.faults.gateway_process import TOKEN, GatewayProcess, SessionProcesses
from tests.whep_client import Viewer

SEED = 20261126
TARGETS = ("app", "agent", "xvfb", "gateway")
MOMENTS = ("start", "streaming", "delete")


def plan() -> dict[str, str]:
    """target -> moment: every moment is used at least once, the rest is seeded."""
    rng = random.Random(SEED)
    moments = [*MOMENTS, rng.choice(MOMENTS)]
    rng.shuffle(moments)
    return dict(zip(TARGETS, moments))


PLAN = plan()
# Plus the gateway at every moment: it is the one fault that takes every session at once.
CASES = [*PLAN.items(), *(("gateway", m) for m in MOMENTS if m != PLAN["gateway"])]


def save_user_file(data_dir: Path) -> Path:
    # The token user's HOME under --data-dir, made as the spawner makes it (with its owner record).
    (data_dir / "users").mkdir(parents=True, exist_ok=True)
    home = user_home(data_dir / "users", "local")
    (home / "Pictures").mkdir(parents=True, exist_ok=True)
    saved = home / "Pictures" / "drawing.xcf"
    saved.write_bytes(b"gimp xcf file v011" + bytes(range(256)) * 64)
    return saved


async def find_session(gw: GatewayProcess, need: str | None) -> SessionProcesses:
    """The session's processes, once the supervisor (and `need`, if given) exists."""
    for _ in range(600):
        supervisors = gw.supervisors()
        if supervisors:
            found = SessionProcesses.find(supervisors[0])
            if need is None or getattr(found, need) is not None:
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {need or 'supervisor'} appeared: {''.join(gw.log)[-3000:]}")


async def no_leftovers(sessions: list[SessionProcesses]) -> None:
    await asyncio.to_thread(
        procs.wait_until, lambda: not any(s.leftovers() for s in sessions), 30,
        what=f"no process of the session left ({[s.describe_leftovers() for s in sessions]})")


@pytest.mark.parametrize(("target", "moment"), CASES)
async def test_kill9(target: str, moment: str, tmp_path: Path) -> None:
    delay = random.Random(f"{SEED}-{target}-{moment}").uniform(0.0, 1.0)
    data_dir = tmp_path / "data"
    saved = save_user_file(data_dir)
    content = saved.read_bytes()
    gw = GatewayProcess(data_dir).start()
    viewer: Viewer | None = None
    seen: list[SessionProcesses] = []
    try:
        sid = (await gw.create())["id"]
        need = {"app": "app", "agent": "agent", "xvfb": "xvfb", "gateway": None}[target]
        if moment == "start":
            session = await find_session(gw, need)
        else:
            await gw.wait_session(sid, lambda s: s and s["phase"] == "running")
            session = await find_session(gw, need)
            if moment == "streaming":
                viewer = Viewer(gw.url, token=TOKEN)
                await viewer.connect(f"/streaming/{sid}/whep")
                await viewer.wait_for(lambda f: f.width > 0, timeout=30)
            else:
                status, _ = await gw.call("DELETE", f"/api/sessions/{sid}")
                assert status == 202
        seen.append(session)
        await asyncio.sleep(delay)
        victim = gw.pid if target == "gateway" else getattr(session, target)
        procs.kill9(victim)

        if target == "gateway":
            gw.proc.wait(10)
            # The supervisors end every process of the sessions of a dead gateway.
            await no_leftovers([session])
            gw = GatewayProcess(data_dir).start()  # a restarted gateway has none to re-adopt
            status, body = await gw.call("GET", "/api/sessions")
            assert status == 200 and body["sessions"] == []
        else:
            def settled(s) -> bool:
                if moment == "delete":
                    return s is None  # the delete completes despite the fault
                if s is not None and s["phase"] == "running":
                    # recovered only if it runs anew (a start retried on another display)
                    return any(p != session.supervisor for p in gw.supervisors())
                return s is not None and s["phase"] == "failed"
            final = await gw.wait_session(sid, settled, timeout=60)
            if final is not True and final["phase"] == "running":
                print(f"{target} killed at {moment}: recovered")
                seen.append(await find_session(gw, "app"))
            elif final is not True:
                assert final.get("message"), final  # failed, with the reason in the API
                print(f"{target} killed at {moment}: failed: {final['message']}")
            await no_leftovers(seen[:1])  # the faulty run is gone either way
            if final is not True:
                status, _ = await gw.call("DELETE", f"/api/sessions/{sid}")
                assert status == 202
                await gw.wait_session(sid, lambda s: s is None, timeout=30)
            await no_leftovers(seen)
        assert saved.read_bytes() == content
    finally:
        if viewer is not None:
            await viewer.close(delete=False)
        gw.stop()
    assert gw.proc.returncode == 0, "".join(gw.log)[-3000:]
    assert not any(s.leftovers() for s in seen)
    assert saved.read_bytes() == content
