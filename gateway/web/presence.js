// Several people in one session (docs/PROTOCOL.md "Sharing"): who is connected (the owner's
// list), everybody's pointer drawn here, labelled (never by X), the owner's one-click "take
// control" switch, and what a guest may do. The agent enforces every role; this page only
// stops sending what would be refused and says why.
//
// viewer.js hooks: outgoing(message) before sending (null: do not send), handle(message) for
// each agent message (true: consumed), and `guest` / ENDED_TEXT for how a share link ends.

const POINTER_HZ = 30;
export const ENDED_TEXT = 'This link was revoked or has expired. Ask the person who shared it for a new one.';
const ROLE_TEXT = { owner: 'Owner', control: 'Can control', view: 'View only' };
const INPUT = new Set(['pointer', 'pointer_rel', 'button', 'wheel', 'key', 'clipboard', 'resize']);

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function ago(since) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - since));
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

export class Presence {
  // `screen` holds the video; `display()` the remote display's size; `send` the raw sender;
  // `onEnded(text)` ends the page (the link was revoked or expired).
  constructor({ screen, toolbar, display, send, onEnded }) {
    this.screen = screen;
    this.display = display;
    this.rawSend = send;
    this.onEnded = onEnded;
    this.role = null; // unknown until the agent says
    this.exclusive = false;
    this.holder = null;
    this.viewers = [];
    this.pointers = new Map(); // pointer id -> element
    this.lastPoint = 0;
    this.layer = el('div', { className: 'pointers' });
    screen.append(this.layer);
    this.badge = el('span', { className: 'badge role', hidden: true });
    this.peopleButton = el('button', { className: 'people-toggle', hidden: true, title: 'Who is connected' }, 'People');
    this.controlButton = el('button', { className: 'control-toggle', hidden: true });
    this.panel = el('aside', { className: 'people', hidden: true });
    this.list = el('ul', { className: 'people-list' });
    this.panel.append(el('strong', {}, 'Connected'), this.list);
    const before = toolbar.querySelector('#stats-toggle');
    toolbar.insertBefore(this.badge, before);
    toolbar.insertBefore(this.controlButton, before);
    toolbar.insertBefore(this.peopleButton, before);
    document.body.append(this.panel);
    this.peopleButton.addEventListener('click', () => { this.panel.hidden = !this.panel.hidden; });
    this.controlButton.addEventListener('click', () => this.rawSend({ type: 'control', exclusive: !this.exclusive }));
    new ResizeObserver(() => this.redrawPointers()).observe(screen);
  }

  get guest() { return this.role === 'view' || this.role === 'control'; }

  // May this page drive X now? (The agent decides; this only avoids sending refused input.)
  get drives() { return this.role === 'owner' || (this.role === 'control' && !this.exclusive) || this.role === null; }

  outgoing(message) {
    if (!INPUT.has(message.type)) return message;
    if (message.type === 'resize' && this.guest) return null; // the owner's display size
    if (this.drives) return message;
    if (message.type !== 'pointer') return null;
    const now = performance.now(); // a watcher still points, for the others to see
    if (now - this.lastPoint < 1000 / POINTER_HZ) return null;
    this.lastPoint = now;
    return { type: 'point', x: message.x, y: message.y };
  }

  handle(message) {
    switch (message.type) {
      case 'control': this.onControl(message); return true;
      case 'viewers': if (Array.isArray(message.viewers)) this.onViewers(message.viewers); return true;
      case 'pointer': this.onPointer(message); return true;
      case 'disconnect': this.onEnded(ENDED_TEXT); return true;
      default: return false;
    }
  }

  onControl(message) {
    this.role = message.role;
    this.exclusive = Boolean(message.exclusive);
    this.holder = message.holder || null;
    document.body.dataset.role = this.role;
    const owner = this.role === 'owner';
    this.badge.hidden = owner;
    this.badge.textContent = this.role === 'control' && this.exclusive ? 'View only (the owner has control)'
      : ROLE_TEXT[this.role] || this.role;
    this.showOwnerTools();
    this.controlButton.textContent = this.exclusive ? 'Give control back' : 'Take control';
    this.controlButton.title = this.exclusive ? 'Let guests with control links drive again'
      : 'Make everyone else view-only';
    this.screen.title = this.holder && !message.holding ? `${this.holder} is using the mouse or keyboard` : '';
    // What only the owner has: ending the session, its files, the display's size.
    for (const id of ['end', 'files-toggle']) {
      const node = document.getElementById(id);
      if (node) node.hidden = !owner;
    }
    const resize = document.getElementById('remote-resize');
    if (resize && !owner) resize.closest('label').hidden = true;
  }

  // The owner's People and control buttons, once somebody else is there (alone, the toolbar
  // stays as it was).
  showOwnerTools() {
    const shown = this.role === 'owner' && (this.viewers.length > 1 || this.exclusive);
    this.peopleButton.hidden = this.controlButton.hidden = !shown;
    if (!shown) this.panel.hidden = true;
  }

  onViewers(viewers) {
    this.viewers = viewers;
    this.showOwnerTools();
    this.peopleButton.textContent = `People (${viewers.length})`;
    this.list.replaceChildren(...viewers.map((v) => el('li', { className: 'person' },
      el('span', { className: 'person-label' }, v.label || v.peer),
      el('span', { className: 'person-meta' }, `${ROLE_TEXT[v.role] || v.role} · ${v.transport} · ${ago(v.since)}`))));
  }

  onPointer(message) {
    if (message.gone) { this.removePointer(message.id); return; }
    let node = this.pointers.get(message.id);
    if (!node) {
      node = el('div', { className: 'remote-pointer' }, el('span', { className: 'remote-pointer-label' }));
      this.pointers.set(message.id, node);
      this.layer.append(node);
    }
    node.dataset.x = message.x;
    node.dataset.y = message.y;
    node.querySelector('span').textContent = message.label || 'guest';
    this.place(node);
  }

  removePointer(id) {
    const node = this.pointers.get(id);
    if (node) node.remove();
    this.pointers.delete(id);
  }

  // Display pixels -> the letterboxed video's place on the page (input.js's toDisplay, inverted).
  place(node) {
    const { width, height } = this.display();
    const rect = this.screen.getBoundingClientRect();
    if (!width || !height || !rect.width) { node.hidden = true; return; }
    const scale = Math.min(rect.width / width, rect.height / height);
    node.hidden = false;
    node.style.left = `${(rect.width - width * scale) / 2 + Number(node.dataset.x) * scale}px`;
    node.style.top = `${(rect.height - height * scale) / 2 + Number(node.dataset.y) * scale}px`;
  }

  redrawPointers() { for (const node of this.pointers.values()) this.place(node); }

  // For tests and debugging.
  get state() {
    return {
      role: this.role, exclusive: this.exclusive, holder: this.holder,
      viewers: this.viewers.map((v) => ({ role: v.role, transport: v.transport, label: v.label })),
      pointers: [...this.pointers.values()].map((n) => ({ label: n.textContent, x: Number(n.dataset.x), y: Number(n.dataset.y) })),
    };
  }
}
