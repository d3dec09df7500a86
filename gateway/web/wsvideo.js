// The WebSocket transport (SPEC "WebSocket transport"): H.264 access units in binary messages,
// decoded with WebCodecs and painted on a canvas the moment they decode (there is no jitter
// buffer: the freshest picture is the point). Text messages are the `input` channel's JSON.

import { codecString } from './h264.js';

const HEADER_BYTES = 16;
const KIND_VIDEO = 1;
const FLAG_KEYFRAME = 1;
// More frames than this waiting in the decoder: it cannot keep up; skip to the next keyframe
// rather than show an ever older picture.
const MAX_DECODE_QUEUE = 2;
const KEYFRAME_RETRY_MS = 500;
const ACK_INTERVAL_MS = 100;
const CLOCK_PINGS = 5;          // quick round trips at the start for the clock offset
const CLOCK_PING_INTERVAL_MS = 200;
const LATENCY_WINDOW = 120;     // glass-to-glass samples kept for the stats panel

const epochMs = () => performance.timeOrigin + performance.now();

export function webCodecsAvailable() {
  return typeof VideoDecoder !== 'undefined' && typeof EncodedVideoChunk !== 'undefined';
}

export class WsSession {
  // `canvas`: where the picture goes; `onMessage(text)`: the agent's JSON messages;
  // `onSize(width, height)`: the stream's size, at the first frame and when it changes.
  constructor(url, canvas, { onMessage, onSize }) {
    this.url = url;
    this.canvas = canvas;
    this.context = canvas.getContext('2d', { alpha: false, desynchronized: true });
    this.onMessage = onMessage;
    this.onSize = onSize;
    this.ws = null;
    this.decoder = null;
    this.codec = null;
    this.needKeyframe = true;
    this.askedAt = -Infinity;
    this.ackedAt = 0;
    this.clockOffsetMs = null;  // the agent's clock minus ours
    this.bestRtt = Infinity;
    this.latencies = [];
    this.stats = { received: 0, painted: 0, dropped: 0, bytes: 0, keyframes: 0, width: 0, height: 0, decodeErrors: 0 };
    this.closeInfo = null;      // {code, reason} once closed
    this.opened = false;
  }

  // Resolves when the socket is open; rejects with the reason when it closes before.
  connect() {
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    return new Promise((resolve, reject) => {
      ws.addEventListener('open', () => {
        this.opened = true;
        for (let i = 0; i < CLOCK_PINGS; i += 1) setTimeout(() => this.ping(), i * CLOCK_PING_INTERVAL_MS);
        resolve();
      });
      ws.addEventListener('message', (event) => this.onSocketMessage(event));
      ws.addEventListener('close', (event) => {
        this.closeInfo = { code: event.code, reason: event.reason };
        this.closeDecoder();
        if (!this.opened) reject(new Error(event.reason || 'the WebSocket did not open'));
      });
    });
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (this.open) this.ws.send(JSON.stringify(message));
  }

  ping() {
    this.send({ type: 'ping', t: performance.now() });
  }

  onSocketMessage(event) {
    if (typeof event.data === 'string') {
      this.noteClock(event.data);
      this.onMessage(event.data);
    } else {
      this.onFrame(event.data);
    }
  }

  // NTP's estimate from one round trip: the agent read its clock about halfway through it.
  // The round trip with the least delay gives the least error.
  noteClock(text) {
    if (!text.startsWith('{"type":"pong"')) return;
    let pong;
    try { pong = JSON.parse(text); } catch { return; }
    if (typeof pong.t !== 'number' || typeof pong.time !== 'number') return;
    const now = performance.now();
    const rtt = now - pong.t;
    if (rtt < 0 || rtt > this.bestRtt * 1.5 + 5) return;
    this.bestRtt = Math.min(this.bestRtt, rtt);
    this.clockOffsetMs = pong.time / 1000 - (performance.timeOrigin + pong.t + rtt / 2);
  }

  onFrame(buffer) {
    if (buffer.byteLength < HEADER_BYTES) return;
    const view = new DataView(buffer);
    if (view.getUint8(0) !== KIND_VIDEO) return; // unknown kinds are ignored
    const keyframe = (view.getUint8(1) & FLAG_KEYFRAME) !== 0;
    const width = view.getUint16(2);
    const height = view.getUint16(4);
    const capturedUs = Number(view.getBigUint64(8));
    const data = new Uint8Array(buffer, HEADER_BYTES);
    this.stats.received += 1;
    this.stats.bytes += buffer.byteLength;
    if (keyframe) {
      this.stats.keyframes += 1;
      const codec = codecString(data);
      if (codec && (codec !== this.codec || !this.decoder || this.decoder.state === 'closed')) this.configure(codec);
    }
    if (!this.decoder || this.decoder.state !== 'configured') return;
    if (!keyframe && (this.needKeyframe || this.decoder.decodeQueueSize > MAX_DECODE_QUEUE)) {
      this.stats.dropped += 1;
      this.wantKeyframe();
      return;
    }
    this.needKeyframe = false;
    if (width !== this.stats.width || height !== this.stats.height) {
      this.stats.width = width;
      this.stats.height = height;
      this.onSize(width, height);
    }
    try {
      this.decoder.decode(new EncodedVideoChunk({ type: keyframe ? 'key' : 'delta', timestamp: capturedUs, data }));
    } catch (err) {
      this.decodeFailed(err);
    }
  }

  wantKeyframe() {
    this.needKeyframe = true;
    const now = performance.now();
    if (now - this.askedAt >= KEYFRAME_RETRY_MS) {
      this.askedAt = now;
      this.send({ type: 'keyframe' });
    }
  }

  configure(codec) {
    this.closeDecoder();
    this.codec = codec;
    this.decoder = new VideoDecoder({ output: (frame) => this.paint(frame), error: (err) => this.decodeFailed(err) });
    // No `description`: the decoder takes Annex-B with SPS and PPS in band.
    this.decoder.configure({ codec, optimizeForLatency: true, hardwareAcceleration: 'no-preference' });
    this.needKeyframe = true;
  }

  decodeFailed(err) {
    console.warn('decoder:', err && err.message);
    this.stats.decodeErrors += 1;
    this.closeDecoder();
    this.wantKeyframe(); // the next keyframe configures a new decoder
  }

  closeDecoder() {
    if (this.decoder && this.decoder.state !== 'closed') {
      try { this.decoder.close(); } catch { /* already closed */ }
    }
    this.decoder = null;
    this.codec = null;
  }

  paint(frame) {
    try {
      const { canvas } = this;
      if (canvas.width !== frame.displayWidth || canvas.height !== frame.displayHeight) {
        canvas.width = frame.displayWidth;
        canvas.height = frame.displayHeight;
      }
      this.context.drawImage(frame, 0, 0);
      this.stats.painted += 1;
      const now = epochMs();
      if (this.clockOffsetMs !== null) {
        this.latencies.push(now - (frame.timestamp / 1000 - this.clockOffsetMs));
        if (this.latencies.length > LATENCY_WINDOW) this.latencies.shift();
      }
      if (now - this.ackedAt >= ACK_INTERVAL_MS) {
        this.ackedAt = now;
        this.send({ type: 'ack', t: frame.timestamp });
      }
    } finally {
      frame.close();
    }
  }

  // Glass-to-glass (capture → painted) over the recent frames, in ms: {p50, p95} or null.
  latency() {
    if (!this.latencies.length) return null;
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.round(q * (sorted.length - 1)))];
    return { p50: at(0.5), p95: at(0.95) };
  }

  close() {
    if (this.ws) {
      this.ws.close(1000);
      this.ws = null;
    }
    this.closeDecoder();
  }
}
