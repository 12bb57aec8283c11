// The web client's file encryption (sfu/web/e2ee/filecrypt.js) and its
// per-recipient sealing (e2ee/keys.js sealTo/openFrom) on Node's WebCrypto:
// a file round-trips; a tampered, reordered, swapped-between-files,
// truncated or wrongly-final chunk is refused; the digest changes with any
// chunk; a copy sealed for one recipient opens for nobody else.
// Prints one JSON line; exit 1 on failure.
import { webModule } from "./web-modules.mjs";

const fc = await webModule("e2ee/filecrypt.js");
const { KeyManager } = await webModule("e2ee/keys.js");
const { utf8 } = await webModule("e2ee/bytes.js");

const failures = [];
let refused = 0;
const check = (what, ok) => {
  if (!ok) failures.push(what);
};
async function refuses(what, f) {
  try {
    await f();
    failures.push(`${what}: accepted`);
  } catch {
    refused++;
  }
}

const chunk = 64 * 1024;
const size = 3 * chunk + 1000;
const plain = new Uint8Array(size);
for (let i = 0; i < size; i += 65536) crypto.getRandomValues(plain.subarray(i, Math.min(size, i + 65536)));
const n = fc.chunkCount(size, chunk);
check("chunk count", n === 4 && fc.cipherLength(size, chunk) === size + 64);
check("empty file is one chunk", fc.chunkCount(0, chunk) === 1 && fc.cipherLength(0, chunk) === 16);

const { raw, key } = await fc.newFileKey();
const id = "0123456789abcdef0123456789abcdef";
const sealed = [];
for (let i = 0; i < n; i++) sealed.push(await fc.sealChunk(key, id, i, i === n - 1, plain.subarray(i * chunk, (i + 1) * chunk)));
const digest = await fc.digestOf(sealed.map(fc.tagOf));

// Round trip with the key as a recipient imports it.
const theirs = await fc.importFileKey(raw);
const back = [];
for (let i = 0; i < n; i++) back.push(await fc.openChunk(theirs, id, i, i === n - 1, sealed[i]));
const joined = new Uint8Array(size);
back.reduce((at, p) => (joined.set(p, at), at + p.length), 0);
check("round trip", joined.every((b, i) => b === plain[i]));
check("same digest", (await fc.digestOf(sealed.map(fc.tagOf))) === digest);

// Tampered: one bit of ciphertext, one bit of the tag.
for (const at of [10, sealed[1].length - 1]) {
  const bad = sealed[1].slice();
  bad[at] ^= 1;
  await refuses(`tampered byte ${at}`, () => fc.openChunk(theirs, id, 1, false, bad));
}
// Reordered: chunk 2 presented as chunk 1.
await refuses("reordered", () => fc.openChunk(theirs, id, 1, false, sealed[2]));
// Truncated: the file cut after chunk 2, whose final flag is 0.
await refuses("truncated", () => fc.openChunk(theirs, id, 2, true, sealed[2]));
// The real last chunk presented as not final (more chunks appended).
await refuses("final flag", () => fc.openChunk(theirs, id, 3, false, sealed[3]));
// Swapped in from another file (id) under the same key.
await refuses("other file", () => fc.openChunk(theirs, "f".repeat(32), 1, false, sealed[1]));
// A shortened chunk.
await refuses("short chunk", () => fc.openChunk(theirs, id, 1, false, sealed[1].subarray(0, 100)));
// The digest names the exact chunk sequence.
const swapped = [sealed[0], sealed[2], sealed[1], sealed[3]].map(fc.tagOf);
check("digest depends on order", (await fc.digestOf(swapped)) !== digest);

// Per-recipient sealing: Alice seals an offer for Bob only; Carol, who sees
// the relayed message too, cannot open Bob's copy, nor can Bob open it as
// if it were from Carol.
const people = new Map();
const worker = { postMessage() {} };
for (const idn of ["alice", "bob", "carol"]) {
  people.set(idn, new KeyManager({ send: (to, p) => deliver(idn, to, p), worker }));
}
const queue = [];
function deliver(from, to, p) {
  const targets = to === "everyone" ? [...people.keys()].filter((x) => x !== from) : to;
  for (const t of targets) queue.push([from, t, JSON.parse(JSON.stringify(p))]);
}
for (const [idn, km] of people) await km.start(idn);
for (let round = 0; round < 50 && (queue.length || [...people.values()].some((k) => k.batching)); round++) {
  while (queue.length) {
    const [from, to, p] = queue.shift();
    await people.get(to).handle(from, p);
  }
  await new Promise((r) => setTimeout(r, 60));
}
const offer = utf8(JSON.stringify({ key: "secret" }));
const copies = await people.get("alice").sealTo(["bob"], offer, "file-offer");
check("one copy", Object.keys(copies).join() === "bob");
const opened = await people.get("bob").openFrom("alice", copies.bob, "file-offer");
check("bob opens", new TextDecoder().decode(opened) === '{"key":"secret"}');
await refuses("carol opens bob's copy", () => people.get("carol").openFrom("alice", copies.bob, "file-offer"));
await refuses("bob's copy as from carol", () => people.get("bob").openFrom("carol", copies.bob, "file-offer"));
await refuses("other label", () => people.get("bob").openFrom("alice", copies.bob, "chat"));

const ok = failures.length === 0;
console.log(JSON.stringify({ ok, refused, failures }));
process.exit(ok ? 0 : 1);
