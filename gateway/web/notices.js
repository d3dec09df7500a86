// What the session tells its viewers: notices from the gateway ("this session ends in 58 s"),
// with a live countdown, and which documents have unsaved changes (for "End session").

export class Notices {
  constructor(banner) {
    this.banner = banner;
    this.unsaved = [];
    this.timer = null;
  }

  // {"type": "notice", "message", "level", "seconds"?, "cancel"?}
  show(notice) {
    clearInterval(this.timer);
    if (notice.cancel) {
      this.flash(notice.message || 'The session stays open.');
      return;
    }
    this.banner.dataset.level = notice.level || 'info';
    if (typeof notice.seconds !== 'number') {
      this.banner.textContent = notice.message;
      this.banner.hidden = false;
      return;
    }
    const until = performance.now() + notice.seconds * 1000;
    const render = () => {
      const left = Math.max(0, Math.ceil((until - performance.now()) / 1000));
      this.banner.textContent = notice.message.replace(/\b\d+ s\b/, `${left} s`);
      if (left === 0) clearInterval(this.timer);
    };
    render();
    this.banner.hidden = false;
    this.timer = setInterval(render, 1000);
  }

  flash(text) {
    clearInterval(this.timer);
    this.banner.dataset.level = 'info';
    this.banner.textContent = text;
    this.banner.hidden = false;
    this.timer = setTimeout(() => { this.banner.hidden = true; }, 3000);
  }

  // The question "End session" asks: what would be lost, when the application says so.
  endQuestion() {
    if (!this.unsaved.length) return 'End this session? Your saved files are kept.';
    const names = this.unsaved.slice(0, 5).join(', ') + (this.unsaved.length > 5 ? ', …' : '');
    return `The application has unsaved changes in: ${names}.\n`
      + 'Ending the session now loses them (saved files are kept). End it anyway?';
  }
}
