// HiDPI (SPEC "HiDPI"): the remote display is asked for in device pixels and shown 1:1 in
// device pixels, so that its text is as sharp as on a local screen.

// The display size for a page area of `rect` (CSS pixels) at `ratio` device pixels per CSS
// pixel, in even numbers (H.264); the `scale` sent with it is the ratio within the agent's 1–4.
export function deviceSize(rect, ratio) {
  const even = (v) => Math.max(2, Math.floor((v * ratio) / 2) * 2);
  return { width: even(rect.width), height: even(rect.height), scale: Math.min(4, Math.max(1, ratio)) };
}

// The CSS size that shows a display of `display` device pixels 1:1 at `ratio`, made smaller
// (never larger) when it does not fit `rect`, the page area.
export function shownSize(rect, display, ratio) {
  const width = display.width / ratio;
  const height = display.height / ratio;
  const fit = Math.min(1, rect.width / width, rect.height / height);
  return { width: width * fit, height: height * fit };
}

// Calls `onChange(ratio)` whenever devicePixelRatio changes: the window moved to another
// screen, or the browser's zoom changed.
export function watchPixelRatio(onChange) {
  const arm = () => {
    const query = matchMedia(`(resolution: ${window.devicePixelRatio}dppx)`);
    query.addEventListener('change', () => { arm(); onChange(window.devicePixelRatio); }, { once: true });
  };
  arm();
}
