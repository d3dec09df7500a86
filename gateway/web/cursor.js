// Local cursor drawing: the agent sends the X cursor's image and hotspot when it changes, and
// the page shows it as the CSS cursor, so the pointer moves without a network round trip.

function imageUrl(message) {
  const image = message.image || message.png || message.data;
  if (typeof image !== 'string' || !image) return null;
  return image.startsWith('data:') ? image : `data:image/png;base64,${image}`;
}

function hotspot(message) {
  if (Array.isArray(message.hotspot)) return message.hotspot;
  if (message.hotspot && typeof message.hotspot === 'object') return [message.hotspot.x, message.hotspot.y];
  return [message.hotspot_x ?? message.xhot ?? message.x ?? 0, message.hotspot_y ?? message.yhot ?? message.y ?? 0];
}

export class LocalCursor {
  constructor(element) {
    this.element = element;
    this.css = 'default';
  }

  update(message) {
    const url = imageUrl(message);
    if (message.visible === false || message.hidden === true) {
      this.css = 'none';
    } else if (url) {
      const [x, y] = hotspot(message).map((v) => Math.max(0, Math.round(Number(v) || 0)));
      this.css = `url("${url}") ${x} ${y}, default`;
    }
    this.element.style.cursor = this.css;
  }
}
