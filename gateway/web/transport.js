// Which transport the viewer uses (SPEC: `?transport=auto|webrtc|ws`). auto: WebRTC first, the
// WebSocket when WebRTC has not connected within 4 s or fails later; when neither gets
// through, the viewer is told so rather than "Reconnecting…" forever.

export const FALLBACK_MS = 4000;
const CHOICES = ['auto', 'webrtc', 'ws'];

export class Transports {
  constructor(requested, webCodecs, secure) {
    this.requested = CHOICES.includes(requested) ? requested : 'auto';
    this.secure = secure;
    this.wsUsable = webCodecs && secure; // browsers offer WebCodecs to secure contexts only
    this.current = this.requested === 'ws' ? 'ws' : 'webrtc';
    this.active = null;          // the transport connected now
    this.fallbackReason = null;  // why auto left WebRTC
    this.webrtcFailed = false;   // since the last time anything connected
  }

  // Why the requested transport cannot work in this page at all, or null.
  get unavailable() {
    if (this.requested !== 'ws' || this.wsUsable) return null;
    return this.secure ? 'This browser has no WebCodecs, which the WebSocket transport needs: open the page with ?transport=webrtc.'
      : `${this.insecureNotice()} Or open it with ?transport=webrtc.`;
  }

  // The explanation for a page that is not a secure context, or null.
  insecureNotice() {
    if (this.secure) return null;
    return 'This page is not a secure context (plain HTTP from another computer), so the browser '
      + 'turns off WebCodecs and the clipboard: no WebSocket fallback when WebRTC cannot connect, '
      + 'no copy and paste. Open the gateway over https:// (its --tls-cert and --tls-key, or a TLS '
      + 'proxy in front of it) or over localhost, for example through an SSH tunnel '
      + '(ssh -L 8080:localhost:8080 <gateway host>, then http://localhost:8080).';
  }

  connected(kind) {
    this.active = kind;
    this.webrtcFailed = false;
  }

  disconnected() {
    this.active = null;
  }

  // auto: switch from WebRTC to the WebSocket; false when that is not an option here.
  fallBack(reason) {
    if (this.requested !== 'auto' || !this.wsUsable || this.current === 'ws') return false;
    this.current = 'ws';
    this.fallbackReason = reason;
    this.webrtcFailed = true;
    return true;
  }

  // The WebSocket did not open (no refusal from the gateway: the network): what to tell the
  // user. After a WebRTC failure too, auto tries WebRTC first again next time.
  wsFailed() {
    if (this.requested === 'auto' && this.webrtcFailed) {
      this.current = 'webrtc';
      return `the network blocks both WebRTC (${this.fallbackReason}) and the WebSocket to this server`;
    }
    return 'the WebSocket did not connect';
  }
}
