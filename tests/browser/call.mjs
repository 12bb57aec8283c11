// Browser tests of the web client against a running SFU (started by
// sfu/tests/browser.rs). Usage:
//   node call.mjs --base http://127.0.0.1:PORT --scenario three|nokeys|relay [--artifacts DIR]
// three: a three-person call, chat, a 1 MB file (encrypted-blob store), key rotation on leave, reconnect.
// nokeys: a participant that drops its keys receives packets but decodes nothing.
// relay: relay-only ICE through the embedded TURN; VP9 + RTCRtpScriptTransform
//   on one side, VP8 + createEncodedStreams on the other.
// Prints one JSON line: {"ok": true|false, ...}.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { allDecoding, args, finish, join, launch, peerStats, state, stats, until } from "./lib.mjs";

const a = args();
const base = a.base;
const artifacts = a.artifacts || "target/artifacts";
const room = `${a.scenario}-${Date.now().toString(36)}`;
const report = { ok: false, scenario: a.scenario };
const people = [];
const browser = await launch();
const started = Date.now();

async function three() {
  for (const name of ["Alice", "Bob", "Carol"]) people.push(await join(browser, base, room, name));
  const [alice, bob, carol] = people;
  report.decoding = await allDecoding(people, 30, 45000);
  report.call_ready_ms = Date.now() - started;

  // Encrypted indicator and one safety number for all.
  const states = await until(10000, "encrypted badge and equal safety numbers", async () => {
    const s = await Promise.all(people.map(state));
    const numbers = new Set(s.map((x) => x.safetyNumber));
    return s.every((x) => x.e2ee === "on" && x.transform) && numbers.size === 1 && !numbers.has("") ? s : false;
  });
  report.safety_number = states[0].safetyNumber;
  report.transform = states[0].transform;

  // Chat: Alice types, Bob and Carol read it.
  const text = `hello from Alice ${randomBytes(4).toString("hex")}`;
  await alice.page.fill("#chat-input", text);
  await alice.page.press("#chat-input", "Enter");
  for (const p of [bob, carol]) {
    await until(10000, `${p.name} receives the chat message`, () =>
      p.page.evaluate((t) => [...document.querySelectorAll("#chat-log .msg .text")].some((e) => e.textContent === t), text),
    );
  }
  report.chat = "delivered";

  // A 1 MB file from Bob reaches Alice and Carol intact.
  const file = randomBytes(1024 * 1024);
  const sha256 = createHash("sha256").update(file).digest("hex");
  const t0 = Date.now();
  await bob.page.setInputFiles("#file-input", { name: "random.bin", mimeType: "application/octet-stream", buffer: file });
  for (const p of [alice, carol]) {
    await p.page.click(".file button.fetch", { timeout: 30000 });
    const got = await until(30000, `${p.name} receives the file`, () =>
      p.page.evaluate(async () => {
        const link = document.querySelector(".file a[download]");
        if (!link) return false;
        const bytes = await (await fetch(link.href)).arrayBuffer();
        const hex = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
        return { size: bytes.byteLength, sha256: hex, name: link.download };
      }),
    );
    if (got.sha256 !== sha256 || got.size !== file.length) throw new Error(`${p.name} got a different file: ${JSON.stringify(got)}`);
  }
  report.file = { bytes: file.length, sha256, ms: Date.now() - t0 };

  // The call as Alice sees it, with the chat and the file.
  mkdirSync(artifacts, { recursive: true });
  report.screenshot = `${artifacts}/three-person-call.png`;
  await alice.page.screenshot({ path: report.screenshot });

  // Carol leaves: Alice and Bob rotate keys (new KIDs) and keep decoding.
  const before = {
    aliceSeesBob: await peerStats(alice, "Bob"),
    bobSeesAlice: await peerStats(bob, "Alice"),
  };
  await carol.page.click("#leave-button");
  const after = await until(15000, "new key ids after Carol left, and decoding continues", async () => {
    const ab = await peerStats(alice, "Bob");
    const ba = await peerStats(bob, "Alice");
    const moved = (now, then) =>
      now?.e2ee?.kid !== then.e2ee.kid && now.video.framesDecoded >= then.video.framesDecoded + 30;
    const people = (await state(alice)).people.length + (await state(bob)).people.length;
    return moved(ab, before.aliceSeesBob) && moved(ba, before.bobSeesAlice) && people === 2 ? { ab, ba } : false;
  });
  report.rotation = {
    bob_kid: [before.aliceSeesBob.e2ee.kid, after.ab.e2ee.kid],
    alice_kid: [before.bobSeesAlice.e2ee.kid, after.ba.e2ee.kid],
  };

  // Alice's connection drops: she reconnects by herself and Bob sees her again.
  const oldId = (await state(alice)).selfId;
  await alice.page.evaluate(() => window.sfu.dropConnection());
  await until(20000, "Alice reconnects and Bob decodes her again", async () => {
    const s = await state(alice);
    const bs = await peerStats(bob, "Alice");
    return s.selfId && s.selfId !== oldId && s.status === "connected" && bs?.video?.framesDecoded >= 30;
  });
  report.reconnect = "ok";
}

async function nokeys() {
  people.push(await join(browser, base, room, "Alice"));
  people.push(await join(browser, base, room, "Bob"));
  people.push(await join(browser, base, room, "Mallory", "&e2ee_test_nokeys=1"));
  const [alice, bob, mallory] = people;
  report.decoding = await allDecoding([alice, bob], 30, 45000);
  const seen = await until(20000, "Mallory receives video packets of both", async () => {
    const s = await stats(mallory);
    const v = Object.values(s?.peers ?? {}).filter((p) => p.name !== "Mallory");
    return v.length === 2 && v.every((p) => p.video?.packetsReceived >= 100) ? s : false;
  });
  // Give the decoder time to (wrongly) decode something.
  await new Promise((r) => setTimeout(r, 2000));
  const s = await stats(mallory);
  report.mallory = Object.fromEntries(
    Object.values(s.peers).map((p) => [p.name, { packets: p.video?.packetsReceived, framesDecoded: p.video?.framesDecoded, e2ee: p.e2ee }]),
  );
  for (const p of Object.values(s.peers)) {
    if (p.video?.framesDecoded !== 0) throw new Error(`Mallory decoded ${p.video?.framesDecoded} frames of ${p.name} without keys`);
    if (!(p.e2ee?.failed > 0) || p.e2ee?.decrypted !== 0) throw new Error(`unexpected decrypt stats: ${JSON.stringify(p.e2ee)}`);
  }
  if (!seen) throw new Error("unreachable");
}

async function relay() {
  // Alice sends VP9 through RTCRtpScriptTransform, Bob the default VP8
  // through the createEncodedStreams fallback: both codecs, both APIs.
  people.push(await join(browser, base, room, "Alice", "&ice=relay&codec=vp9"));
  people.push(await join(browser, base, room, "Bob", "&ice=relay&e2ee_api=streams"));
  report.decoding = await allDecoding(people, 30, 45000);
  report.codecs = {
    "Bob<-Alice": (await peerStats(people[1], "Alice")).video.codec,
    "Alice<-Bob": (await peerStats(people[0], "Bob")).video.codec,
  };
  report.apis = Object.fromEntries(await Promise.all(people.map(async (p) => [p.name, (await state(p)).transform])));
  report.routes = {};
  for (const p of people) {
    const r = await p.page.evaluate(() => window.sfu.iceRoutes());
    if (r.pub !== "relay" || r.sub !== "relay") throw new Error(`${p.name} is not relayed: ${JSON.stringify(r)}`);
    report.routes[p.name] = r;
  }
}

try {
  await { three, nokeys, relay }[a.scenario]();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
await browser.close().catch(() => {});
finish(report, people);
