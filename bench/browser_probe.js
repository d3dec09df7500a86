// Injected into the viewer page by bench/browser_latency.py (page.add_init_script) before the
// viewer's own scripts run. It changes nothing the viewer does; it only watches:
//  - every RTCPeerConnection the page makes (for getStats()),
//  - the picture at a probe point, two ways: a fast poller (setTimeout chain, ~4 ms: what a
//    person sees, give or take the display's refresh) and requestVideoFrameCallback (the frame
//    the compositor was handed, with Chromium's presentation/receive/processing times).
// All times it reports are epoch milliseconds (performance.timeOrigin + performance.now()),
// the clock the benchmark compares with Python's time.time() on the same machine.
(() => {
  const pcs = [];
  const Native = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);

  const epoch = (t) => (t === undefined || t === null ? null : performance.timeOrigin + t);
  const canvas = document.createElement('canvas');
  canvas.width = 1;
  canvas.height = 1;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });

  const state = {
    element: null, // the <video> (or, later, a <canvas>) showing the stream
    armed: null,   // { rgb, x, y, tolerance, at, poll, frame, polls }
    rvfc: false,   // whether the element has requestVideoFrameCallback (a <video> does)
    frames: 0,     // frames presented (requestVideoFrameCallback)
  };

  // drawImage: the way a page would read pixels; on a <video> it converts the whole frame
  // to RGB on the main thread (milliseconds at 1080p, once per new frame).
  async function drawImageSample(source, x, y) {
    ctx.drawImage(source, x, y, 1, 1, 0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2]];
  }

  // VideoFrame: the same current frame, but only 2×2 pixels of its planes are copied, so the
  // probe costs the machine (2 cores, shared with the agent) next to nothing.
  async function videoFrameSample(source, x, y) {
    const frame = new VideoFrame(source);
    try {
      const rect = { x: x & ~1, y: y & ~1, width: 2, height: 2 };
      const buf = new Uint8Array(frame.allocationSize({ rect }));
      const layout = await frame.copyTo(buf, { rect });
      return toRgb(frame.format, buf, layout);
    } finally {
      frame.close();
    }
  }

  function toRgb(format, buf, layout) {
    if (/^(RGB|BGR)/.test(format)) {
      const o = layout[0].offset;
      return format.startsWith('RGB') ? [buf[o], buf[o + 1], buf[o + 2]] : [buf[o + 2], buf[o + 1], buf[o]];
    }
    // I420 / I420A / NV12, limited range BT.601 (what swscale wrote at the agent).
    const y = buf[layout[0].offset];
    const u = buf[layout[1].offset];
    const v = format === 'NV12' ? buf[layout[1].offset + 1] : buf[layout[2].offset];
    const c = 1.164 * (y - 16);
    const clamp = (n) => Math.max(0, Math.min(255, Math.round(n)));
    return [clamp(c + 1.596 * (v - 128)), clamp(c - 0.392 * (u - 128) - 0.813 * (v - 128)), clamp(c + 2.017 * (u - 128))];
  }

  let sample = videoFrameSample;

  function matches(rgb, want, tolerance) {
    return Math.abs(rgb[0] - want[0]) <= tolerance && Math.abs(rgb[1] - want[1]) <= tolerance
      && Math.abs(rgb[2] - want[2]) <= tolerance;
  }

  async function poll() {
    const a = state.armed;
    if (!a || a.poll !== null) return;
    a.polls += 1;
    // The time before reading: the frame was there by then (reading takes the probe's time).
    const t = epoch(performance.now());
    let rgb = null;
    try { rgb = await sample(state.element, a.x, a.y); } catch (err) { /* no frame yet */ }
    if (a !== state.armed) return;
    if (rgb && matches(rgb, a.rgb, a.tolerance)) a.poll = t;
    else setTimeout(poll, 0);
  }

  async function onFrame(now, md) {
    state.frames += 1;
    state.element.requestVideoFrameCallback(onFrame);
    const a = state.armed;
    if (!a || a.frame !== null) return;
    const ran = epoch(performance.now());
    let rgb = null;
    try { rgb = await sample(state.element, a.x, a.y); } catch (err) { /* no frame yet */ }
    if (a !== state.armed || a.frame !== null || !rgb || !matches(rgb, a.rgb, a.tolerance)) return;
    a.frame = {
      callback: epoch(now),
      ran,
      presentation: epoch(md.presentationTime),
      expectedDisplay: epoch(md.expectedDisplayTime),
      receive: epoch(md.receiveTime),
      capture: epoch(md.captureTime),
      processingMs: md.processingDuration === undefined ? null : md.processingDuration * 1000,
      rtpTimestamp: md.rtpTimestamp === undefined ? null : md.rtpTimestamp,
    };
  }

  // When the page saw the last pointerdown (the event's own time stamp: when the browser got it).
  let lastDown = null;
  window.addEventListener('pointerdown', (e) => { lastDown = epoch(e.timeStamp); }, true);

  window.__probe = {
    get lastDown() { return lastDown; },
    // method: 'videoframe' (default) or 'drawimage' (how the harness read the picture).
    attach(selector, method = 'videoframe') {
      sample = method === 'drawimage' ? drawImageSample : videoFrameSample;
      state.element = document.querySelector(selector);
      if (!state.element) throw new Error(`no element ${selector}`);
      state.rvfc = Boolean(state.element.requestVideoFrameCallback);
      // A canvas (the WebSocket transport) is read directly: new VideoFrame(canvas) wants a
      // timestamp, and the copy is one pixel of a picture already in RGB.
      if (state.element instanceof HTMLCanvasElement) sample = drawImageSample;
      if (state.rvfc) state.element.requestVideoFrameCallback(onFrame);
    },
    // Watch (x, y) of the picture for `rgb` from now on; the benchmark paints right after.
    arm(rgb, x, y, tolerance) {
      state.armed = { rgb, x, y, tolerance, at: epoch(performance.now()), poll: null, frame: null, polls: 0 };
      setTimeout(poll, 0);
    },
    result() {
      const a = state.armed;
      return a && { armed: a.at, poll: a.poll, frame: a.frame, polls: a.polls };
    },
    // Resolves with result() once the poller (and, with frame, requestVideoFrameCallback too)
    // saw the colour, or after timeoutMs.
    wait(timeoutMs, frame = true) {
      const until = performance.now() + timeoutMs;
      return new Promise((resolve) => {
        const check = () => {
          const a = state.armed;
          if (!a || (a.poll !== null && (a.frame !== null || !state.rvfc || !frame)) || performance.now() > until) {
            resolve(this.result());
          }
          else setTimeout(check, 20);
        };
        check();
      });
    },
    now: () => epoch(performance.now()),
    // The stream is showing: a <video> has a frame (and presented a few), a canvas has been drawn.
    playing() {
      const e = state.element;
      if (!e) return false;
      return e instanceof HTMLVideoElement ? e.readyState >= 2 && (!state.rvfc || state.frames > 2)
        : Boolean(window.viewer) && window.viewer.painted > 2;
    },
    // Frames presented: requestVideoFrameCallback's count, or what the viewer painted on a canvas.
    get frames() { return state.rvfc ? state.frames : (window.viewer ? window.viewer.painted : 0); },
    // The inbound video figures chrome://webrtc-internals shows, from getStats().
    async stats() {
      for (const pc of pcs) {
        if (pc.connectionState === 'closed') continue;
        let found = null;
        (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') found = s; });
        if (found) return JSON.parse(JSON.stringify(found));
      }
      return null;
    },
  };
})();
