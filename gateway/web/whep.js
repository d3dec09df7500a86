// A WHEP client (IETF WHEP draft / RFC 9725 shape): receive-only video plus the `input`
// data channel, non-trickle ICE, ICE servers from the endpoint's Link headers.

const ICE_GATHERING_TIMEOUT_MS = 3000;

// `Link: <turn:h:3478?transport=udp>; rel="ice-server"; username="u"; credential="p"`
export function parseIceServers(headers) {
  const servers = [];
  for (const value of headers) {
    for (const link of value.split(/,(?=\s*<)/)) {
      const url = /<([^>]+)>/.exec(link);
      if (!url || !/rel="?ice-server"?/.test(link)) continue;
      const server = { urls: url[1] };
      const user = /username="([^"]*)"/.exec(link);
      const credential = /credential="([^"]*)"/.exec(link);
      if (user) server.username = user[1];
      if (credential) server.credential = credential[1];
      servers.push(server);
    }
  }
  return servers;
}

export class WhepError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    // Host candidates are enough on a LAN; do not wait forever for a slow STUN/TURN server.
    const timer = setTimeout(done, ICE_GATHERING_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// H.264 first: it is what the agent encodes once for every viewer, and what hardware decoders
// handle best; the other codecs stay as fallbacks.
function preferH264(transceiver) {
  if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const codecs = RTCRtpReceiver.getCapabilities('video').codecs;
  const rank = (c) => (/h264/i.test(c.mimeType) ? (/packetization-mode=1/.test(c.sdpFmtpLine || '') ? 0 : 1) : 2);
  transceiver.setCodecPreferences([...codecs].sort((a, b) => rank(a) - rank(b)));
}

export class WhepSession {
  constructor(endpoint) {
    this.endpoint = endpoint;
    this.pc = null;
    this.channel = null;
    this.resource = null;
  }

  // Resolves once the answer is applied; `onTrack(stream)` gets the video stream.
  async connect(onTrack) {
    const iceServers = await this.iceServers();
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    preferH264(pc.addTransceiver('video', { direction: 'recvonly' }));
    this.channel = pc.createDataChannel('input', { ordered: true });
    pc.addEventListener('track', (event) => {
      // Play frames as soon as they decode: latency matters more than smoothness here. What
      // puts Chromium on that path is the agent's playout-delay extension (min = max = 0,
      // session_agent/media/rtpext.py); these only make sure the page asks for no delay itself.
      if ('jitterBufferTarget' in event.receiver) event.receiver.jitterBufferTarget = 0;
      if ('playoutDelayHint' in event.receiver) event.receiver.playoutDelayHint = 0;
      onTrack(event.streams[0] || new MediaStream([event.track]));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc);
    const response = await fetch(this.endpoint, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const text = await response.text();
    if (response.status !== 201) {
      let message = `WHEP answered ${response.status}`;
      try { message = JSON.parse(text).error || message; } catch { /* not JSON */ }
      throw new WhepError(response.status, message);
    }
    const location = response.headers.get('Location');
    if (location) this.resource = new URL(location, new URL(this.endpoint, document.baseURI)).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: text });
  }

  async iceServers() {
    try {
      const response = await fetch(this.endpoint, { method: 'OPTIONS', credentials: 'same-origin' });
      return parseIceServers(response.headers.get('Link') ? [response.headers.get('Link')] : []);
    } catch {
      return [];
    }
  }

  // End the peer on the agent too (keepalive: also while the page unloads).
  close() {
    if (this.resource) {
      fetch(this.resource, { method: 'DELETE', credentials: 'same-origin', keepalive: true }).catch(() => {});
      this.resource = null;
    }
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    this.pc = null;
    this.channel = null;
  }
}
