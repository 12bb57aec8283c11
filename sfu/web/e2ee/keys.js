// Key distribution for end-to-end encryption ("sender keys").
//
// - Each session makes an ephemeral ECDH P-256 key pair and announces the
//   public key to everyone through the SFU's relay (e2ee-hello).
// - Each sender makes a random 16-byte base key with a random key id (KID).
//   For every recipient it wraps the base key with AES-GCM under a key
//   derived from ECDH(own private, recipient public) with HKDF-SHA256. What
//   it owes newcomers (its public key and their wrapped keys) accumulates for
//   BATCH_WINDOW_MS and goes out as one relay to the ids it lists (e2ee-keys,
//   split at MAX_BATCH_BYTES): relays are rate-limited, and one message per
//   newcomer per sender made big rooms wait seconds for keys. The batch's
//   pub is the reply hello for whoever did not know the sender. The SFU only
//   ever sees public keys and wrapped keys.
// - Newcomers get the current key. When someone leaves, every remaining
//   sender makes a new key (new KID) and distributes it; it switches to it
//   once every recipient acknowledged (or after a short timeout), and
//   receivers keep the previous key for a few seconds.
// - The safety number is a hash over the sorted public keys of everyone in
//   the call; if everybody sees the same number, nobody's key was swapped.
// - Chat messages are encrypted with a key derived from the sender's
//   current base key, so they reach exactly the people who hold its key.
// - Messages for chosen recipients only (file keys) are sealed once per
//   recipient with the pairwise key (sealTo/openFrom): nobody else can open
//   them, whoever the server relays them to.
import { fromB64, randomBytes, toB64, toHex, utf8 } from "./bytes.js";

const subtle = crypto.subtle;
const ECDH = { name: "ECDH", namedCurve: "P-256" };
/** How long a sender waits for acknowledgements before switching keys. */
const SWITCH_AFTER_MS = 1500;
/** How long a receiver keeps a sender's previous key. */
const KEEP_PREVIOUS_MS = 10000;
/** How long owed keys accumulate after the first newcomer. */
const BATCH_WINDOW_MS = 50;
/** Cap on one batch's payload JSON: a quarter of the SFU's relay limit. */
const MAX_BATCH_BYTES = 32 * 1024;
/** Owed peers at which the batch goes out before the window closes. */
const BATCH_EARLY = 256;
/**
 * A newcomer whose hello has not reached us this long after it joined gets
 * ours directly: in a cluster its hello may have gone out before its SFU
 * node and ours were linked, and then neither side would ever hear the other.
 */
const HELLO_FALLBACK_MS = 1000;

/** Thrown when a message is encrypted under a key we do not (yet) hold. */
export class MissingKey extends Error {}

function newKid() {
  // 1 .. 2^31-1: fits the SFrame header in at most 4 bytes and a JS number.
  const v = new Uint32Array(1);
  do crypto.getRandomValues(v);
  while ((v[0] & 0x7fffffff) === 0);
  return v[0] & 0x7fffffff;
}

async function chatKeyOf(raw) {
  const ikm = await subtle.importKey("raw", raw, "HKDF", false, ["deriveKey"]);
  return subtle.deriveKey(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: utf8("sfu-web chat v1") },
    ikm,
    { name: "AES-GCM", length: 128 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** One participant's E2EE key state. */
export class KeyManager extends EventTarget {
  /**
   * @param {object} o
   * @param {(to: string[]|"everyone", payload: object) => void} o.send relay sender
   * @param {Worker} o.worker the encryption worker
   * @param {boolean} [o.dropKeys] test switch: discard every key received
   * @param {number} [o.keepPreviousMs] how long a sender's replaced keys stay usable
   */
  constructor({ send, worker, dropKeys = false, keepPreviousMs = KEEP_PREVIOUS_MS }) {
    super();
    this.send = send;
    this.worker = worker;
    this.dropKeys = dropKeys;
    this.keepPreviousMs = keepPreviousMs;
    this.peers = new Map(); // id -> {pub: Uint8Array, wrapKeys, keys: Map(kid -> {raw, chat})}
    this.current = null; // {kid, raw, chat}
    this.pending = null; // {kid, raw, chat, waiting: Set, timer}
    this.owed = new Set(); // peers owed our pub and key, sent at the next flush
    this.flushTimer = null;
    this.unheard = new Set(); // newcomers whose hello we wait for
    this.helloTimer = null;
    this.flushing = 0; // flushes still wrapping keys
    this.outbox = Promise.resolve(); // key batches, sent one after another
  }

  /** Whether owed keys wait for the batching window (tests wait it out). */
  get batching() {
    return this.flushTimer !== null || this.flushing > 0;
  }

  /** Starts a session: fresh ECDH pair and media key, hello to everyone. */
  async start(selfId) {
    this.selfId = selfId;
    this.pair = await subtle.generateKey(ECDH, false, ["deriveBits"]);
    this.pub = new Uint8Array(await subtle.exportKey("raw", this.pair.publicKey));
    this.current = await this.#makeKey();
    this.worker.postMessage({ type: "send-key", kid: this.current.kid, key: this.current.raw });
    this.send("everyone", { kind: "e2ee-hello", v: 1, pub: toB64(this.pub) });
    this.#changed();
  }

  /** The KID this participant encrypts with. */
  get kid() {
    return this.current?.kid ?? null;
  }

  async #makeKey() {
    const raw = randomBytes(16);
    return { kid: newKid(), raw, chat: await chatKeyOf(raw) };
  }

  async #wrapKey(peer, direction) {
    const cached = peer.wrapKeys[direction];
    if (cached) return cached;
    const theirs = await subtle.importKey("raw", peer.pub, ECDH, false, []);
    const shared = await subtle.deriveBits({ name: "ECDH", public: theirs }, this.pair.privateKey, 256);
    const ikm = await subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
    // Direction-specific: info names the sender's then the recipient's key.
    const [from, to] = direction === "out" ? [this.pub, peer.pub] : [peer.pub, this.pub];
    const info = new Uint8Array([...utf8("sfu-web key wrap v1"), ...from, ...to]);
    const key = await subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info },
      ikm,
      { name: "AES-GCM", length: 256 },
      false,
      ["encrypt", "decrypt"],
    );
    peer.wrapKeys[direction] = key;
    return key;
  }

  /**
   * Sends `key` to `ids` as e2ee-keys batches, each relayed to the ids it
   * lists. An entry's AAD names the KID, the sender and the recipient:
   * batches are seen by several, so nobody can replay an entry as their own.
   */
  async #sendBatches(key, ids) {
    const head = { kind: "e2ee-keys", v: 1, pub: toB64(this.pub), kid: key.kid };
    const base = JSON.stringify({ ...head, keys: {} }).length;
    let keys = {};
    let size = base;
    let count = 0;
    for (const id of ids) {
      const peer = this.peers.get(id);
      if (!peer) continue;
      const iv = randomBytes(12);
      const wrapped = await subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: utf8(`e2ee-keys ${key.kid} ${this.selfId} ${id}`) },
        await this.#wrapKey(peer, "out"),
        key.raw,
      );
      const entry = { iv: toB64(iv), wrapped: toB64(new Uint8Array(wrapped)) };
      const add = JSON.stringify(id).length + 2 + JSON.stringify(entry).length; // "id":{…},
      if (count > 0 && size + add > MAX_BATCH_BYTES) {
        this.send(Object.keys(keys), { ...head, keys });
        keys = {};
        size = base;
        count = 0;
      }
      keys[id] = entry;
      size += add;
      count++;
    }
    if (count > 0) this.send(Object.keys(keys), { ...head, keys });
  }

  /** Notes that `id` is owed our pub and key; the batch goes out soon. */
  #owe(id) {
    this.owed.add(id);
    if (this.owed.size >= BATCH_EARLY) return this.#flush();
    if (this.flushTimer === null) this.flushTimer = setTimeout(() => this.#flush(), BATCH_WINDOW_MS);
  }

  async #flush() {
    clearTimeout(this.flushTimer);
    this.flushTimer = null;
    const ids = [...this.owed].filter((id) => this.peers.has(id));
    this.owed.clear();
    if (ids.length === 0) return;
    if (!this.current) {
      // Nothing to wrap yet: the pub alone answers their hellos.
      this.send(ids, { kind: "e2ee-keys", v: 1, pub: toB64(this.pub), keys: {} });
      return;
    }
    this.flushing++;
    try {
      // The keys as they are when this batch's turn comes: the current one,
      // then a rotation's pending one, which the recipient keeps last.
      await this.#inOrder(async () => {
        const { current, pending } = this;
        await this.#sendBatches(current, ids);
        if (pending) await this.#sendBatches(pending, ids);
      });
    } finally {
      this.flushing--;
    }
  }

  /**
   * Runs `send` after every key batch queued before it, so that a peer
   * receives our keys in the order we made them: the last key it gets from
   * us is the one it keeps.
   */
  #inOrder(send) {
    const run = this.outbox.then(send);
    this.outbox = run.catch(() => {});
    return run;
  }

  /** Learns a peer's public key; true if it was new (then we owe them). */
  #learnPeer(from, b64) {
    let pub;
    try {
      pub = fromB64(b64);
    } catch {
      return false; // not base64
    }
    if (pub.length !== 65) return false;
    const known = this.peers.get(from);
    if (known && toHex(known.pub) === toHex(pub)) return false;
    this.peers.set(from, { pub, wrapKeys: {}, keys: new Map(), acked: new Set() });
    // They may not have our public key yet, and need our key: both go in
    // the next batch. Someone joining during a rotation needs both keys.
    this.pending?.waiting.add(from);
    this.#owe(from);
    this.#changed();
    return true;
  }

  /** Unwraps a key `from` sent us under `aad`, then installs and acks it. */
  async #receiveKey(from, kid, iv, wrapped, aad) {
    const peer = this.peers.get(from);
    if (!peer || !Number.isSafeInteger(kid)) return;
    let raw;
    try {
      raw = new Uint8Array(
        await subtle.decrypt(
          { name: "AES-GCM", iv: fromB64(iv), additionalData: utf8(aad) },
          await this.#wrapKey(peer, "in"),
          fromB64(wrapped),
        ),
      );
    } catch {
      return; // not for us, or tampered with
    }
    if (this.dropKeys || raw.length !== 16) return;
    // The key received last is the sender's newest (KIDs are random, not
    // ordered); a key received again becomes the newest again.
    peer.latest = kid;
    if (!peer.keys.has(kid)) {
      peer.keys.set(kid, { raw, chat: await chatKeyOf(raw) });
      this.worker.postMessage({ type: "recv-key", participantId: from, kid, key: raw });
    }
    this.send([from], { kind: "e2ee-ack", kid });
    // Older keys of this sender stay usable briefly for frames in flight,
    // unless one of them has become the newest by then.
    for (const old of peer.keys.keys()) {
      if (old === kid) continue;
      setTimeout(() => {
        if (peer.latest === old || !peer.keys.delete(old)) return;
        this.worker.postMessage({ type: "drop-key", participantId: from, kid: old });
      }, this.keepPreviousMs);
    }
    this.#changed();
    this.dispatchEvent(new CustomEvent("key", { detail: { from, kid } }));
  }

  /**
   * Handles an e2ee-* relay payload from participant `from`. Single
   * e2ee-key messages and reply hellos of older clients are still accepted.
   */
  async handle(from, p) {
    if (p.kind === "e2ee-hello") {
      this.#learnPeer(from, p.pub);
    } else if (p.kind === "e2ee-keys") {
      this.#learnPeer(from, p.pub);
      const entry = p.keys && typeof p.keys === "object" ? p.keys[this.selfId] : null;
      if (!entry || typeof entry !== "object") return;
      const aad = `e2ee-keys ${p.kid} ${from} ${this.selfId}`;
      await this.#receiveKey(from, p.kid, entry.iv, entry.wrapped, aad);
    } else if (p.kind === "e2ee-key") {
      await this.#receiveKey(from, p.kid, p.iv, p.wrapped, `e2ee-key ${p.kid}`);
    } else if (p.kind === "e2ee-ack") {
      const pending = this.pending;
      if (pending && p.kid === pending.kid) {
        pending.waiting.delete(from);
        if (pending.waiting.size === 0) this.#switch();
      }
    }
  }

  /** Someone joined: if their hello does not come, we say hello first. */
  peerJoined(id) {
    if (!this.pub || this.peers.has(id)) return;
    this.unheard.add(id);
    if (this.helloTimer !== null) return;
    this.helloTimer = setTimeout(() => {
      this.helloTimer = null;
      const ids = [...this.unheard].filter((p) => !this.peers.has(p));
      this.unheard.clear();
      if (ids.length > 0) this.send(ids, { kind: "e2ee-hello", v: 1, pub: toB64(this.pub) });
    }, HELLO_FALLBACK_MS);
  }

  /** Someone left: forget them and rotate our key so they cannot follow. */
  async peerLeft(id) {
    if (!this.peers.delete(id)) return;
    this.owed.delete(id);
    this.worker.postMessage({ type: "forget", participantId: id });
    this.#changed();
    await this.rotate();
  }

  /** Makes and distributes a new key; switches when everyone has it. */
  async rotate() {
    if (!this.current) return;
    if (this.pending) clearTimeout(this.pending.timer);
    const key = await this.#makeKey();
    key.waiting = new Set(this.peers.keys());
    this.pending = key;
    key.timer = setTimeout(() => this.#switch(), SWITCH_AFTER_MS);
    // Peers still owed a batch get this key from it, after the current one.
    const ids = [...this.peers.keys()].filter((id) => !this.owed.has(id));
    await this.#inOrder(() => this.#sendBatches(key, ids));
    if (key.waiting.size === 0) this.#switch();
  }

  #switch() {
    const key = this.pending;
    if (!key) return;
    clearTimeout(key.timer);
    this.pending = null;
    this.current = key;
    this.worker.postMessage({ type: "send-key", kid: key.kid, key: key.raw });
    this.#changed();
  }

  /** Participants whose public key we know, with whether we hold their key. */
  peerState() {
    return [...this.peers].map(([id, p]) => ({ id, haveKey: p.keys.size > 0 }));
  }

  /** Short fingerprint over every participant's public key, or "" alone. */
  async safetyNumber() {
    if (!this.pub) return "";
    const keys = [this.pub, ...[...this.peers.values()].map((p) => p.pub)].map(toHex).sort();
    const digest = new Uint8Array(await subtle.digest("SHA-256", utf8(keys.join(""))));
    const groups = [];
    for (let i = 0; i < 6; i++) {
      // 5 bytes -> 5 decimal digits per group, 30 digits in all.
      let v = 0;
      for (let j = 0; j < 5; j++) v = v * 256 + digest[i * 5 + j];
      groups.push(String(v % 100000).padStart(5, "0"));
    }
    return groups.join(" ");
  }

  /** Encrypts bytes for everyone holding our current key. */
  async seal(bytes, aad) {
    const key = this.current;
    const iv = randomBytes(12);
    const ct = await subtle.encrypt({ name: "AES-GCM", iv, additionalData: utf8(aad) }, key.chat, bytes);
    return { kid: key.kid, iv: toB64(iv), ct: toB64(new Uint8Array(ct)) };
  }

  /** Opens what `from` sealed; throws MissingKey if we lack that key. */
  async open(from, { kid, iv, ct }, aad) {
    const key = this.peers.get(from)?.keys.get(kid);
    if (!key) throw new MissingKey(`no key ${kid} from ${from}`);
    return new Uint8Array(
      await subtle.decrypt({ name: "AES-GCM", iv: fromB64(iv), additionalData: utf8(aad) }, key.chat, fromB64(ct)),
    );
  }

  /**
   * Seals `bytes` separately for each of `ids` with the pairwise key shared
   * with that participant; the AAD names `label`, the sender and the
   * recipient. Returns {id: {iv, ct}} for the ids whose public key we know.
   */
  async sealTo(ids, bytes, label) {
    const out = {};
    for (const id of ids) {
      const peer = this.peers.get(id);
      if (!peer) continue;
      const iv = randomBytes(12);
      const ct = await subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: utf8(`${label} ${this.selfId} ${id}`) },
        await this.#wrapKey(peer, "out"),
        bytes,
      );
      out[id] = { iv: toB64(iv), ct: toB64(new Uint8Array(ct)) };
    }
    return out;
  }

  /** Opens what `from` sealed for us with sealTo; throws if it was not. */
  async openFrom(from, { iv, ct }, label) {
    const peer = this.peers.get(from);
    if (!peer) throw new MissingKey(`no public key of ${from}`);
    return new Uint8Array(
      await subtle.decrypt(
        { name: "AES-GCM", iv: fromB64(iv), additionalData: utf8(`${label} ${from} ${this.selfId}`) },
        await this.#wrapKey(peer, "in"),
        fromB64(ct),
      ),
    );
  }

  /** Like openFrom, but waits up to `ms` for the sender's public key. */
  async openFromWhenReady(from, sealed, label, ms = 10000) {
    const deadline = Date.now() + ms;
    while (!this.peers.has(from) && Date.now() < deadline) {
      await new Promise((resolve) => {
        const done = () => {
          this.removeEventListener("change", done);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()) + 1);
        this.addEventListener("change", done);
      });
    }
    return this.openFrom(from, sealed, label);
  }

  /**
   * Like open, but waits up to `ms` for the sender's key to arrive (a message
   * can overtake the key when someone joins or rotates at that moment).
   */
  async openWhenReady(from, sealed, aad, ms = 10000) {
    const deadline = Date.now() + ms;
    for (;;) {
      try {
        return await this.open(from, sealed, aad);
      } catch (e) {
        if (!(e instanceof MissingKey) || Date.now() > deadline) throw e;
      }
      await new Promise((resolve) => {
        const done = () => {
          this.removeEventListener("key", done);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()) + 1);
        this.addEventListener("key", done);
      });
    }
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
