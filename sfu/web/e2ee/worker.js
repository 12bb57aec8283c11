// The encryption worker: every encoded frame the page sends or receives
// passes through here. Outgoing frames are SFrame-encrypted with this
// participant's current key; incoming frames are decrypted with the key of
// the participant who sent them. Keys arrive from the page by postMessage;
// they never leave the browser.
import { deriveKey, protectFrame, unprotectFrame } from "./sframe.js";

// Sending: one key (and one frame counter) shared by every outgoing track, so
// no (key, counter) pair is ever used twice.
let sendKey = null; // derived key
let counter = 0;
// Receiving: participant id -> Map(kid string -> derived key).
const recvKeys = new Map();
const stats = { encrypted: 0, sendKid: null, senders: {} };

function senderStats(pid) {
  let s = stats.senders[pid];
  if (!s) {
    s = stats.senders[pid] = { decrypted: 0, failed: 0, kid: null };
  }
  return s;
}

function codecOf(frame, fallback) {
  // Chromium exposes the negotiated codec per frame; older builds only the
  // payload type, for which the page tells us the codec of each track.
  const mime = frame.getMetadata?.().mimeType;
  if (mime) return mime.split("/")[1].toLowerCase();
  return fallback;
}

function encryptor(codec) {
  return new TransformStream({
    async transform(frame, controller) {
      if (!sendKey || frame.data.byteLength === 0) return; // never send clear media
      const key = sendKey;
      const ctr = counter++;
      try {
        frame.data = (await protectFrame(key, ctr, codecOf(frame, codec), new Uint8Array(frame.data))).buffer;
      } catch {
        return; // malformed frame: drop it rather than send it clear or stop the stream
      }
      stats.encrypted++;
      stats.sendKid = Number(key.kid);
      controller.enqueue(frame);
    },
  });
}

function decryptor(pid, codec) {
  const s = senderStats(pid);
  return new TransformStream({
    async transform(frame, controller) {
      if (frame.data.byteLength === 0) return;
      const keys = recvKeys.get(pid);
      try {
        const { kid, frame: clear } = await unprotectFrame(
          (k) => keys?.get(String(k)),
          codecOf(frame, codec),
          new Uint8Array(frame.data),
        );
        frame.data = clear.buffer;
        s.decrypted++;
        s.kid = Number(kid);
        controller.enqueue(frame);
      } catch {
        // Undecryptable (no key yet, or not for us): drop it. The decoder
        // asks for a key frame once keys arrive.
        s.failed++;
      }
    },
  });
}

function attach(readable, writable, options) {
  const t = options.operation === "encrypt" ? encryptor(options.codec) : decryptor(options.participantId, options.codec);
  readable.pipeThrough(t).pipeTo(writable).catch(() => {});
}

// RTCRtpScriptTransform.
self.onrtctransform = (event) => {
  const t = event.transformer;
  attach(t.readable, t.writable, t.options);
};

self.onmessage = async (event) => {
  const m = event.data;
  switch (m.type) {
    case "stream": // createEncodedStreams fallback
      attach(m.readable, m.writable, m.options);
      break;
    case "send-key":
      sendKey = await deriveKey(m.key, m.kid);
      counter = 0; // a new key starts a new counter space
      break;
    case "recv-key": {
      const d = await deriveKey(m.key, m.kid);
      let keys = recvKeys.get(m.participantId);
      if (!keys) recvKeys.set(m.participantId, (keys = new Map()));
      keys.set(String(m.kid), d);
      break;
    }
    case "drop-key":
      recvKeys.get(m.participantId)?.delete(String(m.kid));
      break;
    case "forget":
      recvKeys.delete(m.participantId);
      delete stats.senders[m.participantId];
      break;
    case "stats":
      self.postMessage({ type: "stats", id: m.id, stats });
      break;
  }
};
