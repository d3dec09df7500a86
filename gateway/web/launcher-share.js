// The launcher's Share panel for a running session (SPEC "Sharing a session"): make a link
// (role and expiry), copy it, see the live links, revoke one (its viewers are disconnected).
import { api } from './api.js';

const EXPIRIES = [['1 hour', 3600], ['8 hours', 28800], ['1 day', 86400], ['7 days', 604800]];
const ROLES = [['View only', 'view'], ['Can control', 'control']];

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

const options = (pairs, chosen) => pairs.map(([text, value]) => el('option', { value, selected: value === chosen }, text));

function until(expiresAt) {
  const s = Math.max(0, expiresAt - Date.now() / 1000);
  return s < 3600 ? `${Math.ceil(s / 60)} min left` : s < 86400 ? `${Math.round(s / 3600)} h left` : `${Math.round(s / 86400)} d left`;
}

export class SharePanel {
  constructor(root) {
    this.root = root;
    this.sessionId = null;
    this.role = el('select', { className: 'share-role', title: 'What the link lets others do' }, ...options(ROLES, 'view'));
    this.expiry = el('select', { className: 'share-expiry', title: 'How long the link works' }, ...options(EXPIRIES, 86400));
    this.make = el('button', { className: 'share-make primary' }, 'Make link');
    this.link = el('input', { className: 'share-link', readOnly: true, hidden: true });
    this.copy = el('button', { className: 'share-copy', hidden: true }, 'Copy');
    this.status = el('p', { className: 'share-status', role: 'status' });
    this.list = el('ul', { className: 'share-list' });
    root.append(el('div', { className: 'share-form' }, this.role, this.expiry, this.make),
      el('div', { className: 'share-form' }, this.link, this.copy), this.status, this.list);
    this.make.addEventListener('click', () => this.create());
    this.copy.addEventListener('click', () => this.copyLink());
  }

  get base() { return `/api/sessions/${encodeURIComponent(this.sessionId)}/shares`; }

  async open(sessionId) {
    this.sessionId = sessionId;
    this.root.hidden = false;
    this.link.hidden = this.copy.hidden = true;
    this.status.textContent = '';
    await this.refresh();
  }

  close() { this.root.hidden = true; }

  async refresh() {
    try {
      const { shares } = await api('GET', this.base);
      this.list.replaceChildren(...shares.map((s) => {
        const revoke = el('button', { className: 'share-revoke', title: 'Disconnect its viewers now' }, 'Revoke');
        revoke.addEventListener('click', () => this.revoke(s.id));
        return el('li', { className: 'share-item', title: s.id },
          el('span', {}, `${s.role === 'control' ? 'Can control' : 'View only'} · ${until(s.expires_at)}`), revoke);
      }));
      if (!shares.length) this.list.replaceChildren(el('li', { className: 'share-none' }, 'No links yet.'));
    } catch (err) {
      this.status.textContent = err.message;
    }
  }

  async create() {
    this.make.disabled = true;
    try {
      const made = await api('POST', this.base, { role: this.role.value, expires_in: Number(this.expiry.value) });
      this.link.value = new URL(made.url, location.origin).href; // the token is shown only now
      this.link.hidden = this.copy.hidden = false;
      this.link.select();
      this.status.textContent = 'Anyone with this link can join until it expires or you revoke it.';
      await this.refresh();
    } catch (err) {
      this.status.textContent = err.message;
    } finally {
      this.make.disabled = false;
    }
  }

  async copyLink() {
    try {
      await navigator.clipboard.writeText(this.link.value);
      this.status.textContent = 'Link copied.';
    } catch {
      this.link.select();
      this.status.textContent = 'Press Ctrl+C to copy the selected link.';
    }
  }

  async revoke(id) {
    try {
      await api('DELETE', `${this.base}/${encodeURIComponent(id)}`);
      this.status.textContent = 'Link revoked: whoever used it was disconnected.';
      this.link.hidden = this.copy.hidden = true;
      await this.refresh();
    } catch (err) {
      this.status.textContent = err.message;
    }
  }
}
