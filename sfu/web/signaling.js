// The signaling WebSocket (docs/protocol.md): one JSON object per text
// frame, a client-side pace under the server's message-rate limit, and a
// ping to notice dead connections. Reconnecting is the caller's business
// (it has to rebuild the whole session anyway).

/** Server rate limit is 50/s with a burst of 200 (protocol section 14); stay under it. */
const RATE_PER_S = 40;
const BURST = 150;
const PING_EVERY_MS = 10000;

/** Error codes after which reconnecting cannot help. */
export const FATAL = new Set(["bad_token", "token_expired", "unsupported_version", "replaced"]);

/** One signaling connection. Events: "message" (detail: object), "close" (detail: {code, reason}). */
export class Signaling extends EventTarget {
  constructor(url) {
    super();
    this.url = url;
    this.queue = [];
    this.tokens = BURST;
    this.lastRefill = performance.now();
    this.closed = false;
  }

  /** Opens the socket and sends `join`; resolves with the `joined` message. */
  join(token) {
    return new Promise((resolve, reject) => {
      const ws = (this.ws = new WebSocket(this.url));
      let joined = false;
      const timeout = setTimeout(() => ws.close(), 10000);
      ws.onopen = () => this.#sendNow({ type: "join", version: 1, token });
      ws.onmessage = (e) => {
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        if (m.type === "pong") {
          this.awaitingPong = false;
          return;
        }
        if (!joined) {
          if (m.type === "joined") {
            joined = true;
            clearTimeout(timeout);
            this.#startPing();
            resolve(m);
          } else if (m.type === "error") {
            this.fatal = m.code;
            reject(new Error(`${m.code}: ${m.message}`));
          }
          return;
        }
        if (m.type === "error" && FATAL.has(m.code)) this.fatal = m.code;
        this.dispatchEvent(new CustomEvent("message", { detail: m }));
      };
      ws.onclose = (e) => {
        clearTimeout(timeout);
        clearInterval(this.pinger);
        clearTimeout(this.flusher);
        if (!joined) reject(new Error(`connection closed (${e.code})`));
        if (!this.closed) {
          this.closed = true;
          this.dispatchEvent(new CustomEvent("close", { detail: { code: e.code, fatal: this.fatal } }));
        }
      };
    });
  }

  #startPing() {
    this.pinger = setInterval(() => {
      if (this.awaitingPong) {
        this.ws.close(); // no pong for a whole interval: the connection is dead
        return;
      }
      this.awaitingPong = true;
      this.send({ type: "ping" });
    }, PING_EVERY_MS);
  }

  #sendNow(m) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  /** Queues a message; sent at once unless the pace says wait. */
  send(m) {
    this.queue.push(m);
    this.#flush();
  }

  /** Relays `payload` to participant ids or "everyone". */
  relay(to, payload) {
    this.send({ type: "relay", to, payload });
  }

  /** Bytes handed to the socket but not yet sent, plus what is queued here. */
  get backlog() {
    return (this.ws?.bufferedAmount ?? 0) + this.queue.length * 1000;
  }

  #flush() {
    const now = performance.now();
    this.tokens = Math.min(BURST, this.tokens + ((now - this.lastRefill) / 1000) * RATE_PER_S);
    this.lastRefill = now;
    while (this.queue.length && this.tokens >= 1) {
      this.tokens -= 1;
      this.#sendNow(this.queue.shift());
    }
    if (this.queue.length && !this.flusher) {
      this.flusher = setTimeout(() => {
        this.flusher = null;
        this.#flush();
      }, 1000 / RATE_PER_S);
    }
  }

  /** Leaves the room (if joined) and closes. */
  leave() {
    this.closed = true;
    this.#sendNow({ type: "leave" });
    this.ws?.close();
  }

  /** Drops the connection without leaving, as a network failure would (tests, "reconnect now"). */
  drop() {
    this.ws?.close();
  }
}
