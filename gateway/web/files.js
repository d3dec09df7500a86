// The user's files in the session's home (SPEC "Files in the session's home"): a panel to
// browse, download, delete and make folders, and uploads by drag-and-drop anywhere on the
// viewer (or the Upload button) into the folder the panel shows, each with progress and Cancel.
// Uploads use XMLHttpRequest: its upload progress events are what fetch() lacks.

const DEFAULT_FOLDER = ['Uploads'];
const POLL_MS = 5000; // while open, so that a file the application saves shows up by itself
const DONE_ROW_MS = 4000;

function formatSize(bytes) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

async function errorOf(response) {
  try { return (await response.json()).error || `Error ${response.status}`; } catch { return `Error ${response.status}`; }
}

export class FilesPanel {
  // `root` is the panel (hidden until toggled); `hint` the overlay shown while dragging files.
  constructor(sessionId, root, toggle, hint) {
    this.base = `/api/sessions/${encodeURIComponent(sessionId)}/files/`;
    this.root = root;
    this.hint = hint;
    this.folder = [...DEFAULT_FOLDER];
    this.entries = [];
    this.uploads = new Set();
    this.timer = null;
    const $ = (selector) => root.querySelector(selector);
    this.list = $('.files-list');
    this.where = $('.files-path');
    this.status = $('.files-status');
    this.queue = $('.files-uploads');
    this.picker = $('input[type=file]');
    toggle.addEventListener('click', () => (root.hidden ? this.open() : this.close()));
    $('.files-up').addEventListener('click', () => { if (this.folder.length) { this.folder.pop(); this.refresh(); } });
    $('.files-refresh').addEventListener('click', () => this.refresh());
    $('.files-mkdir').addEventListener('click', () => this.makeFolder());
    $('.files-upload').addEventListener('click', () => this.picker.click());
    this.picker.addEventListener('change', () => { this.uploadAll([...this.picker.files]); this.picker.value = ''; });
    this.attachDrop();
  }

  url(segments, folder = false) {
    return this.base + segments.map(encodeURIComponent).join('/') + (folder && segments.length ? '/' : '');
  }

  open() {
    this.root.hidden = false;
    this.refresh();
    clearInterval(this.timer);
    this.timer = setInterval(() => { if (!this.uploads.size) this.refresh(); }, POLL_MS);
  }

  close() {
    this.root.hidden = true;
    clearInterval(this.timer);
  }

  say(text, bad = false) {
    this.status.textContent = text;
    this.status.classList.toggle('error', bad);
  }

  async refresh() {
    const folder = [...this.folder];
    let response = await fetch(this.url(folder, true), { credentials: 'same-origin' }).catch(() => null);
    if (response && response.status === 404 && folder.join('/') === DEFAULT_FOLDER.join('/')) {
      // ~/Uploads is made on first use.
      await fetch(this.url(folder, true), { method: 'PUT', credentials: 'same-origin' }).catch(() => null);
      response = await fetch(this.url(folder, true), { credentials: 'same-origin' }).catch(() => null);
    }
    if (folder.join('/') !== this.folder.join('/')) return; // navigated meanwhile
    this.where.textContent = `~/${folder.join('/')}`;
    if (!response) return this.say('The gateway cannot be reached.', true);
    if (!response.ok) {
      if (response.status === 404 && folder.length) { this.folder.pop(); return this.refresh(); }
      return this.say(await errorOf(response), true);
    }
    this.entries = (await response.json()).entries;
    this.render();
    this.say(this.entries.length ? '' : 'This folder is empty. Drop files anywhere to upload them here.');
  }

  render() {
    const sorted = [...this.entries].sort((a, b) => (a.type === 'dir') !== (b.type === 'dir')
      ? (a.type === 'dir' ? -1 : 1) : a.name.localeCompare(b.name));
    this.list.replaceChildren(...sorted.map((entry) => this.row(entry)));
  }

  row(entry) {
    const path = [...this.folder, entry.name];
    const li = el('li', { className: `files-entry files-${entry.type}` });
    li.dataset.name = entry.name;
    const when = new Date(entry.modified).toLocaleString();
    if (entry.type === 'dir') {
      li.append(el('button', { className: 'files-name', title: 'Open this folder',
        onclick: () => { this.folder = path; this.refresh(); } }, `${entry.name}/`));
    } else {
      const link = el('a', { className: 'files-name', href: `${this.url(path)}?download=1`, download: entry.name,
        title: 'Download' }, entry.name + (entry.type === 'link' ? ' →' : ''));
      li.append(link);
    }
    li.append(el('span', { className: 'files-meta', title: when },
      entry.type === 'file' ? formatSize(entry.size) : entry.type === 'link' ? 'link' : 'folder'),
    el('button', { className: 'files-delete', title: `Delete ${entry.name}`, onclick: () => this.remove(entry) }, '✕'));
    return li;
  }

  async remove(entry) {
    const what = entry.type === 'dir' ? `the folder "${entry.name}"` : `"${entry.name}"`;
    if (!confirm(`Delete ${what} from your home? This cannot be undone.`)) return;
    const response = await fetch(this.url([...this.folder, entry.name]), { method: 'DELETE', credentials: 'same-origin' })
      .catch(() => null);
    if (!response) return this.say('The gateway cannot be reached.', true);
    if (!response.ok) return this.say(response.status === 409 ? `The folder "${entry.name}" is not empty.` : await errorOf(response), true);
    this.refresh();
  }

  async makeFolder() {
    const name = (prompt('Name of the new folder:') || '').trim();
    if (!name) return;
    if (name.includes('/') || name === '.' || name === '..') return this.say('A folder name cannot contain "/".', true);
    const response = await fetch(this.url([...this.folder, name], true), { method: 'PUT', credentials: 'same-origin' })
      .catch(() => null);
    if (!response) return this.say('The gateway cannot be reached.', true);
    if (!response.ok) return this.say(await errorOf(response), true);
    this.refresh();
  }

  attachDrop() {
    let depth = 0; // dragenter/dragleave fire for every element crossed
    const carriesFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
    window.addEventListener('dragenter', (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth += 1;
      this.hint.textContent = `Drop to upload to ~/${this.folder.join('/')}`;
      this.hint.hidden = false;
    });
    window.addEventListener('dragover', (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault(); // without it the browser would open the file instead
      e.dataTransfer.dropEffect = 'copy';
    });
    window.addEventListener('dragleave', () => { depth = Math.max(0, depth - 1); if (!depth) this.hint.hidden = true; });
    window.addEventListener('drop', (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth = 0;
      this.hint.hidden = true;
      const items = [...(e.dataTransfer.items || [])];
      const folders = items.filter((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()?.isDirectory).length;
      const files = [...e.dataTransfer.files].filter((f, i) => !(items[i] && items[i].webkitGetAsEntry
        && items[i].webkitGetAsEntry()?.isDirectory));
      if (this.root.hidden) this.open();
      if (folders) this.say('Folders cannot be dropped: drop the files inside them.', true);
      this.uploadAll(files);
    });
  }

  uploadAll(files) {
    for (const file of files) this.upload(file, [...this.folder]);
  }

  upload(file, folder) {
    const here = folder.join('/') === this.folder.join('/');
    const exists = here && this.entries.some((e) => e.name === file.name);
    if (exists && !confirm(`"${file.name}" already exists in ~/${folder.join('/')}. Replace it?`)) return;
    const xhr = new XMLHttpRequest();
    const bar = el('progress', { max: file.size || 1, value: 0 });
    const label = el('span', { className: 'files-upload-name' }, file.name);
    const cancel = el('button', { className: 'files-cancel', onclick: () => xhr.abort() }, 'Cancel');
    const row = el('li', { className: 'files-upload' }, label, bar, cancel);
    row.dataset.name = file.name;
    this.queue.append(row);
    const finish = (text, bad) => {
      this.uploads.delete(xhr);
      row.dataset.state = bad ? 'failed' : 'done';
      cancel.remove();
      label.textContent = `${file.name}: ${text}`;
      row.classList.toggle('error', bad);
      setTimeout(() => row.remove(), DONE_ROW_MS);
      if (folder.join('/') === this.folder.join('/')) this.refresh();
    };
    xhr.upload.addEventListener('progress', (e) => { bar.value = e.loaded; });
    xhr.addEventListener('load', () => {
      if (xhr.status === 200 || xhr.status === 201) return finish('uploaded', false);
      let message = `error ${xhr.status}`;
      try { message = JSON.parse(xhr.responseText).error || message; } catch { /* not JSON */ }
      if (xhr.status === 412) message = 'somebody else created a file of that name meanwhile';
      finish(message, true);
    });
    xhr.addEventListener('error', () => finish('the connection failed', true));
    xhr.addEventListener('abort', () => finish('cancelled (nothing was kept)', true));
    xhr.open('PUT', this.url([...folder, file.name]));
    if (!exists) xhr.setRequestHeader('If-None-Match', '*'); // never replace what we did not show
    row.dataset.state = 'uploading';
    this.uploads.add(xhr);
    xhr.send(file);
  }
}
