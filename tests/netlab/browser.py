"""Chromium as a lab viewer, for benchmarks (Playwright's sync API; tests use the async one in
test_chromium.py): the real viewer page in the client namespace, every frame it presents timed
and its marker colour read (requestVideoFrameCallback), and WebRTC's own receive statistics.

    with LabChromium(lab) as chromium:
        page = chromium.viewer(gw, session, transport="webrtc")
        chromium.record(page, probe)        # start timing frames
        ...                                 # paint
        frames = chromium.frames(page)      # [{"wall": s, "rgb": [r, g, b]}]
        stats = chromium.inbound(page)      # inbound-rtp: nackCount, freezeCount, …
"""
from __future__ import annotations

from typing import Any

from tests.netlab.lab import NetLab
from tests.netlab.services import TOKEN, LabGateway

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--ignore-certificate-errors"]  # the lab's self-signed certificate
# Keeps every RTCPeerConnection the page makes, for getStats() (the viewer does not expose it).
KEEP_PCS = """(() => { const Original = window.RTCPeerConnection; window.__pcs = [];
  window.RTCPeerConnection = class extends Original {
    constructor(...args) { super(...args); window.__pcs.push(this); } }; })();"""
# The WebSocket transport paints a canvas: each paint is timed at the next animation frame,
# the rendering step at which requestVideoFrameCallback reports a <video>'s new frame.
RECORD_CANVAS = """([px, py]) => { window.__frames = []; const v = document.getElementById('canvas');
  const c = document.createElement('canvas'); c.width = 32; c.height = 18;
  const g = c.getContext('2d', { willReadFrequently: true });
  const x = Math.min(31, Math.floor(px * 32)), y = Math.min(17, Math.floor(py * 18));
  let seen = window.viewer.painted;
  const step = () => { const n = window.viewer.painted;
    if (n !== seen) { seen = n; g.drawImage(v, 0, 0, 32, 18); const d = g.getImageData(x, y, 1, 1).data;
      window.__frames.push([(performance.timeOrigin + performance.now()) / 1000, d[0], d[1], d[2]]); }
    requestAnimationFrame(step); };
  requestAnimationFrame(step); }"""
RECORD = """([px, py]) => { window.__frames = []; const v = document.getElementById('video');
  const c = document.createElement('canvas'); c.width = 32; c.height = 18;
  const g = c.getContext('2d', { willReadFrequently: true });
  const x = Math.min(31, Math.floor(px * 32)), y = Math.min(17, Math.floor(py * 18));
  const step = () => { g.drawImage(v, 0, 0, 32, 18); const d = g.getImageData(x, y, 1, 1).data;
    window.__frames.push([(performance.timeOrigin + performance.now()) / 1000, d[0], d[1], d[2]]);
    v.requestVideoFrameCallback(step); };
  v.requestVideoFrameCallback(step); }"""
INBOUND = """async () => { const pc = window.__pcs[window.__pcs.length - 1]; const out = {};
  if (!pc) return { transport: window.viewer.transport, painted: window.viewer.painted, latency: window.viewer.latency };
  (await pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') Object.assign(out, {
    framesReceived: r.framesReceived, framesDecoded: r.framesDecoded, framesDropped: r.framesDropped,
    packetsLost: r.packetsLost, nackCount: r.nackCount, pliCount: r.pliCount, freezeCount: r.freezeCount,
    totalFreezesDuration: r.totalFreezesDuration,
    jitterBufferDelayMs: r.jitterBufferEmittedCount ? 1000 * r.jitterBufferDelay / r.jitterBufferEmittedCount : null,
    decoder: r.decoderImplementation });
    if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded')
      out.availableIncomingBitrate = r.availableIncomingBitrate ?? null; });
  return out; }"""


class LabChromium:
    def __init__(self, lab: NetLab) -> None:
        self.lab = lab

    def __enter__(self) -> LabChromium:
        from playwright.sync_api import sync_playwright
        self._playwright = sync_playwright().start()
        executable = self.lab.client.wrapper("/usr/bin/chromium", self.lab.tmp)
        self.browser = self._playwright.chromium.launch(executable_path=str(executable), args=CHROMIUM_ARGS)
        return self

    def __exit__(self, *exc: object) -> None:
        self.browser.close()
        self._playwright.stop()

    def viewer(self, gw: LabGateway, session: str, transport: str = "webrtc", timeout_ms: int = 90_000):
        """The viewer page of `session`, connected and playing."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 760})
        context.add_init_script(KEEP_PCS)
        page = context.new_page()
        page.goto(f"{gw.url}/streaming/{session}/?token={TOKEN}&resize=0&transport={transport}")
        page.wait_for_function("window.viewer && window.viewer.state === 'connected'", timeout=timeout_ms)
        page.wait_for_function("window.viewer.painted > 0", timeout=timeout_ms)
        return page

    def record(self, page, probe: tuple[float, float]) -> None:
        ws = page.evaluate("window.viewer.transport") == "ws"
        page.evaluate(RECORD_CANVAS if ws else RECORD, list(probe))

    def frames(self, page) -> list[dict[str, Any]]:
        return [{"wall": f[0], "rgb": f[1:]} for f in page.evaluate("window.__frames")]

    def inbound(self, page) -> dict[str, Any]:
        return page.evaluate(INBOUND)
