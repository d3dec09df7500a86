// The stats overlay, once a second: the transport, fps, bitrate, RTT, loss, decode time from
// getStats() on WebRTC; on the WebSocket transport its own counts and the glass-to-glass
// latency (capture on the agent → painted here, across the estimated clock offset).

export class StatsOverlay {
  constructor(element) {
    this.element = element;
    this.previous = null;
    this.timer = null;
    this.pc = null;
    this.ws = null;
    this.pingRtt = null;
  }

  attach(pc) {
    this.pc = pc;
    this.ws = null;
    this.previous = null;
  }

  attachWs(session) {
    this.ws = session;
    this.pc = null;
    this.previous = null;
  }

  toggle() {
    this.element.hidden = !this.element.hidden;
    if (this.element.hidden) {
      clearInterval(this.timer);
      this.timer = null;
    } else {
      this.timer = setInterval(() => this.sample(), 1000);
      this.sample();
    }
  }

  async sample() {
    if (this.ws) this.sampleWs();
    else if (this.pc) await this.sampleWebrtc();
  }

  input() {
    return this.pingRtt !== null ? ` (input ${this.pingRtt.toFixed(0)} ms)` : '';
  }

  sampleWs() {
    const s = this.ws.stats;
    const now = { t: performance.now(), bytes: s.bytes, painted: s.painted };
    const p = this.previous || now;
    const dt = (now.t - p.t) / 1000 || 1;
    this.previous = now;
    const latency = this.ws.latency();
    this.element.textContent = [
      `transport WebSocket + WebCodecs (${this.ws.codec || 'no decoder yet'})`,
      `${s.width || '?'}×${s.height || '?'}`,
      `fps      ${((now.painted - p.painted) / dt).toFixed(0)}`,
      `bitrate  ${((now.bytes - p.bytes) * 8 / dt / 1e6).toFixed(2)} Mbit/s`,
      `latency  ${latency ? `${latency.p50.toFixed(0)} ms (p95 ${latency.p95.toFixed(0)} ms) glass-to-glass` : '–'}`,
      `RTT      ${Number.isFinite(this.ws.bestRtt) ? `${this.ws.bestRtt.toFixed(0)} ms` : '–'}${this.input()}`,
      `frames   ${s.painted} painted, ${s.dropped} dropped, ${s.keyframes} keyframes`,
    ].join('\n');
  }

  async sampleWebrtc() {
    let report;
    try { report = await this.pc.getStats(); } catch { return; }
    let video = null;
    let pair = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
    });
    if (!video) { this.element.textContent = 'transport WebRTC\nno video yet'; return; }
    const now = { t: video.timestamp, bytes: video.bytesReceived, lost: video.packetsLost,
      received: video.packetsReceived, decodeTime: video.totalDecodeTime, decoded: video.framesDecoded };
    const p = this.previous || now;
    const dt = (now.t - p.t) / 1000 || 1;
    const lost = now.lost - p.lost;
    const total = lost + now.received - p.received;
    const decodeMs = now.decoded > p.decoded ? ((now.decodeTime - p.decodeTime) / (now.decoded - p.decoded)) * 1000 : 0;
    this.previous = now;
    const rtt = pair && pair.currentRoundTripTime !== undefined ? `${(pair.currentRoundTripTime * 1000).toFixed(0)} ms` : '–';
    this.element.textContent = [
      'transport WebRTC',
      `${video.frameWidth || '?'}×${video.frameHeight || '?'} ${video.decoderImplementation || ''}`,
      `fps      ${(video.framesPerSecond || 0).toFixed(0)}`,
      `bitrate  ${((now.bytes - p.bytes) * 8 / dt / 1e6).toFixed(2)} Mbit/s`,
      `RTT      ${rtt}${this.input()}`,
      `loss     ${total > 0 ? ((lost / total) * 100).toFixed(1) : '0.0'} %`,
      `decode   ${decodeMs.toFixed(1)} ms/frame`,
      `frames   ${now.decoded} decoded, ${video.framesDropped || 0} dropped`,
    ].join('\n');
  }
}
