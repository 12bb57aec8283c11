// SFrame (RFC 9605) with the AES_128_GCM_SHA256_128 suite (0x0004) on
// WebCrypto. Self-contained (no imports) so the encryption worker, the page
// and a Node test can all load it.
//
// Frame format produced by the web client:
//   clear prefix | SFrame header | ciphertext | 16-byte tag
// The clear prefix is the RFC's "metadata": authenticated (AAD = header |
// prefix) but not encrypted. It is empty except for VP8, whose receiver-side
// depacketizer reads the first bytes of the frame (see clearPrefixLength).

/** The cipher suite id (RFC 9605 section 4.5). */
export const SUITE_AES_128_GCM_SHA256_128 = 0x0004;
const NK = 16; // key bytes
const NN = 12; // nonce bytes
/** Authentication tag bytes. */
export const TAG_BYTES = 16;

const subtle = globalThis.crypto.subtle;
const te = new TextEncoder();
const U64 = (1n << 64n) - 1n;

function big(v) {
  const b = BigInt(v);
  if (b < 0n || b > U64) throw new RangeError("SFrame KID/CTR out of range");
  return b;
}

function bytesOf(v) {
  // Minimal big-endian byte length of an unsigned value (at least 1).
  let n = 1;
  while (v >> BigInt(8 * n) && n < 8) n++;
  return n;
}

function writeBE(out, off, v, n) {
  for (let i = n - 1; i >= 0; i--) {
    out[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function readBE(buf, off, n) {
  let v = 0n;
  for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(buf[off + i]);
  return v;
}

/**
 * Encodes the SFrame header for key id `kid` and counter `ctr`
 * (numbers or BigInts up to 2^64-1).
 * Config byte: X | K(3) | Y | C(3); values < 8 are stored in the config byte.
 */
export function encodeHeader(kid, ctr) {
  const k = big(kid);
  const c = big(ctr);
  const kLen = k < 8n ? 0 : bytesOf(k);
  const cLen = c < 8n ? 0 : bytesOf(c);
  const out = new Uint8Array(1 + kLen + cLen);
  let cfg = 0;
  cfg |= kLen ? 0x80 | ((kLen - 1) << 4) : Number(k) << 4;
  cfg |= cLen ? 0x08 | (cLen - 1) : Number(c);
  out[0] = cfg;
  if (kLen) writeBE(out, 1, k, kLen);
  if (cLen) writeBE(out, 1 + kLen, c, cLen);
  return out;
}

/**
 * Parses an SFrame header at the start of `buf`.
 * Returns {kid, ctr, length} (kid/ctr as BigInt) or throws on a short buffer.
 */
export function decodeHeader(buf) {
  if (buf.length < 1) throw new Error("SFrame: empty frame");
  const cfg = buf[0];
  const x = cfg & 0x80;
  const y = cfg & 0x08;
  const kLen = x ? ((cfg >> 4) & 0x07) + 1 : 0;
  const cLen = y ? (cfg & 0x07) + 1 : 0;
  const length = 1 + kLen + cLen;
  if (buf.length < length) throw new Error("SFrame: truncated header");
  const kid = x ? readBE(buf, 1, kLen) : BigInt((cfg >> 4) & 0x07);
  const ctr = y ? readBE(buf, 1 + kLen, cLen) : BigInt(cfg & 0x07);
  return { kid, ctr, length };
}

function label(prefix, kid) {
  // "SFrame 1.0 Secret key " | KID (8 bytes) | cipher suite (2 bytes)
  const p = te.encode(prefix);
  const out = new Uint8Array(p.length + 10);
  out.set(p);
  writeBE(out, p.length, big(kid), 8);
  writeBE(out, p.length + 8, BigInt(SUITE_AES_128_GCM_SHA256_128), 2);
  return out;
}

/**
 * Derives the per-KID AEAD key and salt from a base key (RFC 9605 4.4.2):
 * secret = HKDF-Extract("", base_key); key/salt = HKDF-Expand(secret, label).
 * Returns {kid: BigInt, key: CryptoKey (AES-GCM), salt: Uint8Array(12)}; with
 * `exportable` the raw key bytes are also returned as `keyBytes`.
 */
export async function deriveKey(baseKey, kid, exportable = false) {
  const ikm = await subtle.importKey("raw", baseKey, "HKDF", false, ["deriveBits"]);
  const hkdf = (info, bytes) =>
    subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info }, ikm, bytes * 8);
  const keyBytes = new Uint8Array(await hkdf(label("SFrame 1.0 Secret key ", kid), NK));
  const salt = new Uint8Array(await hkdf(label("SFrame 1.0 Secret salt ", kid), NN));
  const key = await subtle.importKey("raw", keyBytes, "AES-GCM", false, ["encrypt", "decrypt"]);
  const out = { kid: big(kid), key, salt };
  if (exportable) out.keyBytes = keyBytes;
  return out;
}

/** nonce = salt XOR CTR (big-endian, right-aligned in Nn bytes). */
export function nonceFor(salt, ctr) {
  const n = new Uint8Array(salt);
  let c = big(ctr);
  for (let i = NN - 1; i >= NN - 8; i--) {
    n[i] ^= Number(c & 0xffn);
    c >>= 8n;
  }
  return n;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Encrypts `payload` with a derived key at counter `ctr`; `metadata` (may be
 * empty) is authenticated, not encrypted. Returns metadata | header | ct | tag.
 */
export async function encrypt(derived, ctr, payload, metadata = new Uint8Array(0)) {
  const header = encodeHeader(derived.kid, ctr);
  const ct = await subtle.encrypt(
    { name: "AES-GCM", iv: nonceFor(derived.salt, ctr), additionalData: concat(header, metadata), tagLength: 128 },
    derived.key,
    payload,
  );
  return concat(metadata, header, new Uint8Array(ct));
}

/**
 * Decrypts `data` = header | ct | tag (the part after the metadata).
 * `lookup(kid: BigInt)` returns a derived key or undefined. Returns
 * {kid, ctr, payload} or throws (unknown key, bad tag, malformed frame).
 */
export async function decrypt(lookup, data, metadata = new Uint8Array(0)) {
  const { kid, ctr, length } = decodeHeader(data);
  if (data.length < length + TAG_BYTES) throw new Error("SFrame: frame too short");
  const derived = lookup(kid);
  if (!derived) throw new Error(`SFrame: no key for KID ${kid}`);
  const header = data.subarray(0, length);
  const pt = await subtle.decrypt(
    { name: "AES-GCM", iv: nonceFor(derived.salt, ctr), additionalData: concat(header, metadata), tagLength: 128 },
    derived.key,
    data.subarray(length),
  );
  return { kid, ctr, payload: new Uint8Array(pt) };
}

/**
 * How many leading bytes of an encoded frame stay clear. VP8: the frame tag
 * (3 bytes) and, on key frames, the start code and dimensions (10 bytes), which
 * Chromium's VP8 depacketizer reads to detect key frames and sizes. Opus and
 * VP9 frames are encrypted whole (their RTP packetizers never read the frame).
 * The receiver applies the same rule to the bytes it got, which are the
 * sender's clear bytes, so both sides agree.
 */
export function clearPrefixLength(codec, frame) {
  if (codec !== "vp8" || frame.length === 0) return 0;
  return (frame[0] & 0x01) === 0 ? 10 : 3;
}

/**
 * Protects one encoded frame in the web client's format. A VP8 frame shorter
 * than its clear header is not valid VP8 and is refused (the receiver could
 * not tell where the SFrame header starts).
 */
export async function protectFrame(derived, ctr, codec, frame) {
  const n = clearPrefixLength(codec, frame);
  if (frame.length < n) throw new Error("SFrame: frame shorter than its clear header");
  return encrypt(derived, ctr, frame.subarray(n), frame.subarray(0, n));
}

/** Reverses protectFrame; returns {kid, ctr, frame}. */
export async function unprotectFrame(lookup, codec, data) {
  const n = clearPrefixLength(codec, data);
  if (data.length < n + 1 + TAG_BYTES) throw new Error("SFrame: frame too short");
  const { kid, ctr, payload } = await decrypt(lookup, data.subarray(n), data.subarray(0, n));
  // Opus and VP9 have no clear prefix: hand back the decrypted bytes as they are.
  return { kid, ctr, frame: n ? concat(data.subarray(0, n), payload) : payload };
}
