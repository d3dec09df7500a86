// Browser input -> the agent's input protocol (SPEC "Data channel"). Coordinates are mapped
// from the picture (the <video>, letterboxed or shown 1:1 in device pixels) to display pixels.

const BUTTONS = { 0: 1, 1: 2, 2: 3, 3: 8, 4: 9 }; // DOM MouseEvent.button -> X button
const WHEEL_LINE_PX = 40;
const WHEEL_PAGE_PX = 800;
const PASTE_WAIT_MS = 150;
const PASTE_IMAGE_WAIT_MS = 30000; // the most a paste key waits for its image to be uploaded

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
  // `surface`: the element showing the picture (default the screen); `images`: puts a pasted
  // image on the session's clipboard (a RemoteClipboard: `putImage(blob)`, and
  // `putClipboardImage()` for one only the clipboard has), each resolving when that is done.
  constructor(screen, send, { surface = screen, images = null } = {}) {
    this.screen = screen;
    this.surface = surface;
    this.send = send;
    this.images = images;
    this.display = { width: 0, height: 0 };
    this.keys = new Map(); // code -> key, for what is held down
    this.buttons = new Set();
    this.pasteTimer = null;
    this.heldKeys = null; // key events kept back, in order, until a paste is done
    this.uploads = 0; // pasted images being uploaded
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
    return toDisplay(this.surface.getBoundingClientRect(), this.display, e.clientX, e.clientY);
  }

  onMove(e) {
    if (this.locked) {
      // Movement is in page pixels: convert to display pixels at the current scale.
      const rect = this.surface.getBoundingClientRect();
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
    // Ctrl/Cmd+V: let the browser fire `paste` first (so no preventDefault), so that the
    // session's clipboard holds what is pasted before the application sees the key.
    const paste = down && (e.ctrlKey || e.metaKey) && e.code === 'KeyV' && !e.repeat;
    if (!paste) e.preventDefault(); // browser shortcuts go to the application where the browser allows it
    if (!e.code && !e.key) return;
    if (paste || this.heldKeys) this.hold([e.code, e.key, down]);
    else this.key(e.code, e.key, down);
  }

  key(code, key, down) {
    if (down) this.keys.set(code, key);
    else if (!this.keys.delete(code)) return; // a release whose press went elsewhere
    this.send({ type: 'key', code, key, down });
  }

  // Keep a key event back, with every one after it, until the paste is done (flushPaste).
  hold(event) {
    if (!this.heldKeys) {
      this.heldKeys = [];
      this.pasteTimer = setTimeout(() => this.flushPaste(), PASTE_WAIT_MS);
    }
    this.heldKeys.push(event);
  }

  onPaste(e) {
    e.preventDefault();
    const data = e.clipboardData;
    const item = data && [...data.items].find((i) => i.kind === 'file' && i.type.startsWith('image/'));
    const text = data ? data.getData('text/plain') : '';
    if (item && this.images) {
      this.upload(this.images.putImage(item.getAsFile()));
    } else if (text) {
      this.send({ type: 'clipboard', text });
      if (!this.uploads) this.flushPaste();
    } else if (this.images) {
      // Handed nothing (Chromium's Ctrl+Shift+V pastes text only): the clipboard may still
      // hold an image, which the page may read where the user allows it.
      this.upload(this.images.putClipboardImage());
    } else if (!this.uploads) {
      this.flushPaste();
    }
  }

  // An image takes a moment to upload: the keys wait for it (at most PASTE_IMAGE_WAIT_MS),
  // as they wait for text.
  upload(done) {
    this.uploads += 1;
    this.heldKeys = this.heldKeys || [];
    clearTimeout(this.pasteTimer);
    this.pasteTimer = setTimeout(() => { this.uploads = 0; this.flushPaste(); }, PASTE_IMAGE_WAIT_MS);
    done.finally(() => {
      this.uploads = Math.max(0, this.uploads - 1);
      if (!this.uploads) this.flushPaste();
    });
  }

  flushPaste() {
    clearTimeout(this.pasteTimer);
    const held = this.heldKeys || [];
    this.heldKeys = null;
    for (const [code, key, down] of held) this.key(code, key, down);
  }

  // Nothing may stay pressed on the remote side when this page loses focus or the connection.
  releaseAll() {
    this.flushPaste();
    for (const [code, key] of this.keys) this.send({ type: 'key', code, key, down: false });
    for (const button of this.buttons) this.send({ type: 'button', button, down: false });
    this.keys.clear();
    this.buttons.clear();
  }
}
