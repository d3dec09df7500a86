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

  function sample(source, x, y) {
    ctx.drawImage(source, x, y, 1, 1, 0, 0, 1, 1);
    const d = ctx.getImageData(0, 0, 1, 1).data;
    return [d[0], d[1], d[2]];
  }

  function matches(rgb, want, tolerance) {
    return Math.abs(rgb[0] - want[0]) <= tolerance && Math.abs(rgb[1] - want[1]) <= tolerance
      && Math.abs(rgb[2] - want[2]) <= tolerance;
  }

  function poll() {
    const a = state.armed;
    if (!a || a.poll !== null) return;
    a.polls += 1;
    // The time before drawing: the frame was there by then. Drawing the first poll of a new
    // frame converts the whole frame to RGB (milliseconds), the probe's own cost, not the stream's.
    const t = epoch(performance.now());
    try {
      if (matches(sample(state.element, a.x, a.y), a.rgb, a.tolerance)) a.poll = t;
    } catch (err) { /* no frame yet */ }
    if (a.poll === null) setTimeout(poll, 0);
  }

  function onFrame(now, md) {
    state.frames += 1;
    const a = state.armed;
    if (a && a.frame === null) {
      const ran = epoch(performance.now());
      try {
        if (matches(sample(state.element, a.x, a.y), a.rgb, a.tolerance)) {
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
      } catch (err) { /* no frame yet */ }
    }
    state.element.requestVideoFrameCallback(onFrame);
  }

  window.__probe = {
    attach(selector) {
      state.element = document.querySelector(selector);
      if (!state.element) throw new Error(`no element ${selector}`);
      state.rvfc = Boolean(state.element.requestVideoFrameCallback);
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
    // Resolves with result() once both ways saw the colour, or after timeoutMs.
    wait(timeoutMs) {
      const until = performance.now() + timeoutMs;
      return new Promise((resolve) => {
        const check = () => {
          const a = state.armed;
          if (!a || (a.poll !== null && (a.frame !== null || !state.rvfc)) || performance.now() > until) resolve(this.result());
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
      return e instanceof HTMLVideoElement ? e.readyState >= 2 && (!state.rvfc || state.frames > 2) : e.width > 0;
    },
    get frames() { return state.frames; },
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
