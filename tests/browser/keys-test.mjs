// The web client's key exchange (sfu/web/e2ee/keys.js) on Node's WebCrypto,
// with an in-memory relay standing in for the SFU: ECDH hellos, wrapped keys,
// safety numbers, sealed chat, tampering, a participant that drops its keys,
// and rotation when someone leaves. Prints one JSON line; exit 1 on failure.
import { webModule } from "./web-modules.mjs";

const { KeyManager, MissingKey } = await webModule("e2ee/keys.js");
const { toB64, utf8 } = await webModule("e2ee/bytes.js");

const failures = [];
const check = (what, ok, detail = "") => {
  if (!ok) failures.push(`${what} ${detail}`);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The relay: ordered delivery per recipient, payloads as JSON text, and a log
// of everything "the server" sees.
const people = new Map(); // id -> {km, worker, chain}
const seen = [];
let inflight = 0;
let tamper = null; // (from, to, payload) -> payload

function deliver(from, to, payload) {
  const text = JSON.stringify(payload);
  seen.push(text);
  const targets = to === "everyone" ? [...people.keys()].filter((id) => id !== from) : to;
  for (const id of targets) {
    const p = people.get(id);
    if (!p) continue; // ids not in the room are ignored
    let copy = JSON.parse(text);
    if (tamper) copy = tamper(from, id, copy);
    inflight++;
    p.chain = p.chain.then(() => p.km.handle(from, copy)).catch((e) => failures.push(`handle: ${e}`)).finally(() => inflight--);
  }
}

// Settled: nothing in flight and no batching window open (a batch makes
// newcomers owe keys in turn, so this loops).
const busy = () => inflight > 0 || [...people.values()].some((p) => p.km.batching);
async function idle() {
  for (let i = 0; i < 1000 && busy(); i++) await sleep(5);
  check("relay settles", !busy());
}

async function joinAs(id, dropKeys = false) {
  const worker = { messages: [], postMessage(m) { this.messages.push(m); } };
  const km = new KeyManager({ send: (to, p) => deliver(id, to, p), worker, dropKeys });
  people.set(id, { km, worker, chain: Promise.resolve() });
  await km.start(id);
  await idle();
  return people.get(id);
}

const recvKeys = (p, from) => p.worker.messages.filter((m) => m.type === "recv-key" && m.participantId === from);

const a = await joinAs("A");
const b = await joinAs("B");
const c = await joinAs("C");

// Everyone holds everyone's current key, and agrees on the safety number.
for (const [x, xid] of [[a, "A"], [b, "B"], [c, "C"]]) {
  for (const [y, yid] of [[a, "A"], [b, "B"], [c, "C"]]) {
    if (x === y) continue;
    const got = recvKeys(x, yid).map((m) => m.kid);
    check(`${xid} has ${yid}'s key`, got.includes(y.km.kid), JSON.stringify(got));
  }
}
const numbers = await Promise.all([a, b, c].map((p) => p.km.safetyNumber()));
check("same safety number", new Set(numbers).size === 1, JSON.stringify(numbers));
check("safety number shape", /^\d{5}( \d{5}){5}$/.test(numbers[0]), numbers[0]);

// The relay never carried a base key.
for (const p of [a, b, c]) {
  const raw = toB64(p.km.current.raw);
  check("no base key on the relay", !seen.some((t) => t.includes(raw)));
}

// Chat sealed by A opens at B and C.
const sealed = await a.km.seal(utf8("hi all"), "chat");
for (const p of [b, c]) {
  const text = new TextDecoder().decode(await p.km.open("A", sealed, "chat"));
  check("chat opens", text === "hi all", text);
}
const wrongAad = await b.km.open("A", sealed, "file-meta").then(() => false, () => true);
check("chat under another label is refused", wrongAad);

// A tampered wrapped key is refused: D joins, and the relay flips a bit in
// B's batch entry for D.
tamper = (from, to, p) => {
  if (from === "B" && to === "D" && p.kind === "e2ee-keys" && p.keys?.D) {
    const bytes = Buffer.from(p.keys.D.wrapped, "base64");
    bytes[0] ^= 1;
    p.keys.D.wrapped = bytes.toString("base64");
  }
  return p;
};
const d = await joinAs("D");
tamper = null;
check("tampered key refused", recvKeys(d, "B").length === 0);
check("untampered keys accepted", recvKeys(d, "A").length === 1 && recvKeys(d, "C").length === 1);
people.delete("D");
await Promise.all([a, b, c].map((p) => p.km.peerLeft("D")));
await idle();

// A participant that drops keys (the test switch) holds none and opens nothing.
const m = await joinAs("M", true);
check("no-keys participant got no keys", m.worker.messages.every((x) => x.type !== "recv-key"));
const mOpen = await m.km.open("A", await a.km.seal(utf8("x"), "chat"), "chat").then(() => "opened", (e) => e instanceof MissingKey);
check("no-keys participant cannot open", mOpen === true, String(mOpen));
people.delete("M");
await Promise.all([a, b, c].map((p) => p.km.peerLeft("M")));
await idle();

// C leaves: A and B rotate, keep the previous key for a while, and C cannot
// read what A seals afterwards.
const before = { A: a.km.kid, B: b.km.kid };
people.delete("C");
await Promise.all([a.km.peerLeft("C"), b.km.peerLeft("C")]);
await idle();
check("A's key id changed", a.km.kid !== before.A, `${before.A} -> ${a.km.kid}`);
check("B's key id changed", b.km.kid !== before.B, `${before.B} -> ${b.km.kid}`);
check("B holds A's new key", recvKeys(b, "A").some((x) => x.kid === a.km.kid));
check("B keeps A's previous key for now", b.km.peers.get("A").keys.has(before.A));
check("A switched its worker", a.worker.messages.filter((x) => x.type === "send-key").at(-1).kid === a.km.kid);
const after = await a.km.seal(utf8("after C left"), "chat");
const cOpen = await c.km.open("A", after, "chat").then(() => "opened", (e) => e instanceof MissingKey);
check("C cannot open after leaving", cOpen === true, String(cOpen));
const bOpen = new TextDecoder().decode(await b.km.open("A", after, "chat"));
check("B opens after rotation", bOpen === "after C left");
const two = await Promise.all([a, b].map((p) => p.km.safetyNumber()));
check("safety number changes with the people", two[0] === two[1] && two[0] !== numbers[0]);

// No per-recipient key messages any more: keys travel in batches to everyone.
check("only batches carry keys", !seen.some((t) => JSON.parse(t).kind === "e2ee-key"));
check("no reply hellos", !seen.some((t) => JSON.parse(t).reply));

// An entry replayed by someone else claiming the sender's pub is refused:
// the AAD names sender and recipient.
{
  const z = await joinAs("Z");
  const batch = seen.map((t) => JSON.parse(t)).find((p) => p.kind === "e2ee-keys" && p.keys?.B && p.pub === toB64(a.km.pub));
  const w = { messages: [], postMessage(m) { this.messages.push(m); } };
  const victim = new KeyManager({ send: () => {}, worker: w });
  await victim.start("B");
  await victim.handle("Y", { ...batch });
  check("replayed entry refused", w.messages.every((x) => x.type !== "recv-key"));
  people.delete("Z");
  await Promise.all([a, b].map((p) => p.km.peerLeft("Z")));
  await idle();
  void z;
}

// Batching: 200 newcomers' hellos reach one sender; after the window it
// sends one e2ee-keys relay to them (under the size cap), and each
// newcomer unwraps its own entry and acks.
{
  const out = [];
  const sw = { messages: [], postMessage() {} };
  const sender = new KeyManager({ send: (to, p) => out.push({ to, p: JSON.parse(JSON.stringify(p)) }), worker: sw });
  await sender.start("S");
  out.length = 0;
  const newcomers = [];
  for (let i = 0; i < 200; i++) {
    const id = `PA_newcomer_${i}`;
    const w = { messages: [], postMessage(m) { this.messages.push(m); } };
    const sent = [];
    const km = new KeyManager({ send: (to, p) => sent.push({ to, p }), worker: w });
    await km.start(id);
    newcomers.push({ id, km, w, sent });
  }
  // Their hellos arrive back to back.
  await Promise.all(newcomers.map((n) => sender.handle(n.id, n.sent.shift().p)));
  check("nothing before the window closes", out.length === 0, JSON.stringify(out.slice(0, 2)));
  for (let i = 0; i < 100 && sender.batching; i++) await sleep(10);
  check("one batch for 200 newcomers", out.length === 1, String(out.length));
  const batch = out[0];
  check("batch goes to the 200", batch?.to.length === 200 && batch?.p.kind === "e2ee-keys");
  const size = JSON.stringify(batch?.p ?? {}).length;
  check("batch under the cap", size <= 32 * 1024 && Object.keys(batch?.p.keys ?? {}).length === 200, String(size));
  let unwrapped = 0;
  for (const n of newcomers) {
    await n.km.handle("S", batch.p);
    if (n.w.messages.some((m) => m.type === "recv-key" && m.participantId === "S" && m.kid === sender.kid)) unwrapped++;
    const ack = n.sent.find((m) => m.p.kind === "e2ee-ack");
    if (ack) await sender.handle(n.id, ack.p);
    check("the batch's pub taught the newcomer", n.km.peers.has("S"));
  }
  check("every newcomer unwrapped its key", unwrapped === 200, String(unwrapped));
  // The sender rotates: the new key reaches all 200 in one batch, and the
  // acks switch it before the timeout.
  out.length = 0;
  const old = sender.kid;
  const rotating = sender.rotate();
  await rotating;
  check("rotation is one batch", out.length === 1 && out[0].p.kid !== old, String(out.length));
  for (const n of newcomers) {
    n.sent.length = 0;
    await n.km.handle("S", out[0].p);
    const ack = n.sent.find((m) => m.p.kind === "e2ee-ack");
    if (ack) await sender.handle(n.id, ack.p);
  }
  check("acks switch the rotated key", sender.kid === out[0].p.kid, `${sender.kid}`);
  for (const n of newcomers) clearTimeout(n.km.flushTimer);
}

// Someone joins and someone else leaves within the batching window, while
// the sender's rotation is still waiting for an ack (Q never acks): the
// newcomer gets the old key in the batch and the new one from the rotation,
// and must keep the one the sender encrypts with once the old ones expire.
{
  const q = await joinAs("Q", true);
  await joinAs("L");
  const worker = { messages: [], postMessage(m) { this.messages.push(m); } };
  const km = new KeyManager({ send: (to, p) => deliver("N", to, p), worker, keepPreviousMs: 200 });
  people.set("N", { km, worker, chain: Promise.resolve() });
  await km.start("N");
  await sleep(10);
  people.delete("L");
  await Promise.all([...people.values()].map((p) => p.km.peerLeft("L")));
  await idle();
  await sleep(1700); // past the unacked rotation's switch and the 200 ms expiry
  const held = new Set();
  for (const m of worker.messages.filter((m) => m.participantId === "A")) {
    if (m.type === "recv-key") held.add(m.kid);
    if (m.type === "drop-key") held.delete(m.kid);
  }
  check("a newcomer during a rotation keeps the sender's key", held.has(a.km.kid), JSON.stringify([...held]));
  for (const id of ["Q", "N"]) people.delete(id);
  await Promise.all([a, b].map((p) => p.km.peerLeft("Q").then(() => p.km.peerLeft("N"))));
  void q;
}

const report = { ok: failures.length === 0, relayed: seen.length, failures };
console.log(JSON.stringify(report));
process.exit(report.ok ? 0 : 1);
