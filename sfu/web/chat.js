// End-to-end encrypted text chat over the SFU's relay. Each message is sealed
// once with the sender's current key (see e2ee/keys.js) and relayed to
// everyone; only participants holding that key can open it.
import { utf8 } from "./e2ee/bytes.js";

/** Longest message accepted, in characters. */
export const MAX_CHAT_CHARS = 4000;

/** Events: "message" (detail {from, text, ts, mine}). */
export class Chat extends EventTarget {
  constructor({ keys, signaling, selfId }) {
    super();
    this.keys = keys;
    this.sig = signaling;
    this.selfId = selfId;
  }

  /** Sends `text` to everyone in the call. */
  async send(text) {
    text = text.trim().slice(0, MAX_CHAT_CHARS);
    if (!text) return;
    const ts = Date.now();
    const sealed = await this.keys.seal(utf8(JSON.stringify({ text, ts })), "chat");
    this.sig.relay("everyone", { kind: "chat", ...sealed });
    this.dispatchEvent(new CustomEvent("message", { detail: { from: this.selfId, text, ts, mine: true } }));
  }

  /** Opens a relayed chat payload (waiting briefly for the sender's key). */
  async receive(from, payload) {
    const bytes = await this.keys.openWhenReady(from, payload, "chat");
    const { text, ts } = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof text !== "string") return;
    this.dispatchEvent(
      new CustomEvent("message", { detail: { from, text: text.slice(0, MAX_CHAT_CHARS), ts: Number(ts) || Date.now(), mine: false } }),
    );
  }
}
