"""Soak: agent sessions streaming full-screen motion for minutes, one viewer each.

    python -m bench.soak [--minutes 10] [--sessions 4] [--size 1280x720]

Each session is the real agent (`python -m session_agent`, its own process) on its own Xvfb,
with the motion painter of bench/agent_media.py (large random rectangles at 30 Hz) painting
all along, watched over loopback by one aiortc viewer with that benchmark's marker-bit jitter
buffer. Prints one JSON object per figure: RSS growth and file-descriptor growth of each agent
(end of the first minute → end of the run), the longest gap between two decoded frames at any
viewer, and the frames each viewer received.

The default size is 1280x720: four 1080p encodes of full-screen motion plus four decoders
need more than this machine's two cores, and the soak looks for leaks and stalls, not speed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.agent_media import PAINTER, ROOT, rss_mb, wait_healthy  # noqa: E402  (also installs the marker-bit buffer)
from bench.figures import figure  # noqa: E402
from tests.agent_process import AgentProcess, free_port  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402
from tests.xserver import Xvfb, start_xvfb  # noqa: E402

SAMPLE_S = 5.0
FD_TOLERANCE = 2  # a socket being opened or closed at the moment of a sample is not a leak
RSS_TARGET_PERCENT = 10
STALL_TARGET_S = 1.0


@dataclass
class Session:
    xvfb: Xvfb
    agent: AgentProcess
    viewer: Viewer | None = None
    painter: subprocess.Popen | None = None
    samples: list[tuple[float, float, int]] = field(default_factory=list)  # (t, RSS MB, fds)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def launch(size: str) -> Session:
    xvfb = start_xvfb(size)
    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "session_agent", "--display", xvfb.display,
                              "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    return Session(xvfb, AgentProcess(agent, port, xvfb.display, None))


async def connect(session: Session) -> None:
    await wait_healthy(session.agent.url)
    session.viewer = Viewer(session.agent.url)
    await session.viewer.connect()
    await session.viewer.wait_for(lambda frame: True, timeout=30)


async def longest_gap(viewer: Viewer, until: float) -> float:
    """Longest time without a new decoded frame from now until `until` (monotonic)."""
    longest, last = 0.0, time.monotonic()
    while (remaining := until - time.monotonic()) > 0:
        seen = viewer.frames
        try:
            await viewer.wait_for(lambda frame: viewer.frames > seen, timeout=remaining)
        except asyncio.TimeoutError:
            pass
        now = time.monotonic()
        longest, last = max(longest, now - last), now
    return longest


async def sample(sessions: list[Session], t0: float, until: float) -> list[float]:
    """RSS and open descriptors of every agent every SAMPLE_S seconds; an agent that exits ends the soak.
    Returns the machine's 1-minute load averages meanwhile: it is shared, and load explains stalls."""
    loads: list[float] = []
    while True:
        loads.append(os.getloadavg()[0])
        for i, s in enumerate(sessions):
            if s.agent.proc.poll() is not None:
                raise RuntimeError(f"agent {i} exited with status {s.agent.proc.returncode}")
            s.samples.append((time.monotonic() - t0, rss_mb(s.agent.proc.pid), fd_count(s.agent.proc.pid)))
        if (remaining := until - time.monotonic()) <= 0:
            return loads
        await asyncio.sleep(min(SAMPLE_S, remaining))


def growth_rows(i: int, s: Session, baseline_s: float) -> list[dict]:
    first = next(x for x in s.samples if x[0] >= baseline_s)
    end = s.samples[-1]
    rss = figure(f"soak.agent{i}.rss_growth_percent", 100 * (end[1] - first[1]) / first[1], "%",
                 RSS_TARGET_PERCENT, first_mb=round(first[1], 1), end_mb=round(end[1], 1),
                 peak_mb=round(max(x[1] for x in s.samples), 1), from_s=round(first[0]), to_s=round(end[0]))
    fds = figure(f"soak.agent{i}.fd_growth", end[2] - first[2], "descriptors", FD_TOLERANCE,
                 first=first[2], end=end[2], peak=max(x[2] for x in s.samples))
    return [rss, fds]


async def soak(count: int, minutes: float, size: str) -> list[dict]:
    sessions: list[Session] = []
    # SIGTERM cancels the run, so that the finally below still stops every process it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    try:
        for _ in range(count):  # one at a time: four agents starting at once would starve the first viewers
            sessions.append(launch(size))
            await connect(sessions[-1])
        duration = minutes * 60
        for s in sessions:
            s.painter = subprocess.Popen([sys.executable, "-c", PAINTER, s.xvfb.display, str(duration + 5)])
        await asyncio.sleep(2)  # the painters are drawing before the clock starts
        t0 = time.monotonic()
        until = t0 + duration
        frames0 = [s.viewer.frames for s in sessions]
        *gaps, loads = await asyncio.gather(*(longest_gap(s.viewer, until) for s in sessions),
                                            sample(sessions, t0, until))
        frames = [s.viewer.frames - f0 for s, f0 in zip(sessions, frames0)]
        elapsed = time.monotonic() - t0
    finally:
        await close(sessions)
    baseline_s = min(60.0, duration / 2)  # "the first minute", or half of a shorter trial run
    rows = [row for i, s in enumerate(sessions) for row in growth_rows(i, s, baseline_s)]
    rows.append(figure("soak.max_frame_stall_s", max(gaps), "s", STALL_TARGET_S,
                       per_viewer=[round(g, 3) for g in gaps]))
    rows += [figure(f"soak.viewer{i}.frames_received", n, "frames", None, fps=round(n / elapsed, 1))
             for i, n in enumerate(frames)]
    for row in rows:
        row.update(sessions=count, minutes=minutes, size=size, cores=os.cpu_count(),
                   load_avg_1m={"mean": round(sum(loads) / len(loads), 2), "max": round(max(loads), 2)})
    return rows


async def close(sessions: list[Session]) -> None:
    for s in sessions:
        if s.painter is not None:
            s.painter.kill()
            s.painter.wait()
        if s.viewer is not None:
            await s.viewer.close(delete=False)
        s.agent.stop()
        s.xvfb.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--size", default="1280x720")
    args = parser.parse_args()
    for row in asyncio.run(soak(args.sessions, args.minutes, args.size)):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
