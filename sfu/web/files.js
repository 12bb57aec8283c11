// End-to-end encrypted file sharing over the SFU's relay: a sealed
// description (name, size, type, SHA-256), then sealed chunks. Chunks fit the
// relay's payload limit (128 KiB by default, protocol section 14) and are
// paced well under its message rate, so a transfer never trips the limits.
import { toHex, utf8 } from "./e2ee/bytes.js";

/** Largest file offered or accepted. */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;
/** Plain bytes per chunk: 64 KiB is about 87 KiB of base64 in the relay payload. */
export const CHUNK_BYTES = 64 * 1024;
/** Pause between chunks: 20 chunks/s (1.3 MB/s) beside the 50 messages/s limit. */
const CHUNK_GAP_MS = 50;
/** Most bytes being received at once (all senders): bounds memory. */
const MAX_INCOMING_BYTES = 4 * MAX_FILE_BYTES;
/** Pause while this much is still waiting in the socket. */
const MAX_BACKLOG = 512 * 1024;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
}

function newId() {
  return toHex(crypto.getRandomValues(new Uint8Array(8)));
}

/**
 * Events: "offer" (detail transfer), "progress" (detail transfer),
 * "done" (detail transfer with url, ok), "error" (detail {message}).
 * A transfer: {id, from, mine, name, size, type, sha256, done (bytes), url?, ok?}.
 */
export class Files extends EventTarget {
  constructor({ keys, signaling, selfId }) {
    super();
    this.keys = keys;
    this.sig = signaling;
    this.selfId = selfId;
    this.incoming = new Map(); // id -> {transfer, parts, count}
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Sends a File (or Blob with a name) to everyone. */
  async send(file) {
    if (file.size > MAX_FILE_BYTES) {
      this.#emit("error", { message: `${file.name} is larger than ${MAX_FILE_BYTES / 1048576} MB` });
      return;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const chunks = Math.max(1, Math.ceil(bytes.length / CHUNK_BYTES));
    const t = {
      id: newId(),
      from: this.selfId,
      mine: true,
      name: file.name || "file",
      size: bytes.length,
      type: file.type || "application/octet-stream",
      sha256: await sha256Hex(bytes),
      done: 0,
    };
    const meta = { id: t.id, name: t.name, size: t.size, type: t.type, sha256: t.sha256, chunks };
    this.#emit("offer", t);
    this.sig.relay("everyone", { kind: "file-meta", ...(await this.keys.seal(utf8(JSON.stringify(meta)), "file-meta")) });
    for (let i = 0; i < chunks; i++) {
      const part = bytes.subarray(i * CHUNK_BYTES, (i + 1) * CHUNK_BYTES);
      const sealed = await this.keys.seal(part, `file ${t.id} ${i}`);
      this.sig.relay("everyone", { kind: "file-chunk", id: t.id, i, ...sealed });
      t.done += part.length;
      this.#emit("progress", t);
      await sleep(CHUNK_GAP_MS);
      for (let w = 0; w < 200 && this.sig.backlog > MAX_BACKLOG; w++) await sleep(50);
    }
    t.url = URL.createObjectURL(new Blob([bytes], { type: t.type }));
    t.ok = true;
    this.#emit("done", t);
  }

  /** Abandons what `from` was sending (they left). */
  forget(from) {
    for (const [id, e] of this.incoming) {
      if (e.from !== from) continue;
      this.incoming.delete(id);
      e.transfer.ok = false;
      e.transfer.aborted = true;
      this.#emit("done", e.transfer);
    }
  }

  /** Handles a relayed file-meta or file-chunk payload. */
  async receive(from, p) {
    if (p.kind === "file-meta") {
      const meta = JSON.parse(new TextDecoder().decode(await this.keys.openWhenReady(from, p, "file-meta")));
      const size = Number(meta.size);
      const chunks = Number(meta.chunks);
      if (!(size >= 0 && size <= MAX_FILE_BYTES) || chunks !== Math.max(1, Math.ceil(size / CHUNK_BYTES))) return;
      if (typeof meta.id !== "string" || this.incoming.has(meta.id)) return;
      const pending = [...this.incoming.values()].reduce((n, e) => n + e.transfer.size, 0);
      if (pending + size > MAX_INCOMING_BYTES) return;
      const t = {
        id: meta.id,
        from,
        mine: false,
        name: String(meta.name).slice(0, 200),
        size,
        type: String(meta.type || "application/octet-stream").slice(0, 100),
        sha256: String(meta.sha256),
        done: 0,
      };
      this.incoming.set(t.id, { transfer: t, from, parts: new Array(chunks), count: 0 });
      this.#emit("offer", t);
    } else if (p.kind === "file-chunk") {
      const entry = this.incoming.get(p.id);
      if (!entry || entry.from !== from || !Number.isInteger(p.i) || p.i < 0 || p.i >= entry.parts.length) return;
      if (entry.parts[p.i]) return;
      const part = await this.keys.openWhenReady(from, p, `file ${p.id} ${p.i}`);
      // Abandoned (the sender left) while this chunk was being opened.
      if (this.incoming.get(p.id) !== entry) return;
      const t = entry.transfer;
      if (t.done + part.length > t.size) return;
      entry.parts[p.i] = part;
      entry.count++;
      t.done += part.length;
      this.#emit("progress", t);
      if (entry.count === entry.parts.length) {
        this.incoming.delete(t.id);
        const blob = new Blob(entry.parts, { type: t.type });
        t.ok = t.done === t.size && (await sha256Hex(new Uint8Array(await blob.arrayBuffer()))) === t.sha256;
        t.url = t.ok ? URL.createObjectURL(blob) : null;
        this.#emit("done", t);
      }
    }
  }
}
