// Adaptive stream: tells the SFU how each received video is shown (on screen
// or not, and its size in device pixels), so that it sends no larger a
// simulcast layer than the tile needs and nothing to a hidden tile.

const SETTLE_MS = 250; // a resize settles before the SFU hears of it

export class TileWatcher {
  /** @param {(settings: {track_id: string, visible: boolean, width: number, height: number}) => void} send */
  constructor(send) {
    this.send = send;
    this.watched = new Map(); // video element -> {trackId, visible, width, height, sent, timer}
    this.resize = new ResizeObserver((entries) => {
      for (const e of entries) this.#update(e.target, { width: e.contentRect.width, height: e.contentRect.height });
    });
    this.intersect = new IntersectionObserver((entries) => {
      for (const e of entries) this.#update(e.target, { visible: e.isIntersecting });
    });
  }

  /** Starts reporting `video`'s tile for `trackId` (replacing what it showed before). */
  watch(video, trackId) {
    this.unwatch(video);
    const r = video.getBoundingClientRect();
    this.watched.set(video, { trackId, visible: true, width: r.width, height: r.height, sent: "", timer: 0 });
    this.resize.observe(video);
    this.intersect.observe(video);
  }

  /** Stops reporting `video`. */
  unwatch(video) {
    const w = this.watched.get(video);
    if (!w) return;
    clearTimeout(w.timer);
    this.watched.delete(video);
    this.resize.unobserve(video);
    this.intersect.unobserve(video);
  }

  #update(video, change) {
    const w = this.watched.get(video);
    if (!w) return;
    Object.assign(w, change);
    clearTimeout(w.timer);
    w.timer = setTimeout(() => this.#flush(video), SETTLE_MS);
  }

  #flush(video) {
    const w = this.watched.get(video);
    if (!w) return;
    const dpr = globalThis.devicePixelRatio || 1;
    // A tile with no area (display: none, a collapsed panel) is not seen either.
    const visible = w.visible && w.width > 0 && w.height > 0 && document.visibilityState !== "hidden";
    const msg = {
      track_id: w.trackId,
      visible,
      width: Math.round(w.width * dpr),
      height: Math.round(w.height * dpr),
    };
    const key = JSON.stringify(msg);
    if (key === w.sent) return;
    w.sent = key;
    this.send(msg);
  }

  /** Re-reports every tile (the page became visible or hidden). */
  refresh() {
    for (const video of this.watched.keys()) this.#update(video, {});
  }
}
