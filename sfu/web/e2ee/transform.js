// Attaches the encryption worker to RTP senders and receivers, with
// RTCRtpScriptTransform where the browser has it and the older
// createEncodedStreams otherwise.

/** Which encoded-transform API this browser offers: "script", "streams" or null. */
export function transformMode() {
  if (typeof RTCRtpScriptTransform !== "undefined") return "script";
  if (typeof RTCRtpSender !== "undefined" && "createEncodedStreams" in RTCRtpSender.prototype) return "streams";
  return null;
}

/** The worker plus the two attach operations. */
export class E2eeTransforms {
  /** @param {"script"|"streams"|null} [mode] force an API (tests); default: the best available */
  constructor(mode = null) {
    this.mode = mode ?? transformMode();
    this.worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module", name: "e2ee" });
  }

  /** Extra RTCPeerConnection configuration the fallback API needs. */
  get pcConfig() {
    return this.mode === "streams" ? { encodedInsertableStreams: true } : {};
  }

  #attach(target, options) {
    if (this.mode === "script") {
      target.transform = new RTCRtpScriptTransform(this.worker, options);
    } else if (this.mode === "streams") {
      const { readable, writable } = target.createEncodedStreams();
      this.worker.postMessage({ type: "stream", readable, writable, options }, [readable, writable]);
    }
  }

  /** Encrypts everything `sender` sends. `codec` is the fallback codec name. */
  encrypt(sender, codec) {
    this.#attach(sender, { operation: "encrypt", codec });
  }

  /** Decrypts what `receiver` gets from participant `participantId`. */
  decrypt(receiver, participantId, codec) {
    this.#attach(receiver, { operation: "decrypt", participantId, codec });
  }

  /** The worker's counters (frames encrypted, per-sender decrypted/failed, KIDs). */
  stats() {
    return new Promise((resolve) => {
      const id = Math.random();
      const onMessage = (e) => {
        if (e.data?.type === "stats" && e.data.id === id) {
          this.worker.removeEventListener("message", onMessage);
          resolve(e.data.stats);
        }
      };
      this.worker.addEventListener("message", onMessage);
      this.worker.postMessage({ type: "stats", id });
    });
  }
}
