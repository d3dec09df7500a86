// The launcher: one card per application: start or resume, progress, errors in words.
import { createSession, endSession, followSession, listApplications, listSessions } from './api.js';
import { SharePanel } from './launcher-share.js';

const LABELS = { gimp: 'GIMP', inkscape: 'Inkscape', blender: 'Blender' };
const PHASE_TEXT = {
  pending: 'Starting…',
  running: 'Running',
  terminating: 'Ending…',
  failed: 'Failed',
};

const notice = document.getElementById('notice');
const appsEl = document.getElementById('apps');
const template = document.getElementById('app-card');

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

class AppCard {
  constructor(app) {
    this.app = app;
    this.session = null;
    this.el = template.content.firstElementChild.cloneNode(true);
    this.el.dataset.app = app.name;
    this.el.querySelector('h2').textContent = LABELS[app.name] || app.name;
    this.progress = this.el.querySelector('progress');
    this.status = this.el.querySelector('.status');
    this.startButton = this.el.querySelector('.start');
    this.endButton = this.el.querySelector('.end');
    this.shareButton = this.el.querySelector('.share-toggle');
    this.share = new SharePanel(this.el.querySelector('.share'));
    this.shareButton.addEventListener('click', () => (this.share.root.hidden ? this.share.open(this.session.id) : this.share.close()));
    this.startButton.addEventListener('click', () => this.start());
    this.endButton.addEventListener('click', () => this.end());
    if (!app.available) this.status.textContent = 'Not installed on this server';
    this.render();
  }

  render(error) {
    const s = this.session;
    const phase = s ? s.phase : null;
    this.progress.hidden = phase !== 'pending';
    if (s && typeof s.progress === 'number') this.progress.value = s.progress;
    this.startButton.textContent = phase === 'running' ? 'Open' : phase === 'pending' ? 'Starting…' : 'Start';
    this.startButton.disabled = phase === 'pending' || phase === 'terminating';
    this.endButton.hidden = !s || phase === 'terminating';
    this.shareButton.hidden = phase !== 'running';
    if (phase !== 'running') this.share.close();
    this.status.classList.toggle('error', Boolean(error) || phase === 'failed');
    if (error) this.status.textContent = error;
    else if (s) this.status.textContent = s.phase === 'pending' && s.message ? s.message
      : s.phase === 'failed' ? `Failed: ${s.message || 'the session stopped'}` : PHASE_TEXT[s.phase];
    else if (this.app.available) this.status.textContent = '';
  }

  async start() {
    if (this.session && this.session.phase === 'running') {
      location.href = this.session.streaming_url;
      return;
    }
    this.startButton.disabled = true;
    try {
      this.session = await createSession(this.app.name);
    } catch (err) {
      this.render(err.message);
      return;
    }
    this.render();
    await this.follow();
  }

  async follow() {
    const last = await followSession(this.session.id, (s) => { this.session = s; this.render(); });
    if (last === null) {
      this.session = null;
      this.render('The session was ended.');
    } else if (last.phase === 'running') {
      location.href = last.streaming_url;
    }
  }

  async end() {
    if (!this.session) return;
    const name = LABELS[this.app.name] || this.app.name;
    const question = `End your ${name} session? Anything not saved in ${name} is lost; `
      + 'saved files are kept. (The session\'s own page names unsaved documents.)';
    if (!confirm(question)) return;
    try {
      await endSession(this.session.id);
    } catch (err) {
      this.render(err.message);
      return;
    }
    this.session = null;
    this.render('Session ended. Your files are kept for next time.');
  }
}

async function main() {
  let apps, sessions;
  try {
    [apps, sessions] = await Promise.all([listApplications(), listSessions()]);
  } catch (err) {
    showNotice(err.message);
    return;
  }
  for (const app of apps) {
    const card = new AppCard(app);
    card.session = sessions.find((s) => s.application === app.name && s.phase !== 'terminating') || null;
    card.render();
    appsEl.append(card.el);
    if (card.session && card.session.phase === 'pending') card.follow();
  }
}

main();
