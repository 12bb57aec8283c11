// Byte helpers shared by the E2EE modules.

/** Uint8Array -> base64. */
export function toB64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** base64 -> Uint8Array (throws on malformed input). */
export function fromB64(s) {
  if (typeof s !== "string") throw new TypeError("expected base64 string");
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Random bytes from the platform CSPRNG. */
export function randomBytes(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** Encodes a string as UTF-8. */
export const utf8 = (s) => new TextEncoder().encode(s);
