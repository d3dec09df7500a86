// Browser input -> the agent's input protocol (SPEC "Data channel"). Coordinates are mapped
// from the letterboxed <video> to display pixels.

const BUTTONS = { 0: 1, 1: 2, 2: 3, 3: 8, 4: 9 }; // DOM MouseEvent.button -> X button
const WHEEL_LINE_PX = 40;
const WHEEL_PAGE_PX = 800;
const PASTE_WAIT_MS = 150;

// Where a point of the page falls on the remote display, or null outside the picture.
export function toDisplay(rect, display, clientX, clientY) {
  if (!display.width || !display.height || !rect.width || !rect.height) return null;
  const scale = Math.min(rect.width / display.width, rect.height / display.height);
  const left = rect.left + (rect.width - display.width * scale) / 2;
  const top = rect.top + (rect.height - display.height * scale) / 2;
  const x = Math.floor((clientX - left) / scale);
  const y = Math.floor((clientY - top) / scale);
  if (x < 0 || y < 0 || x >= display.width || y >= display.height) return null;
  return { x, y, scale };
}

export class InputCapture {
  // `send(message)` delivers a message to the agent (it drops it while disconnected).
  constructor(screen, send) {
    this.screen = screen;
    this.send = send;
    this.display = { width: 0, height: 0 };
    this.keys = new Map(); // code -> key, for what is held down
    this.buttons = new Set();
    this.pendingPaste = null;
    this.pasteTimer = null;
  }

  attach() {
    const s = this.screen;
    s.addEventListener('pointermove', (e) => this.onMove(e));
    s.addEventListener('pointerdown', (e) => this.onButton(e, true));
    s.addEventListener('pointerup', (e) => this.onButton(e, false));
    s.addEventListener('pointercancel', () => this.releaseAll());
    s.addEventListener('wheel', (e) => this.onWheel(e), { passive: false });
    s.addEventListener('contextmenu', (e) => e.preventDefault());
    window.addEventListener('keydown', (e) => this.onKey(e, true), { capture: true });
    window.addEventListener('keyup', (e) => this.onKey(e, false), { capture: true });
    window.addEventListener('paste', (e) => this.onPaste(e));
    window.addEventListener('blur', () => this.releaseAll());
    document.addEventListener('visibilitychange', () => { if (document.hidden) this.releaseAll(); });
  }

  get locked() {
    return document.pointerLockElement === this.screen;
  }

  requestPointerLock() {
    this.screen.focus();
    this.screen.requestPointerLock();
  }

  point(e) {
    return toDisplay(this.screen.getBoundingClientRect(), this.display, e.clientX, e.clientY);
  }

  onMove(e) {
    if (this.locked) {
      // Movement is in page pixels: convert to display pixels at the current scale.
      const rect = this.screen.getBoundingClientRect();
      const scale = Math.min(rect.width / this.display.width, rect.height / this.display.height) || 1;
      const dx = Math.round(e.movementX / scale);
      const dy = Math.round(e.movementY / scale);
      if (dx || dy) this.send({ type: 'pointer_rel', dx, dy });
      return;
    }
    const events = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
    const last = events.length ? events[events.length - 1] : e;
    const p = this.point(last);
    if (p) this.send({ type: 'pointer', x: p.x, y: p.y });
  }

  onButton(e, down) {
    const button = BUTTONS[e.button];
    if (button === undefined) return;
    e.preventDefault();
    this.screen.focus();
    if (down) this.screen.setPointerCapture(e.pointerId);
    if (!this.locked) {
      const p = this.point(e);
      if (!p && down) return;
      if (p) this.send({ type: 'pointer', x: p.x, y: p.y });
    }
    if (down) this.buttons.add(button);
    else if (!this.buttons.delete(button)) return;
    this.send({ type: 'button', button, down });
  }

  onWheel(e) {
    e.preventDefault();
    const unit = e.deltaMode === 1 ? WHEEL_LINE_PX : e.deltaMode === 2 ? WHEEL_PAGE_PX : 1;
    const dx = Math.round(e.deltaX * unit);
    const dy = Math.round(e.deltaY * unit);
    if (dx || dy) this.send({ type: 'wheel', dx, dy });
  }

  onKey(e, down) {
    if (e.target instanceof HTMLInputElement || e.isComposing) return;
    // Ctrl/Cmd+V: let the browser fire `paste` first so the remote clipboard holds the text
    // before the application sees the keystroke.
    if (down && (e.ctrlKey || e.metaKey) && e.code === 'KeyV' && !e.repeat) {
      this.pendingPaste = { code: e.code, key: e.key };
      this.pasteTimer = setTimeout(() => this.flushPaste(), PASTE_WAIT_MS);
      return;
    }
    e.preventDefault(); // browser shortcuts go to the application where the browser allows it
    if (!e.code && !e.key) return;
    if (down) this.keys.set(e.code, e.key);
    else if (!this.keys.delete(e.code)) return; // a release whose press went elsewhere
    this.send({ type: 'key', code: e.code, key: e.key, down });
  }

  onPaste(e) {
    e.preventDefault();
    const text = e.clipboardData ? e.clipboardData.getData('text/plain') : '';
    if (text) this.send({ type: 'clipboard', text });
    this.flushPaste();
  }

  flushPaste() {
    clearTimeout(this.pasteTimer);
    const key = this.pendingPaste;
    this.pendingPaste = null;
    if (!key) return;
    this.keys.set(key.code, key.key);
    this.send({ type: 'key', code: key.code, key: key.key, down: true });
  }

  // Nothing may stay pressed on the remote side when this page loses focus or the connection.
  releaseAll() {
    for (const [code, key] of this.keys) this.send({ type: 'key', code, key, down: false });
    for (const button of this.buttons) this.send({ type: 'button', button, down: false });
    this.keys.clear();
    this.buttons.clear();
  }
}
