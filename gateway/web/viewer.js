// The viewer: video over WHEP or the WebSocket transport, input, local cursor, stats,
// reconnect with backoff, clear endings.
import { endSession, getSession } from './api.js';
import { RemoteClipboard } from './clipboard.js';
import { LocalCursor } from './cursor.js';
import { FilesPanel } from './files.js';
import { deviceSize, shownSize, watchPixelRatio } from './hidpi.js';
import { InputCapture } from './input.js';
import { Notices } from './notices.js';
import { ENDED_TEXT, Presence } from './presence.js';
import { RefineOverlay } from './refine.js';
import { StatsOverlay } from './stats.js';
import { WhepSession } from './whep.js';
import { WsSession, webCodecsAvailable } from './wsvideo.js';
import { Transports, FALLBACK_MS } from './transport.js';

const MAX_BACKOFF_S = 30;
const DISCONNECTED_GRACE_MS = 4000; // ICE often recovers from "disconnected" by itself
const RESIZE_DEBOUNCE_MS = 300;
const PING_INTERVAL_MS = 5000;

const sessionId = decodeURIComponent(location.pathname.split('/')[2] || '');
const endpoint = `/streaming/${encodeURIComponent(sessionId)}/whep`;
const $ = (id) => document.getElementById(id);
const screen = $('screen');
const video = $('video');
const canvas = $('canvas');
const badge = $('state');
const overlay = $('overlay');
const remoteResize = $('remote-resize');

let whep = null;
let wsv = null; // the WebSocket transport's session, when that is the one in use
let attempt = 0;
let reconnectTimer = null;
let countdownTimer = null;
let ended = false;
let lastResize = '';

const params = new URLSearchParams(location.search);
remoteResize.checked = params.get('resize') !== '0' && localStorage.getItem('remote-resize') !== '0';

function sendRaw(message) {
  if (wsv) wsv.send(message);
  else if (whep && whep.channel && whep.channel.readyState === 'open') whep.channel.send(JSON.stringify(message));
}

// --- transport choice (?transport=auto|webrtc|ws) ----------------------------------------
const transports = new Transports(params.get('transport'), webCodecsAvailable(), window.isSecureContext);
const insecure = transports.insecureNotice();
if (insecure) $('insecure').textContent = insecure;
$('insecure').hidden = !insecure;

function closeTransports() {
  if (whep) whep.close();
  whep = null;
  if (wsv) wsv.close();
  wsv = null;
}

function send(message) {
  const allowed = presence.outgoing(message);
  if (allowed) sendRaw(allowed);
}

const clipboard = new RemoteClipboard(sessionId, document.querySelector('.toolbar'));
const input = new InputCapture(screen, send, { surface: video, images: clipboard });
const cursor = new LocalCursor(screen);
const stats = new StatsOverlay($('stats'));
const notices = new Notices($('notice'));
const refine = new RefineOverlay($('refine'), `/streaming/${encodeURIComponent(sessionId)}/refine/`);
input.attach();
const presence = new Presence({
  screen, toolbar: document.querySelector('.toolbar'), display: () => input.display, send: sendRaw,
  onEnded: (text) => end(text),
});
new FilesPanel(sessionId, $('files'), $('files-toggle'), $('drop-hint'));

function setState(state, text) {
  document.body.dataset.state = state;
  badge.textContent = text;
}

function end(text, state = 'ended') {
  ended = true;
  clearTimeout(reconnectTimer);
  clearInterval(countdownTimer);
  closeTransports();
  setState(state, state === 'failed' ? 'Failed' : 'Ended');
  $('overlay-text').textContent = text;
  overlay.hidden = false;
}

function retry(reason, seconds = Math.min(MAX_BACKOFF_S, 2 ** attempt)) {
  if (ended) return;
  attempt += 1;
  closeTransports();
  transports.disconnected();
  let left = Math.ceil(seconds);
  const show = () => setState('reconnecting', `Reconnecting in ${left} s…${reason ? ` (${reason})` : ''}`);
  show();
  clearInterval(countdownTimer);
  countdownTimer = setInterval(() => { left = Math.max(0, left - 1); show(); }, 1000);
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(connect, seconds * 1000);
}

// Before (re)connecting, ask the API what became of the session: it knows why better than ICE.
async function sessionState() {
  try {
    const session = await getSession(sessionId);
    if (session.phase === 'failed') return end(`The session failed: ${session.message || 'no reason given'}`, 'failed');
    if (session.phase === 'terminating') return end('This session has been ended.');
    return session.phase;
  } catch (err) {
    if (err.status === 404) return end(presence.guest ? 'This session has ended.' : 'This session has ended. Your files are kept for next time.');
    if (err.status === 401) return end(presence.guest ? ENDED_TEXT : err.message, 'failed');
    return retry(err.message);
  }
}

async function connect() {
  clearInterval(countdownTimer);
  if (ended) return;
  setState(attempt ? 'reconnecting' : 'connecting', 'Connecting…');
  const phase = await sessionState();
  if (phase === undefined) return;
  if (phase === 'pending') {
    setState('connecting', 'The session is starting…');
    reconnectTimer = setTimeout(connect, 1000);
    return;
  }
  if (transports.unavailable) return end(transports.unavailable, 'failed');
  refine.restart();
  if (transports.current === 'ws') connectWs();
  else connectWebrtc();
}

// --- WebRTC (WHEP) -------------------------------------------------------------------------
async function connectWebrtc() {
  const current = new WhepSession(endpoint);
  whep = current;
  // auto: WebRTC that has not connected in time falls back to the WebSocket.
  const fallback = setTimeout(() => {
    if (current === whep && (!current.pc || current.pc.connectionState !== 'connected')) {
      fallBack('WebRTC did not connect within 4 s');
    }
  }, FALLBACK_MS);
  try {
    await current.connect((stream) => {
      video.srcObject = stream;
      video.play().catch(() => {});
    });
  } catch (err) {
    clearTimeout(fallback);
    // A refusal with a reason (the viewer limit, the session ending) is no network problem.
    if (current === whep) retry(err.message);
    return;
  }
  const { pc, channel } = current;
  stats.attach(pc);
  channel.addEventListener('open', () => { lastResize = ''; sendResize(); });
  channel.addEventListener('message', onMessage);
  // A channel that closes while ICE holds (the peer ended on the agent) is no network problem:
  // reconnect the same way; a failing connection falls back below.
  channel.addEventListener('close', () => { if (current === whep && !ended) retry('the connection closed'); });
  pc.addEventListener('connectionstatechange', () => {
    if (current !== whep) return;
    if (pc.connectionState === 'connected') {
      clearTimeout(fallback);
      connected('webrtc');
    } else if (pc.connectionState === 'failed') {
      clearTimeout(fallback);
      if (!fallBack('the WebRTC connection failed')) retry('the connection failed');
    } else if (pc.connectionState === 'disconnected') {
      setState('reconnecting', 'Connection interrupted…');
      setTimeout(() => {
        if (current === whep && pc.connectionState === 'disconnected' && !fallBack('the WebRTC connection was lost')) {
          retry('the connection was lost');
        }
      }, DISCONNECTED_GRACE_MS);
    }
  });
}

function connected(kind) {
  attempt = 0;
  transports.connected(kind);
  video.hidden = kind !== 'webrtc';
  canvas.hidden = kind !== 'ws';
  input.surface = kind === 'ws' ? canvas : video; // where a pointer maps to the display
  fitVideo();
  setState('connected', kind === 'ws' ? 'Connected (WebSocket)' : 'Connected');
  screen.focus();
}

// auto only: leave WebRTC for the WebSocket now; false when that is not an option.
function fallBack(reason) {
  if (!transports.fallBack(reason)) return false;
  closeTransports();
  clearTimeout(reconnectTimer);
  console.info('viewer: using the WebSocket transport:', reason);
  connect();
  return true;
}

// --- WebSocket + WebCodecs -----------------------------------------------------------------
async function connectWs() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/streaming/${encodeURIComponent(sessionId)}/ws`;
  const current = new WsSession(url, canvas, {
    onMessage: (text) => onMessage({ data: text }),
    onSize: (width, height) => setDisplay(width, height),
  });
  wsv = current;
  stats.attachWs(current);
  try {
    await current.connect();
  } catch (err) {
    // 4000 + an HTTP status: the gateway's refusal, with its reason; anything else: the network.
    const refused = current.closeInfo && current.closeInfo.code >= 4000;
    if (current === wsv) retry(refused ? err.message : transports.wsFailed());
    return;
  }
  if (current !== wsv) return;
  connected('ws');
  lastResize = '';
  sendResize();
  current.ws.addEventListener('close', (event) => {
    if (current !== wsv || ended) return;
    // 4000 + an HTTP status: the gateway says why (the viewer limit, the agent gone).
    retry(event.code >= 4000 && event.reason ? event.reason : 'the connection closed');
  });
}

function setDisplay(width, height) {
  if (width > 0 && height > 0) {
    input.display = { width, height };
    refine.resize(width, height);
  }
  fitVideo();
}

function onMessage(event) {
  let message;
  try { message = JSON.parse(event.data); } catch { return; }
  if (presence.handle(message)) return;
  switch (message.type) {
    case 'resized': setDisplay(message.width, message.height); break;
    case 'cursor': cursor.update(message); break;
    case 'clipboard': clipboard.fromAgent(message); break;
    case 'pong': if (typeof message.t === 'number') stats.pingRtt = performance.now() - message.t; break;
    case 'error': console.warn('agent:', message.message); window.viewer.lastError = message.message; break;
    case 'notice': if (typeof message.message === 'string') notices.show(message); break;
    case 'refine': case 'unrefine': refine.message(message); break;
    case 'unsaved': if (Array.isArray(message.documents)) notices.unsaved = message.documents.map(String); break;
    default: break;
  }
}

// The picture's own size is the display's size (a `resized` message may say so sooner).
video.addEventListener('resize', () => setDisplay(video.videoWidth, video.videoHeight));

// HiDPI: the display is asked for in device pixels and shown 1:1 in device pixels.
function sendResize() {
  if (!remoteResize.checked) return;
  const { width, height, scale } = deviceSize(screen.getBoundingClientRect(), window.devicePixelRatio || 1);
  if (`${width}x${height}@${scale}` === lastResize) return;
  lastResize = `${width}x${height}@${scale}`;
  send({ type: 'resize', width, height, scale });
}

function fitVideo() {
  const { width, height } = input.display;
  if (!width || !height) return;
  const shown = shownSize(screen.getBoundingClientRect(), input.display, window.devicePixelRatio || 1,
    remoteResize.checked);
  for (const picture of [video, canvas, refine.canvas]) {
    picture.style.width = `${shown.width}px`;
    picture.style.height = `${shown.height}px`;
  }
}

watchPixelRatio(() => { fitVideo(); lastResize = ''; sendResize(); });

let resizeTimer = null;
new ResizeObserver(() => {
  fitVideo();
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(sendResize, RESIZE_DEBOUNCE_MS);
}).observe(screen);

remoteResize.addEventListener('change', () => {
  localStorage.setItem('remote-resize', remoteResize.checked ? '1' : '0');
  fitVideo();
  lastResize = '';
  sendResize();
  screen.focus();
});

$('fullscreen').addEventListener('click', async () => {
  if (document.fullscreenElement) {
    await document.exitFullscreen();
    return;
  }
  await document.documentElement.requestFullscreen();
  // In fullscreen Chromium lets a page keep shortcuts such as Ctrl+W and Alt+Tab.
  if (navigator.keyboard && navigator.keyboard.lock) navigator.keyboard.lock().catch(() => {});
  screen.focus();
});
document.addEventListener('fullscreenchange', () => {
  if (!document.fullscreenElement && navigator.keyboard && navigator.keyboard.unlock) navigator.keyboard.unlock();
});
$('pointer-lock').addEventListener('click', () => input.requestPointerLock());
$('stats-toggle').addEventListener('click', () => { stats.toggle(); screen.focus(); });
$('end').addEventListener('click', async () => {
  if (!confirm(notices.endQuestion())) return;
  try {
    await endSession(sessionId);
    end('Session ended. Your files are kept for next time.');
  } catch (err) {
    setState(document.body.dataset.state, err.message);
  }
});

setInterval(() => send({ type: 'ping', t: performance.now() }), PING_INTERVAL_MS);
window.addEventListener('pagehide', closeTransports);

// For tests and debugging: what the page believes.
window.viewer = {
  get display() { return input.display; },
  get state() { return document.body.dataset.state; },
  get resource() { return whep && whep.resource; },
  get transport() { return transports.active; },
  get fallbackReason() { return transports.fallbackReason; },
  get painted() { return wsv ? wsv.stats.painted : video.getVideoPlaybackQuality().totalVideoFrames; },
  get latency() { return wsv ? wsv.latency() : null; },
  get unsaved() { return notices.unsaved; },
  get refined() { return refine.canvas.style.visibility === 'visible' ? refine.applied : 0; },
  get notice() { return notices.banner.hidden ? null : notices.banner.textContent; },
  get presence() { return presence.state; },
  get overlay() { return overlay.hidden ? null : $('overlay-text').textContent; },
  sendRaw, // what a page that ignores its role could send: the agent must refuse it
  lastError: null,
};

connect();
