// The session's clipboard in the browser (SPEC "Clipboard beyond text"): what an application
// copies goes onto the browser's clipboard (text from the data channel; an image fetched from
// /streaming/{id}/clipboard), and an image pasted in the page is PUT there for X applications.
// Browsers let a page write the clipboard only while it has focus (some only during a user
// gesture): a write they refuse is kept and done on the user's next click or key in the page.

export class RemoteClipboard {
  constructor(sessionId, toolbar) {
    this.url = `/streaming/${encodeURIComponent(sessionId)}/clipboard`;
    this.pieces = [];
    this.copies = 0; // the latest copy wins, whichever fetch ends last
    this.pending = null; // what is still to be written: () => Promise
    this.hint = document.createElement('span');
    this.hint.className = 'clipboard-hint';
    this.hint.hidden = true;
    this.hint.setAttribute('role', 'status');
    if (toolbar) toolbar.insertBefore(this.hint, toolbar.querySelector('.spacer'));
    const retry = () => { if (this.pending) this.write(this.pending); };
    window.addEventListener('pointerdown', retry, { capture: true });
    window.addEventListener('keydown', retry, { capture: true });
  }

  get usable() {
    return Boolean(navigator.clipboard && window.isSecureContext);
  }

  // A `clipboard` message from the agent: text in pieces, or an image announced by its size.
  async fromAgent(message) {
    const copy = ++this.copies;
    if (typeof message.text === 'string') {
      this.pieces.push(message.text);
      if (message.more) return;
      const text = this.pieces.join('');
      this.pieces = [];
      if (this.usable) this.write(() => navigator.clipboard.writeText(text));
    } else if (message.mime === 'image/png' && this.usable && window.ClipboardItem) {
      let blob;
      try {
        const response = await fetch(this.url, { credentials: 'same-origin', cache: 'no-store' });
        if (response.status !== 200 || response.headers.get('Content-Type') !== 'image/png') return;
        blob = new Blob([await response.arrayBuffer()], { type: 'image/png' });
      } catch {
        return; // the session is gone or the image changed again: nothing to put there
      }
      if (copy !== this.copies) return;
      this.write(() => navigator.clipboard.write([new ClipboardItem({ 'image/png': blob })]));
    }
  }

  async write(attempt) {
    this.pending = null;
    try {
      await attempt();
      this.hint.hidden = true;
    } catch {
      this.pending = attempt;
      this.hint.textContent = 'Copied in the session: click or press a key here to put it on your clipboard';
      this.hint.hidden = false;
    }
  }

  // An image pasted in the page becomes the session's clipboard (as PNG); resolves when the
  // agent has it, so that the paste key reaches the application only then.
  async putImage(blob) {
    try {
      const png = blob.type === 'image/png' ? blob : await toPng(blob);
      const response = await fetch(this.url, {
        method: 'PUT', credentials: 'same-origin', headers: { 'Content-Type': 'image/png' }, body: png,
      });
      if (!response.ok) console.warn('clipboard:', response.status, await response.text());
      return response.ok;
    } catch (err) {
      console.warn('clipboard:', err);
      return false;
    }
  }

  // The image on the browser's clipboard, for a paste that handed the page none; false when
  // there is none or the page may not read the clipboard (the user said no).
  async putClipboardImage() {
    if (!this.usable || !navigator.clipboard.read) return false;
    try {
      for (const item of await navigator.clipboard.read()) {
        const type = item.types.find((t) => t.startsWith('image/'));
        if (type) return this.putImage(await item.getType(type));
      }
    } catch {
      // not allowed, or nothing readable: the paste goes on with what X has
    }
    return false;
  }
}

// JPEG, GIF, WebP, … as PNG: X applications are offered image/png.
async function toPng(file) {
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext('2d').drawImage(bitmap, 0, 0);
  return new Promise((resolve, reject) => canvas.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error('the image cannot be converted'))), 'image/png'));
}
