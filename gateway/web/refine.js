// Exact pixels on a still screen: the agent follows a still screen with a lossless PNG of the
// tiles that changed (transparent elsewhere); this keeps them on a canvas over the video and
// shows it until the screen changes again (docs/PROTOCOL.md "Refinement").

export class RefineOverlay {
  constructor(canvas, base) {
    this.canvas = canvas;
    this.base = base; // '/streaming/{id}/refine/'
    this.ctx = canvas.getContext('2d', { alpha: true });
    this.applied = 0;      // id of the last refinement painted
    this.broken = true;    // missed one: only a `full` refinement makes the overlay right again
    this.queue = Promise.resolve(); // messages are applied in order, fetches included
    this.hide();
  }

  hide() { this.canvas.style.visibility = 'hidden'; }

  // A new connection: the agent starts again with a `full` refinement.
  restart() { this.queue = this.queue.then(() => { this.broken = true; this.hide(); }); }

  // The display changed size: what the canvas holds no longer fits.
  resize(width, height) {
    this.queue = this.queue.then(() => {
      if (this.canvas.width === width && this.canvas.height === height) return;
      this.canvas.width = width;
      this.canvas.height = height;
      this.broken = true;
      this.hide();
    });
  }

  message(message) {
    if (message.type === 'unrefine') {
      this.queue = this.queue.then(() => this.hide());
    } else if (message.type === 'refine' && Number.isInteger(message.id)) {
      this.queue = this.queue.then(() => this.apply(message)).catch(() => { this.broken = true; this.hide(); });
    }
  }

  async apply(m) {
    if (m.id === this.applied) {
      if (!this.broken) this.canvas.style.visibility = 'visible';
      return;
    }
    if (!m.full && this.broken) return;
    const response = await fetch(this.base + m.id, { cache: 'no-store', credentials: 'same-origin' });
    if (!response.ok) throw new Error(`refinement ${m.id}: ${response.status}`);
    const bitmap = await createImageBitmap(await response.blob(),
      { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    const x = Number(m.x) || 0, y = Number(m.y) || 0;
    if (m.full) this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.ctx.drawImage(bitmap, x, y);
    bitmap.close();
    this.applied = m.id;
    this.broken = false;
    this.canvas.style.visibility = 'visible';
  }
}
