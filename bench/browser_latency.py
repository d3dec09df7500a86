"""Latency as the browser shows it: glass-to-glass in Chromium at the viewer page, next to the
aiortc client, with the agent's stage budget and Chromium's own receive figures.

    python -m bench.browser_latency [--flashes 40] [--motion-seconds 10] [--size 1920x1080]
                                    [--transport webrtc] [--variants default,no-playout-delay]
                                    [--no-aiortc] [--scale-to WxH] [--details out.json] [--quick]

Subjects: one Chromium page per variant (--variants; see VARIANTS, or `agent@GITREF` for the
agent of another commit) and the aiortc client (bench/marker_client.py, on the first
variant's agent). Each subject has a session of its own: a real gateway (local spawner, token
mode, loopback) running the agent on a bare X display (openbox, no application window: the
"application" is `sleep`), 1920x1080 by default and shown 1:1 in the page. Chromium
(playwright, the tests' flags) opens the real viewer page; bench/browser_probe.js, injected
before the page's scripts, watches the decoded picture without changing what the viewer does.

Flashes: after a random pause (0.2–2.5 s: some flashes land among the agent's settle frames,
some after a still stretch), every subject's screen is filled with a new colour in turn, in
random order (`time.time()` just before the X request), so the subjects are compared under the
same machine load (the machine is shared). The page notes when the probe point (the centre)
shows the colour: a poller reading the current frame about every 4 ms (the figure), and
requestVideoFrameCallback for the frame (its receive and presentation times split the figure
into "until Chromium had the last packet", "Chromium's depacketize/decode/hand to the
compositor" and "until the page sees it"). Page and agent share the machine's clock: the page
reports `performance.timeOrigin + performance.now()` (the system clock at navigation plus a
monotonic clock), compared with `time.time()` as it is. As a check the offset between the two
is measured at the start and at the end (the narrowest of at least 20 bracketed calls) and
printed (`clock_offset_ms`): it stays within its measuring bound, well under a millisecond.

Motion: 30 Hz full-screen random rectangles for --motion-seconds, one subject after another;
frames presented (requestVideoFrameCallback; the figure) and decoded (getStats) per second,
the agent's and Chromium's CPU (% of one core). getStats() figures (jitter buffer, decode,
freezes, NACK/PLI, loss) are recorded for the flashes and the motion.

The agent's /metrics stage histograms (damage → grab → convert → encode → handed to aiortc →
sent) give each stage's median over the flashes (interpolated within buckets), so the gap
between the agent's work and what the page sees is visible.

The first variant's figures are judged against the targets; the other variants' and the
aiortc client's are printed next to them. --transport names how the viewer receives video:
`webrtc` (the <video>), or `ws` (the WebSocket transport, WebCodecs painting a <canvas>: the
probe polls the canvas; frames presented are the viewer's painted count, there being no
requestVideoFrameCallback, and getStats() has nothing to say).

Prints one JSON object per figure (bench/figures.py), `load_average` in each.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aioice.ice  # noqa: E402

import bench.marker_client  # noqa: E402,F401  (frames complete on the marker bit, as in a browser)
from bench.figures import figure  # noqa: E402
from bench.session_harness import (TOKEN, CpuMeter, Gateway, agent_at, bucket_quantile, chromium,  # noqa: E402
                                   chromium_pids, histograms, load_average)
from bench.xpaint import PAINTER, Flasher  # noqa: E402
from tests.whep_client import Viewer  # noqa: E402

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

PROBE_JS = (Path(__file__).parent / "browser_probe.js").read_text()
PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
TOLERANCE = 40            # per channel, decoded colour vs painted colour
FLASH_TIMEOUT_S = 5.0
MOTION_STRETCH_S = 2.0
STAGES = ("damage_to_grab", "grab", "convert", "encode", "to_transport", "send")

TARGETS = {  # figure: (unit, target, lower is better); issue 11
    "glass_p50_ms": ("ms", 25, True),
    "glass_p95_ms": ("ms", 35, True),
    "glass_max_ms": ("ms", 60, True),
    "motion_fps": ("fps", 30, False),
    "motion_agent_cpu_percent": ("% of one core", 55, True),
}


@dataclass(frozen=True)
class Transport:
    """How the viewer page receives video, and where the probe reads the picture."""

    name: str
    query: str      # added to the viewer URL
    element: str    # CSS selector of the element showing the stream


TRANSPORTS = {"webrtc": Transport("webrtc", "", "#video"),
              # WebSocket + WebCodecs: the viewer paints each frame on a canvas as it decodes.
              "ws": Transport("ws", "&transport=ws", "#canvas")}


def without_extmap(uri: str) -> Callable[[str], str]:
    def edit(sdp: str) -> str:
        pattern = re.compile(rf"a=extmap:\d+(/\w+)? {re.escape(uri)}")
        return "".join(line for line in sdp.splitlines(keepends=True) if not pattern.match(line))
    return edit


@dataclass(frozen=True)
class Variant:
    name: str
    note: str
    agent_env: dict[str, str] = field(default_factory=dict)
    offer_edit: Callable[[str], str] | None = None  # the viewer's offer as the agent gets it
    agent_ref: str | None = None                     # run the agent of this git commit instead
    probe: str = "videoframe"                        # how the page reads the picture (browser_probe.js)


VARIANTS = {v.name: v for v in (
    Variant("default", "agent and viewer as they are"),
    Variant("no-playout-delay", "the viewer's offer reaches the agent without the playout-delay extension, "
            "so it is not negotiated (the agent before issue 11)", offer_edit=without_extmap(PLAYOUT_DELAY_URI)),
    Variant("drawimage", "the probe reads the picture with drawImage (as the issue's harness did), "
            "which converts each new frame to RGB on the page's main thread", probe="drawimage"),
    Variant("refresh-0.1", "AGENT_REFRESH=0.1: a repeat frame every 100 ms", {"AGENT_REFRESH": "0.1"}),
    Variant("no-playout-delay+refresh-0.1", "without playout-delay, with a repeat frame every 100 ms (the "
            "issue's experiment)", {"AGENT_REFRESH": "0.1"}, offer_edit=without_extmap(PLAYOUT_DELAY_URI)),
)}


def variant(name: str) -> Variant:
    """A named variant, or `agent@REF`: this tree's gateway and viewer with the agent of git REF."""
    if name.startswith("agent@"):
        ref = name.split("@", 1)[1]
        return Variant(name, f"the agent of {ref}, this tree's gateway and viewer", agent_ref=ref)
    return VARIANTS[name]


def colours(rng: random.Random):
    """Colours each far from the one before (and from black), so a stale frame never matches."""
    previous = (0, 0, 0)
    while True:
        rgb = (rng.randrange(0, 256), rng.randrange(0, 256), rng.randrange(0, 256))
        if max(abs(a - b) for a, b in zip(rgb, previous)) >= 3 * TOLERANCE:
            previous = rgb
            yield rgb


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"p50": round(statistics.median(values), 1), "p95": round(pct(values, 0.95), 1),
            "max": round(max(values), 1), "n": len(values)}


async def clock_offset_ms(page) -> tuple[float, float]:
    """(page epoch clock − time.time(), ± bound) in ms, from the narrowest bracketed call: at
    least 20 tries, more (up to 200) until one brackets it within ±0.5 ms."""
    best = None
    for i in range(200):
        a = time.time()
        p = await page.evaluate("__probe.now()")
        b = time.time()
        if best is None or b - a < best[1]:
            best = (p - (a + b) * 500, (b - a) * 1000)
        if i >= 20 and best[1] <= 1.0:
            break
    return round(best[0], 3), round(best[1] / 2, 3)


STAT_KEYS = ("framesReceived", "framesDecoded", "framesDropped", "keyFramesDecoded", "jitterBufferDelay",
             "jitterBufferTargetDelay", "jitterBufferMinimumDelay", "jitterBufferEmittedCount", "totalDecodeTime",
             "totalProcessingDelay", "totalAssemblyTime", "framesAssembledFromMultiplePackets", "freezeCount",
             "totalFreezesDuration", "pauseCount", "totalPausesDuration", "nackCount", "pliCount", "firCount",
             "packetsLost", "packetsReceived", "retransmittedPacketsReceived", "framesPerSecond")


def stats_delta(pairs: list[tuple[dict | None, dict | None]]) -> dict[str, Any]:
    """getStats() inbound-rtp over one phase or several (summed): counts, per-frame ms."""
    pairs = [(b, a) for b, a in pairs if b and a]
    if not pairs:
        return {}
    d: dict[str, float] = {}
    for before, after in pairs:
        for k in STAT_KEYS:
            if k in after and k != "framesPerSecond":
                d[k] = d.get(k, 0) + after[k] - before.get(k, 0)
    emitted = d.get("jitterBufferEmittedCount") or 0
    decoded = d.get("framesDecoded") or 0
    assembled = d.get("framesAssembledFromMultiplePackets") or 0
    per_frame = lambda key, n: round(1000 * d[key] / n, 2) if n and key in d else None  # noqa: E731
    return {
        "frames_received": d.get("framesReceived"), "frames_decoded": decoded, "frames_dropped": d.get("framesDropped"),
        "keyframes_decoded": d.get("keyFramesDecoded"),
        "jitter_buffer_delay_ms": per_frame("jitterBufferDelay", emitted),
        "jitter_buffer_target_delay_ms": per_frame("jitterBufferTargetDelay", emitted),
        "jitter_buffer_minimum_delay_ms": per_frame("jitterBufferMinimumDelay", emitted),
        "decode_ms": per_frame("totalDecodeTime", decoded),
        "processing_delay_ms": per_frame("totalProcessingDelay", decoded),
        "assembly_ms": per_frame("totalAssemblyTime", assembled),
        "freeze_count": d.get("freezeCount"), "freezes_s": round(d.get("totalFreezesDuration", 0), 3),
        "pause_count": d.get("pauseCount"), "nack_count": d.get("nackCount"), "pli_count": d.get("pliCount"),
        "fir_count": d.get("firCount"), "packets_lost": d.get("packetsLost"),
        "retransmitted_packets": d.get("retransmittedPacketsReceived"),
        "decoder": pairs[-1][1].get("decoderImplementation"),
    }


def stage_medians(pairs: list[tuple[str, str]]) -> dict[str, float | None]:
    """Median ms of each agent stage over what happened between pairs of /metrics scrapes."""
    summed: dict[str, dict[float, float]] = {}
    for before, after in pairs:
        b = histograms(before, "agent_frame_stage_seconds", "stage")
        for stage, buckets in histograms(after, "agent_frame_stage_seconds", "stage").items():
            old = dict(b.get(stage, []))
            into = summed.setdefault(stage, {})
            for le, count in buckets:
                into[le] = into.get(le, 0.0) + count - old.get(le, 0.0)
    out = {}
    for stage in STAGES:
        if stage in summed:
            q, _ = bucket_quantile([], sorted(summed[stage].items()))
            out[stage] = None if q is None else round(q * 1000, 2)
    return out


def _centre(frame) -> tuple[int, int, int]:
    tiny = frame.reformat(width=32, height=18, format="rgb24").to_ndarray()
    return tuple(int(v) for v in tiny[9, 16])


def _close(a, b) -> bool:
    return all(abs(x - y) <= TOLERANCE for x, y in zip(a, b))


class Subject:
    """One viewer of a session of its own (gateway, agent, X display): a Chromium page showing
    the real viewer, or the aiortc client. Every subject is flashed in turn, so all of them
    are measured under the same machine load."""

    def __init__(self, variant: Variant, kind: str, seed: int) -> None:
        self.variant, self.kind = variant, kind
        self.label = variant.name if kind == "chromium" else f"aiortc client ({variant.name} agent)"
        self.palette = colours(random.Random(seed))
        self.flashes: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.page = self.viewer = None
        self.offset_ms = 0.0
        self.motion_parts: dict[str, Any] = {"seconds": 0.0, "presented": 0, "agent_cpu_s": 0.0,
                                             "chromium_cpu_s": 0.0, "stats": [], "metrics": []}

    async def start(self, stack: AsyncExitStack, browser, transport: Transport, args) -> None:
        if self.variant.agent_ref:
            tree = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-agent-"))
            agent_tree = agent_at(self.variant.agent_ref, Path(tree))
        else:
            agent_tree = None
        self.gateway = Gateway(size=args.size, app_command="sleep 86400", agent_env=self.variant.agent_env,
                               agent_tree=agent_tree)
        stack.callback(self.gateway.stop)
        self.sid = await self.gateway.start_session()
        self.agent = self.gateway.agent(self.sid)
        if self.agent.xauthority:
            os.environ["XAUTHORITY"] = self.agent.xauthority  # python-xlib reads it as it connects
        self.flasher = Flasher(self.agent.display)
        stack.callback(self.flasher.close)
        self.flasher.flash((0, 0, 0))
        width, height = self.flasher.size
        self.probe = (width // 2, height // 2)
        if self.kind == "aiortc":
            self.viewer = Viewer(self.gateway.base, token=TOKEN)
            stack.push_async_callback(self.viewer.close)
            await self.viewer.connect(f"/streaming/{self.sid}/whep")
            await self.viewer.wait_for(lambda f: True, timeout=30)
            return
        # A browser context of its own: the gateways share 127.0.0.1, and cookies ignore ports.
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        stack.push_async_callback(context.close)
        page = self.page = await context.new_page()
        await page.add_init_script(PROBE_JS)
        if self.variant.offer_edit is not None:
            edit = self.variant.offer_edit

            async def edit_offer(route):
                if route.request.method == "POST":
                    await route.continue_(post_data=edit(route.request.post_data))
                else:
                    await route.continue_()
            await page.route(re.compile(r".*/whep$"), edit_offer)
        await page.goto(self.gateway.viewer_url(self.sid, transport.query))
        await page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=60_000)
        # The picture 1:1 in the page, as in a window the display was fitted to (no scaling).
        toolbar = await page.evaluate("document.getElementById('screen').getBoundingClientRect().top")
        size = args.scale_to or (width, height + int(toolbar))
        await page.set_viewport_size({"width": size[0], "height": size[1]})
        await page.evaluate("([s, m]) => __probe.attach(s, m)", [transport.element, self.variant.probe])
        await page.wait_for_function("__probe.playing()", timeout=60_000)
        self.offset_ms, self.offset_bound_ms = await clock_offset_ms(page)

    async def stats(self) -> dict | None:
        return await self.page.evaluate("__probe.stats()") if self.page else None

    async def flash(self) -> None:
        rgb = next(self.palette)
        if self.page:
            await self.page.evaluate("([c, x, y, t]) => __probe.arm(c, x, y, t)", [list(rgb), *self.probe, TOLERANCE])
        still_s = time.monotonic() - self.last
        t0 = self.flasher.flash(rgb)
        self.last = time.monotonic()
        if self.viewer:
            await self.viewer.wait_for(lambda f: _close(_centre(f), rgb), timeout=FLASH_TIMEOUT_S)
            self.flashes.append({"poll_ms": round((time.time() - t0) * 1000, 2), "still_s": round(still_s, 3)})
            return
        t0 = t0 * 1000  # the page's epoch clock is the same clock; the measured offset is a check
        r = await self.page.evaluate(f"__probe.wait({FLASH_TIMEOUT_S * 1000})")
        if r is None or r["poll"] is None:
            raise RuntimeError(f"{self.label}: the page never showed {rgb} (probe {r})")
        frame = r["frame"] or {}
        ms = lambda t: None if t is None else round(t - t0, 2)  # noqa: E731
        self.flashes.append({"poll_ms": ms(r["poll"]), "still_s": round(still_s, 3), "polls": r["polls"],
                             **{f"{k}_ms": ms(frame.get(k)) for k in ("callback", "ran", "presentation",
                                                                       "expectedDisplay", "receive", "capture")},
                             "processing_ms": frame.get("processingMs")})

    async def motion(self, seconds: float) -> None:
        """One stretch of 30 Hz full-screen motion on this subject's display (after 0.7 s to
        get going): frames, CPU and stage times are added up over the stretches."""
        painter = subprocess.Popen([sys.executable, "-c", PAINTER, self.agent.display, str(seconds + 0.8)],
                                   env=self.agent.x_env)
        try:
            await asyncio.sleep(0.7)
            agent_cpu, browser_cpu = CpuMeter([self.agent.pid]), CpuMeter(chromium_pids())
            s0, p0 = await self.stats(), await self.page.evaluate("__probe.frames")
            m0, t0 = self.agent.metrics(), time.monotonic()
            agent_cpu.start(), browser_cpu.start()
            await asyncio.sleep(seconds)
            agent_percent, browser_percent = agent_cpu.stop(), browser_cpu.stop()
            s1, p1 = await self.stats(), await self.page.evaluate("__probe.frames")
            m1, t1 = self.agent.metrics(), time.monotonic()
        finally:
            painter.wait()
        m = self.motion_parts
        m["seconds"] += t1 - t0
        m["presented"] += p1 - p0
        m["agent_cpu_s"] += agent_percent * (t1 - t0) / 100
        m["chromium_cpu_s"] += browser_percent * (t1 - t0) / 100
        m["stats"].append((s0, s1))
        m["metrics"].append((m0, m1))

    def motion_results(self) -> dict[str, Any]:
        m = self.motion_parts
        if not m["seconds"]:
            return {}
        getstats = stats_delta(m["stats"])
        return {"motion_seconds": round(m["seconds"], 1),
                "motion_fps_decoded": round((getstats.get("frames_decoded") or 0) / m["seconds"], 2),
                "motion_fps_presented": round(m["presented"] / m["seconds"], 2),
                "motion_agent_cpu_percent": round(100 * m["agent_cpu_s"] / m["seconds"], 1),
                "motion_chromium_cpu_percent": round(100 * m["chromium_cpu_s"] / m["seconds"], 1),
                "stages_motion_ms": stage_medians(m["metrics"]), "getstats_motion": getstats}

    def results(self) -> dict[str, Any]:
        f = self.flashes
        both = lambda a, b: [x[a] - x[b] for x in f if x.get(a) is not None and x.get(b) is not None]  # noqa: E731
        out = {"subject": self.label, "variant": self.variant.name, "note": self.variant.note, "kind": self.kind,
               "glass_ms": summary([x["poll_ms"] for x in f]),
               "glass_after_still_ms": summary([x["poll_ms"] for x in f if x["still_s"] >= 2.0])}
        if self.page:
            # requestVideoFrameCallback reports the newest frame at each rendering update: when
            # a settle frame followed the flash's first frame before one, the callback describes
            # the settle frame. Its times split the figure only where the callback ran no later
            # than the poller saw the colour (then it is the frame the poller saw).
            f = [x for x in f if x.get("ran_ms") is not None and x["ran_ms"] <= x["poll_ms"] + 1]
            out.update({
                "clock_offset_ms": self.offset_ms, "clock_offset_bound_ms": self.offset_bound_ms,
                "frame_presented_ms": summary([x["presentation_ms"] for x in f]),
                "last_packet_received_ms": summary([x["receive_ms"] for x in f if x["receive_ms"] is not None]),
                "received_to_presented_ms": summary(both("presentation_ms", "receive_ms")),
                "presented_to_polled_ms": summary(both("poll_ms", "presentation_ms")),
            })
        return out


async def measure(names: list[str], transport: Transport, args) -> list[dict[str, Any]]:
    subjects = [Subject(variant(n), "chromium", args.seed + i) for i, n in enumerate(names)]
    if args.aiortc:
        subjects.append(Subject(subjects[0].variant, "aiortc", args.seed + 100))
    async with AsyncExitStack() as stack:
        browser = await stack.enter_async_context(chromium())
        for s in subjects:
            await s.start(stack, browser, transport, args)
        rng = random.Random(args.seed)
        before = [(s.agent.metrics(), await s.stats()) for s in subjects]
        for _ in range(args.flashes):
            # A random pause (some flashes land among settle frames, some after a still
            # stretch), then every subject once, in random order, back to back.
            await asyncio.sleep(rng.uniform(0.2, 2.5))
            for s in rng.sample(subjects, len(subjects)):
                await s.flash()
        load = load_average()
        results = []
        for s, (m0, s0) in zip(subjects, before):
            r = s.results()
            r.update(stages_ms=stage_medians([(m0, s.agent.metrics())]),
                     getstats_flashes=stats_delta([(s0, await s.stats())]), load_average=load)
            if s.page:
                r["clock_offset_end_ms"] = (await clock_offset_ms(s.page))[0]
            results.append(r)
        # Motion in stretches of 2 s, the pages in turn (random order), like the flashes.
        pages = [s for s in subjects if s.page]
        for _ in range(max(1, round(args.motion_seconds / MOTION_STRETCH_S)) if args.motion_seconds > 0 else 0):
            for s in rng.sample(pages, len(pages)):
                await s.motion(MOTION_STRETCH_S)
        for s, r in zip(subjects, results):
            if s.page and args.motion_seconds > 0:
                r.update(s.motion_results(), motion_load_average=load_average())
            r["flashes"] = s.flashes
        return results


def report(results: list[dict[str, Any]], args) -> list[dict[str, Any]]:
    browsers = [r for r in results if r["kind"] == "chromium"]
    first, others = browsers[0], browsers[1:]
    aiortc = next((r for r in results if r["kind"] == "aiortc"), None)
    pick = {
        "glass_p50_ms": lambda r: r["glass_ms"]["p50"],
        "glass_p95_ms": lambda r: r["glass_ms"]["p95"],
        "glass_max_ms": lambda r: r["glass_ms"]["max"],
        "motion_fps": lambda r: r.get("motion_fps_presented"),
        "motion_agent_cpu_percent": lambda r: r.get("motion_agent_cpu_percent"),
    }
    presented = {"glass_p50_ms": "p50", "glass_p95_ms": "p95", "glass_max_ms": "max"}
    rows = []
    for name, (unit, target, lower) in TARGETS.items():
        value = pick[name](first)
        if value is None:
            continue
        extra: dict[str, Any] = {"variant": first["variant"], "transport": args.transport, "size": args.size,
                                 "load_average": first["load_average"]}
        if name in presented:
            # (None on the WebSocket transport: a canvas has no requestVideoFrameCallback.)
            extra["frame_presented"] = (first["frame_presented_ms"] or {}).get(presented[name])
            if aiortc:
                extra["aiortc_client"] = aiortc["glass_ms"][presented[name]]
        if name == "glass_p50_ms":
            extra.update(flashes=first["glass_ms"]["n"], stages_median_ms=first["stages_ms"],
                         last_packet_received_ms=(first["last_packet_received_ms"] or {}).get("p50"),
                         getstats=first["getstats_flashes"], clock_offset_ms=first["clock_offset_ms"],
                         clock_offset_end_ms=first["clock_offset_end_ms"])
        if name == "motion_fps":
            extra.update(decoded_fps=first["motion_fps_decoded"], getstats=first["getstats_motion"],
                         seconds=first["motion_seconds"], load_average=first["motion_load_average"])
        if name == "motion_agent_cpu_percent":
            extra.update(chromium_cpu_percent=first["motion_chromium_cpu_percent"],
                         stages_median_ms=first["stages_motion_ms"], load_average=first["motion_load_average"])
        if others:
            extra["variants"] = {r["variant"]: pick[name](r) for r in others}
        rows.append(figure(f"browser.{args.transport}.{name}", value, unit, target, lower, **extra))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flashes", type=int, default=40, help="flashes per subject")
    parser.add_argument("--aiortc", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the aiortc client (a session of its own, the first variant's agent)")
    parser.add_argument("--motion-seconds", type=float, default=10, help="0: no motion phase")
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="webrtc")
    parser.add_argument("--variants", default="default,no-playout-delay",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}, or agent@GITREF; the first is judged")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--scale-to", type=lambda v: tuple(int(x) for x in v.split("x")),
                        help="page viewport WxH (the picture scaled into it); default: the picture 1:1")
    parser.add_argument("--details", type=Path, help="write every subject's results (each flash) here as JSON")
    parser.add_argument("--quick", action="store_true", help="12 flashes, 5 s of motion, the first variant only")
    args = parser.parse_args()
    names = args.variants.split(",")
    if args.quick:
        args.flashes, args.motion_seconds, names = 12, 5, names[:1]
    unknown = [n for n in names if n not in VARIANTS and not n.startswith("agent@")]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}, agent@GITREF")
    results = await measure(names, TRANSPORTS[args.transport], args)
    if args.details:
        args.details.write_text(json.dumps(results, indent=1))
    for row in report(results, args):
        print(json.dumps(row))


if __name__ == "__main__":
    asyncio.run(main())
