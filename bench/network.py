"""Network benchmark: the lab itself, the WHEP answer to Chromium's offer across a NAT, and the
stream under network conditions, one JSON figure per line.

    python -m bench.network [--quick] [--transport webrtc,ws] [--viewers chromium,aiortc]
                            [--size 1280x720] [--noise 2] [--only lab|whep|media]

Needs root (network namespaces, iptables, /dev/net/tun); without, it prints one `skipped` row.
Everything runs in tests/netlab: a client namespace behind a masquerading router, the real
gateway (HTTPS, local spawner) and agent in a server namespace, the relay in between.

- Lab: UDP round-trip time against the configured 40 ms, loss against the configured 1 %,
  TCP goodput against a 5 Mbit/s cap, and the relay's CPU at 2,000 packets/s.
- WHEP answer: Chromium (in the client namespace) makes its real offer — its host candidate an
  mDNS `.local` name — and POSTs it through the gateway; the time to the answer as the page
  sees it, and the agent's own time, over a dozen offers.
- Media, per condition (none; 40 ms RTT + 1 % loss each way; a 5 Mbit/s cap with a 200 ms
  router queue), per viewer — Chromium playing the real viewer page, and aiortc
  (tests/netlab/viewer.py, frames completed on the marker bit as a browser does; over the
  WebSocket a PyAV client) — over each of `--transport` (WebRTC, the WebSocket transport): full-screen motion at 30 Hz with `--noise` patches of incompressible pixels
  (5–9 Mbit/s at the starting cap, so that the 5 Mbit/s link is really too narrow) plus a
  corner marker that changes colour at random moments; the viewer reads the marker's colour in
  every frame it presents. Latency p50/p95 is marker change → first frame showing it (a marker
  never shown counts as infinitely late); fps is
  frames under the motion; the longest freeze is the longest gap between frames; queue growth
  is the median latency of the last third of the run minus that of the first third. Each fps
  row carries the feedback: what the receiver said (aiortc: its REMB estimates; Chromium: its
  inbound-rtp NACK/PLI/freeze counts and availableIncomingBitrate) and what the agent's encoder
  cap (session_agent/media/bitrate.py, sampled from /metrics) did with it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.figures import figure  # noqa: E402
from tests.netlab import Impairment, NetLab, unavailable  # noqa: E402
from tests.netlab.browser import LabChromium  # noqa: E402
from tests.netlab.painter import PROBE  # noqa: E402
from tests.netlab.probe import Echo, tcp_throughput_kbit, udp_blast, udp_rtts  # noqa: E402
from tests.netlab.services import LabGateway, ViewerProcess  # noqa: E402
from tests.netlab.viewer import TRANSPORTS  # noqa: E402

CONDITIONS = {  # name: (up, down, targets {figure: (target, lower is better)})
    "open": (None, None, {}),
    "rtt40_loss1": (Impairment(delay_ms=20, loss=0.01), Impairment(delay_ms=20, loss=0.01),
                    {"latency_p95_ms": (100, True), "longest_freeze_ms": (500, True), "fps": (25, False)}),
    "cap5mbit": (Impairment(rate_kbit=5000, queue_ms=200), Impairment(rate_kbit=5000, queue_ms=200),
                 {"latency_p95_ms": (150, True), "fps": (20, False), "queue_growth_ms": (50, True)}),
}
UNITS = {"latency_p50_ms": "ms", "latency_p95_ms": "ms", "longest_freeze_ms": "ms", "fps": "fps",
         "queue_growth_ms": "ms"}


def rows_lab(quick: bool) -> list[dict[str, Any]]:
    rows = []
    with NetLab() as lab, Echo(lab.server, lab.server.address):
        lab.impair(Impairment(delay_ms=20, loss=0.01), Impairment(delay_ms=20, loss=0.01), seed=1)
        count = 1000 if quick else 4000
        before = lab.relay_counters()
        rtts = udp_rtts(lab.client, lab.server.address, count=count, interval_s=0.002)
        after = lab.relay_counters()
        got = sorted(r for r in rtts if r is not None)
        rows.append(figure("network.lab.rtt_median_ms", statistics.median(got), "ms", None,
                           configured_ms=40, p95_ms=round(got[int(0.95 * (len(got) - 1))], 2), probes=count))
        rows.append(figure("network.lab.rtt_added_ms", statistics.median(got) - 40, "ms", 2,
                           note="median RTT above the configured 40 ms (the relay's own cost)"))
        lost = {d: (after[d]["lost"] - before[d]["lost"]) / max(1, after[d]["received"] - before[d]["received"])
                for d in ("up", "down")}
        rows.append(figure("network.lab.loss_error_pp", 100 * max(abs(v - 0.01) for v in lost.values()), "pp", 0.5,
                           configured_percent=1, up_percent=round(100 * lost["up"], 2),
                           down_percent=round(100 * lost["down"], 2),
                           probes_lost_percent=round(100 * sum(r is None for r in rtts) / count, 2)))
        lab.impair(Impairment(rate_kbit=5000), Impairment(rate_kbit=5000))
        kbit = tcp_throughput_kbit(lab.client, lab.server, lab.server.address, seconds=3 if quick else 6)
        rows.append(figure("network.lab.rate_cap_ratio", kbit / 5000, "ratio", 0.9, lower_is_better=False,
                           configured_kbit=5000, tcp_goodput_kbit=round(kbit)))
        lab.impair(Impairment(delay_ms=20), Impairment(delay_ms=20))
        c0, t0 = lab.relay_counters(), time.monotonic()
        sent, received = udp_blast(lab.client, lab.server, lab.server.address, pps=2000, seconds=3 if quick else 6)
        c1, t1 = lab.relay_counters(), time.monotonic()
        rows.append(figure("network.lab.relay_cpu_percent_at_2000pps", 100 * (c1["cpu_s"] - c0["cpu_s"]) / (t1 - t0),
                           "% of one core", 50, packets_sent=sent, packets_delivered=received,
                           delivered_percent=round(100 * received / max(1, sent), 3)))
    return rows


OFFER = """async () => {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.createDataChannel('input');
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => { if (pc.iceGatheringState === 'complete') done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && done(); });
  const sdp = pc.localDescription.sdp; pc.close(); return sdp; }"""
POST = """async ([url, sdp]) => { const t0 = performance.now();
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: sdp });
  await r.text(); const ms = performance.now() - t0;
  const where = r.headers.get('Location'); if (where) await fetch(where, { method: 'DELETE' });
  return [r.status, ms]; }"""


async def rows_whep(quick: bool) -> list[dict[str, Any]]:
    from playwright.async_api import async_playwright

    from tests.netlab.browser import CHROMIUM_ARGS
    with NetLab() as lab:
        gw = LabGateway(lab).start()
        session = await asyncio.to_thread(gw.start_session)
        executable = lab.client.wrapper("/usr/bin/chromium", lab.tmp)
        times, local = [], 0
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(f"{gw.url}/streaming/{session}/?token=lab-token&resize=0")  # the cookie
            for _ in range(6 if quick else 15):
                sdp = await page.evaluate(OFFER)
                local += any(l.startswith("a=candidate:") and ".local " in l for l in sdp.splitlines())
                status, ms = await page.evaluate(POST, [f"{gw.url}/streaming/{session}/whep", sdp])
                assert status == 201, status
                times.append(ms)
            await browser.close()
        agent = [line["duration_ms"] for line in gw.agent_log(session) if line.get("action") == "peer_created"]
    # The first offer also warms the agent up (its first peer): reported, left out of the median.
    first, rest = times[0], sorted(times[1:])
    return [
        figure("network.whep_answer_chromium_offer_p95_ms", rest[int(0.95 * (len(rest) - 1))], "ms", 50,
               median_ms=round(statistics.median(rest), 2), first_ms=round(first, 2), offers=len(times),
               offers_with_mdns_candidate=local, agent_median_ms=round(statistics.median(agent[1:] or agent), 2),
               path="Chromium in the client namespace → NAT → gateway (HTTPS) → agent"),
    ]


def sample_agent(lab: NetLab, gw: LabGateway, session: str, stop: threading.Event, out: list[dict[str, float]]) -> None:
    """The agent's encoder cap and encoded bytes, once a second."""
    pid, _ = gw.agent_of(session)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    port = argv[argv.index("--port") + 1]
    # The local spawner hands the agent its token in a file (--token-file), never the environment.
    token = Path(argv[argv.index("--token-file") + 1]).read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    while not stop.wait(1.0):
        _, text, _ = lab.server.http("GET", f"http://127.0.0.1:{port}/metrics", headers=headers)
        values = {}
        for line in str(text).splitlines():
            for name in ("agent_bitrate_cap_kbps", "agent_video_bytes_total", "agent_frames_dropped_total",
                         "agent_retransmits_refused_total"):
                if line.startswith(name) and not line.startswith(name + "_"):
                    values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            if line.startswith("agent_peer_loss_ratio{"):  # the receivers' latest reports
                values["loss"] = max(values.get("loss", 0.0), float(line.rsplit(" ", 1)[1]))
        out.append({"t": time.monotonic(), **values})


class AiortcWatcher:
    """tests/netlab/viewer.py in the client namespace; frames timed on CLOCK_MONOTONIC."""

    clock = "t"

    def __init__(self, lab: NetLab, gw: LabGateway, session: str, transport: str, seconds: float) -> None:
        self.process = ViewerProcess.start(
            lab.client, f"{gw.url}/streaming/{session}/whep", "--transport", transport, "--frames",
            "--probe", ",".join(map(str, PROBE)), "--seconds", str(seconds + 3), cafile=gw.cert)
        self.process.wait("connected", 60)

    def record(self) -> None:
        pass  # it reports every frame from the start

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        summary = self.process.finish(60, quit=False)
        remb = summary.get("remb_kbps", [])
        return self.process.frames(), {
            "remb_kbps": {"first": remb[0], "min": min(remb), "last": remb[-1], "count": len(remb)} if remb else None,
            "nacked": summary.get("nacked"), "retransmitted": summary.get("retransmitted")}

    def close(self) -> None:
        self.process.kill()


class ChromiumWatcher:
    """The real viewer page in Chromium (client namespace); frames timed on the Unix clock."""

    clock = "wall"

    def __init__(self, chromium: LabChromium, gw: LabGateway, session: str, transport: str, seconds: float) -> None:
        self.chromium = chromium
        self.page = chromium.viewer(gw, session, transport)

    def record(self) -> None:
        self.chromium.record(self.page, PROBE)

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return self.chromium.frames(self.page), {"inbound_rtp": self.chromium.inbound(self.page)}

    def close(self) -> None:
        self.page.context.close()


def media_condition(lab: NetLab, gw: LabGateway, session: str, name: str, viewer: str, transport: str,
                    seconds: float, noise: int, chromium: LabChromium | None) -> list[dict[str, Any]]:
    up, down, targets = CONDITIONS[name]
    lab.impair(up, down, seed=11)
    display = gw.agent_of(session)[1]
    samples: list[dict[str, float]] = []
    stop = threading.Event()
    watcher: AiortcWatcher | ChromiumWatcher | None = None
    try:
        watcher = (ChromiumWatcher(chromium, gw, session, transport, seconds) if viewer == "chromium"
                   else AiortcWatcher(lab, gw, session, transport, seconds))
        sampler = threading.Thread(target=sample_agent, args=(lab, gw, session, stop, samples), daemon=True)
        sampler.start()
        time.sleep(1)
        watcher.record()
        painter = subprocess.Popen([sys.executable, "-m", "tests.netlab.painter", display, str(seconds), "--markers",
                                    "--noise", str(noise)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "XAUTHORITY": gw.xauthority_of(session)})
        markers = [json.loads(line) for line in painter.stdout]
        painter.wait()
        frames, extra = watcher.finish()
        relay = lab.relay_counters() if lab.relay else {}
    finally:
        stop.set()
        if watcher is not None:
            watcher.close()
        lab.impair()
    clock = watcher.clock
    if not markers:
        raise RuntimeError("the painter painted no marker")
    started, ended = markers[0][clock] - 0.3, markers[-1][clock]
    frames = [f for f in frames if started <= f[clock] <= ended + 1]
    latencies = []  # a marker never shown counts as never arriving: infinitely late
    for m in markers:
        hit = next((f for f in frames if f[clock] >= m[clock]
                    and all(abs(a - b) <= 28 for a, b in zip(f["rgb"], m["rgb"]))), None)
        latencies.append((hit[clock] - m[clock]) * 1000 if hit is not None else float("inf"))
    in_motion = [f[clock] for f in frames if started + 1 <= f[clock] <= ended]
    gaps = [b - a for a, b in zip(in_motion, in_motion[1:])]
    third = max(1, len(latencies) // 3)
    ordered = sorted(latencies)
    values = {
        "latency_p50_ms": statistics.median(latencies) if latencies else float("inf"),
        "latency_p95_ms": ordered[int(0.95 * (len(ordered) - 1))] if ordered else float("inf"),
        "longest_freeze_ms": max(gaps, default=float("inf")) * 1000,
        "fps": len(in_motion) / max(1e-6, ended - started - 1),
        "queue_growth_ms": growth if len(latencies) >= 3 and math.isfinite(
            growth := statistics.median(latencies[-third:]) - statistics.median(latencies[:third])) else float("inf"),
    }
    caps = [s["agent_bitrate_cap_kbps"] for s in samples if "agent_bitrate_cap_kbps" in s]
    sent = [(b["t"] - a["t"], b["agent_video_bytes_total"] - a["agent_video_bytes_total"])
            for a, b in zip(samples, samples[1:]) if "agent_video_bytes_total" in a and "agent_video_bytes_total" in b]
    t0 = samples[0]["t"] if samples else 0.0
    cap_changes = [(round(b["t"] - t0), b["agent_bitrate_cap_kbps"]) for a, b in zip(samples, samples[1:])
                   if a.get("agent_bitrate_cap_kbps") != b.get("agent_bitrate_cap_kbps")]
    feedback = {
        **extra,
        "encoder_cap_kbps": {"first": caps[0], "min": min(caps), "last": caps[-1],
                             "changes_at_s": cap_changes} if caps else None,
        "encoded_kbps_median": round(statistics.median(8 * b / 1000 / dt for dt, b in sent), 1) if sent else None,
        "encoded_kbps_per_5s": [round(sum(8 * b / 1000 for _, b in sent[i:i + 5]) / max(1e-6, sum(dt for dt, _ in sent[i:i + 5])))
                                for i in range(0, len(sent), 5)],
        "receiver_report_loss_max": max((x.get("loss", 0.0) for x in samples), default=None),
        "retransmits_refused": (samples[-1].get("agent_retransmits_refused_total", 0)
                                - samples[0].get("agent_retransmits_refused_total", 0)) if samples else None,
        "agent_frames_dropped": (samples[-1].get("agent_frames_dropped_total", 0) - samples[0].get("agent_frames_dropped_total", 0)
                                 if samples else None),  # frames a lagging viewer skipped (either transport)
        "markers": len(markers), "markers_seen": sum(math.isfinite(v) for v in latencies),
        "relay": {d: {k: relay[d][k] for k in ("received", "lost", "overflowed", "max_queue")}
                  for d in ("up", "down")} if relay else None,
    }
    rows = []
    for key, value in values.items():
        target, lower = targets.get(key, (None, True))
        rows.append(figure(f"network.{transport}.{viewer}.{name}.{key}", value, UNITS[key], target, lower,
                           transport=transport, viewer=viewer, condition=name,
                           **({"feedback": feedback} if key == "fps" else {})))
    return rows


def rows_media(quick: bool, transports: list[str], size: str, noise: int, viewers: list[str],
               conditions: list[str]) -> list[dict[str, Any]]:
    rows = []
    seconds = 10 if quick else 25
    with NetLab() as lab:
        gw = LabGateway(lab, size=size).start()
        chromium = LabChromium(lab).__enter__() if "chromium" in viewers else None
        try:
            for viewer in viewers:
                for name in conditions:
                    for transport in transports:
                        session = gw.start_session()  # a fresh session (and encoder state) per run
                        try:
                            rows += media_condition(lab, gw, session, name, viewer, transport, seconds, noise,
                                                    chromium)
                        except Exception as exc:  # one run failing still lets the others report
                            rows.append({"name": f"network.{transport}.{viewer}.{name}", "error": repr(exc)[:500]})
                        gw.api("DELETE", f"/api/sessions/{session}")
        finally:
            if chromium is not None:
                chromium.__exit__()
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer probes and shorter runs")
    p.add_argument("--transport", default="webrtc,ws",
                   help=f"comma-separated, from: {', '.join(sorted(TRANSPORTS))} (each condition runs for each)")
    p.add_argument("--size", default="1280x720", help="the session's display size")
    p.add_argument("--noise", type=int, default=2,
                   help="patches of incompressible pixels per motion tick (tests/netlab/painter.py)")
    p.add_argument("--viewers", default="chromium,aiortc",
                   help="who watches the media runs: chromium (the real viewer page), aiortc (tests/netlab/viewer.py)")
    p.add_argument("--only", choices=("lab", "whep", "media"), help="one part only")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="the media runs' conditions, comma-separated")
    a = p.parse_args()
    transports = [t.strip() for t in a.transport.split(",") if t.strip()]
    if unknown := [t for t in transports if t not in TRANSPORTS]:
        p.error(f"unknown transport(s) {', '.join(unknown)}")
    if reason := unavailable(relay=True):
        print(json.dumps({"name": "network", "skipped": reason}))
        return 0
    parts = {"lab": lambda: rows_lab(a.quick), "whep": lambda: asyncio.run(rows_whep(a.quick)),
             "media": lambda: rows_media(a.quick, transports, a.size, a.noise,
                                         [v.strip() for v in a.viewers.split(",") if v.strip()],
                                         [c for c in a.conditions.split(",") if c in CONDITIONS])}
    failed = 0
    for part, run in parts.items():
        if a.only and part != a.only:
            continue
        try:
            for row in run():
                print(json.dumps(row), flush=True)
        except Exception as exc:  # one part failing still lets the others report
            failed += 1
            print(json.dumps({"name": f"network.{part}", "error": repr(exc)[:500]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
