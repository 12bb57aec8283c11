// The web client's SFrame module (sfu/web/e2ee/sframe.js) on Node's WebCrypto
// against tests/vectors/sframe.json. Prints one JSON line; exit 1 on failure.
import { readFileSync } from "node:fs";
import { root, webModule } from "./web-modules.mjs";

const sf = await webModule("e2ee/sframe.js");
const v = JSON.parse(readFileSync(`${root}tests/vectors/sframe.json`, "utf8"));

const hex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
const toHex = (b) => Buffer.from(b).toString("hex");
const failures = [];
const check = (what, got, want) => {
  if (got !== want) failures.push(`${what}: got ${got}, want ${want}`);
};

for (const h of v.header) {
  check(`header ${h.kid}/${h.ctr}`, toHex(sf.encodeHeader(BigInt(h.kid), BigInt(h.ctr))), h.encoded);
  const d = sf.decodeHeader(hex(h.encoded));
  check(`parse ${h.encoded}`, `${d.kid}/${d.ctr}/${d.length}`, `${h.kid}/${h.ctr}/${h.encoded.length / 2}`);
}

const r = v.rfc9605;
const derived = await sf.deriveKey(hex(r.base_key), BigInt(r.kid), true);
check("rfc key", toHex(derived.keyBytes), r.sframe_key);
check("rfc salt", toHex(derived.salt), r.sframe_salt);
check("rfc nonce", toHex(sf.nonceFor(derived.salt, BigInt(r.ctr))), r.nonce);
const sealed = await sf.encrypt(derived, BigInt(r.ctr), hex(r.pt), hex(r.metadata));
check("rfc ciphertext", toHex(sealed), r.metadata + r.ct);
const opened = await sf.decrypt(() => derived, hex(r.ct), hex(r.metadata));
check("rfc decrypt", toHex(opened.payload), r.pt);

for (const w of v.web_client) {
  const key = await sf.deriveKey(hex(w.base_key), BigInt(w.kid));
  const frame = hex(w.frame);
  check(`${w.name}: clear bytes`, sf.clearPrefixLength(w.codec, frame), w.clear_bytes);
  // A frame refused by the encryptor would be a test-data error.
  check(`${w.name}: protect`, toHex(await sf.protectFrame(key, BigInt(w.ctr), w.codec, frame)), w.protected);
  const back = await sf.unprotectFrame((kid) => (kid === BigInt(w.kid) ? key : undefined), w.codec, hex(w.protected));
  check(`${w.name}: unprotect`, toHex(back.frame), w.frame);
  // A flipped bit anywhere (clear prefix included) must be refused.
  for (const i of [0, w.clear_bytes, w.protected.length / 2 - 1]) {
    const bad = hex(w.protected);
    bad[i] ^= 0x01;
    const refused = await sf.unprotectFrame(() => key, w.codec, bad).then(
      () => false,
      () => true,
    );
    check(`${w.name}: tampered byte ${i} refused`, refused, true);
  }
}

const report = { ok: failures.length === 0, header: v.header.length, web_client: v.web_client.length, failures };
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
