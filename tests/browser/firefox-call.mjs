// Firefox ESR and Chromium in one end-to-end encrypted call (started by
// sfu/tests/browser.rs). Usage: node firefox-call.mjs --base http://127.0.0.1:PORT
// Alice uses Chromium (playwright-core), Bob Firefox ESR (puppeteer-core over
// WebDriver BiDi): each decodes the other's video and audio through
// RTCRtpScriptTransform, chat and a file pass both ways, both show the same
// safety number, and when Alice leaves Bob stays in the call, where he then
// decodes Carol (Chromium) who joins. Bob's camera goes out as simulcast
// from Firefox too (½ and full size from its 640×480 fake camera): Alice
// gets its full size in a large tile and a smaller layer in a thumbnail.
// No page may receive an `error` message from the SFU. Last, a browser
// without encoded transforms is refused at the join screen.
// Prints one JSON line: {"ok": true|false, ...}.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as pathJoin } from "node:path";
import { allDecoding, args, camera, finish, join, joinFirefox, launch, launchFirefox, state, styleRemote, until } from "./lib.mjs";

const a = args();
const base = a.base;
const room = `firefox-${Date.now().toString(36)}`;
const report = { ok: false, scenario: "firefox" };
const people = [];
const started = Date.now();
const tmp = mkdtempSync(pathJoin(tmpdir(), "sfu-firefox-"));
let chromium;
let firefox;

/** Types `text` into the chat of `p` and sends it, as a user would. */
async function sendChat(p, text) {
  if (p.firefox) {
    await p.page.type("#chat-input", text);
    await p.page.keyboard.press("Enter");
  } else {
    await p.page.fill("#chat-input", text);
    await p.page.press("#chat-input", "Enter");
  }
}

/** The first file offered to `p`: fetched (a click on Download), then its
 *  verified copy's name, size and SHA-256 once it is there. */
const receivedFile = async (p) => {
  const offered = await p.page.$(".file button.fetch");
  if (offered) await offered.click();
  return p.page.evaluate(async () => {
    const link = [...document.querySelectorAll(".file a[download]")].find((l) => l.textContent === "Save (verified)");
    if (!link) return false;
    const bytes = await (await fetch(link.href)).arrayBuffer();
    const hex = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)), (b) => b.toString(16).padStart(2, "0")).join("");
    return { size: bytes.byteLength, sha256: hex, name: link.download };
  });
};

/** Sends a random file of `size` bytes from `p` through the file input. */
async function sendFile(p, name, size) {
  const bytes = randomBytes(size);
  if (p.firefox) {
    const path = pathJoin(tmp, name);
    writeFileSync(path, bytes);
    const input = await p.page.$("#file-input");
    await input.uploadFile(path);
  } else {
    await p.page.setInputFiles("#file-input", { name, mimeType: "application/octet-stream", buffer: bytes });
  }
  return { name, size, sha256: createHash("sha256").update(bytes).digest("hex") };
}

async function run() {
  chromium = await launch();
  firefox = await launchFirefox();
  report.firefox_version = await firefox.version();
  const alice = await join(chromium, base, room, "Alice");
  const bob = await joinFirefox(firefox, base, room, "Bob");
  bob.firefox = true;
  people.push(alice, bob);

  report.decoding = await allDecoding(people, 30, 60000);
  report.call_ready_ms = Date.now() - started;
  const states = await until(15000, "encrypted badge and equal safety numbers", async () => {
    const s = await Promise.all(people.map(state));
    const numbers = new Set(s.map((x) => x.safetyNumber));
    return s.every((x) => x.e2ee === "on") && numbers.size === 1 && !numbers.has("") ? s : false;
  });
  report.safety_number = states[0].safetyNumber;
  report.transforms = { Alice: states[0].transform, Bob: states[1].transform };

  // Firefox publishes simulcast (two layers from a camera under 540 lines,
  // as Chromium: sfu/web/call.js), and the SFU picks among them by the size
  // of Alice's tile.
  const bobLayers = await until(15000, "Firefox sends its simulcast layers", async () => {
    const ls = await bob.page.evaluate(() => window.sfu.publishedLayers());
    return ls.length >= 2 && ls.every((l) => l.bytesSent > 0) ? ls : false;
  });
  const full = await bob.page.evaluate(() => document.getElementById("preview").videoWidth);
  const bobCamera = () => camera(alice, "Bob");
  const tile = (style) => styleRemote(alice, style);
  await tile("width: 900px; height: 675px");
  const large = await until(20000, "Alice decodes Bob's Firefox camera at full size", async () => {
    const c = await bobCamera();
    return c.width === full ? c : false;
  });
  await tile("width: 96px; height: 72px");
  const small = await until(20000, "Alice gets a smaller layer of Bob's camera in a thumbnail", async () => {
    const c = await bobCamera();
    return c.width > 0 && c.width <= full / 2 ? c : false;
  });
  await until(10000, "Alice keeps decoding Bob's small layer", async () => (await bobCamera()).frames >= small.frames + 20);
  await tile("");
  report.firefox_simulcast = { rids: bobLayers.map((l) => l.rid), camera_width: full, large_tile: large.width, thumbnail: small.width };

  // Chat both ways.
  for (const [from, to] of [[bob, alice], [alice, bob]]) {
    const text = `hello from ${from.name} ${randomBytes(4).toString("hex")}`;
    await sendChat(from, text);
    await until(10000, `${to.name} reads ${from.name}'s message`, () =>
      to.page.evaluate((t) => [...document.querySelectorAll("#chat-log .msg .text")].some((e) => e.textContent === t), text),
    );
  }
  report.chat = "both ways";

  // A file each way (several 64 KiB chunks).
  report.files = {};
  for (const [from, to] of [[bob, alice], [alice, bob]]) {
    const sent = await sendFile(from, `from-${from.name}.bin`, 200 * 1024 + 17);
    const got = await until(30000, `${to.name} receives ${from.name}'s file`, () => receivedFile(to));
    if (got.sha256 !== sent.sha256 || got.size !== sent.size || got.name !== sent.name) {
      throw new Error(`${to.name} got a different file: ${JSON.stringify(got)} vs ${JSON.stringify(sent)}`);
    }
    report.files[`${from.name}->${to.name}`] = { bytes: got.size, sha256: got.sha256 };
  }

  // Alice leaves: Bob, now alone, stays in the call on the same session.
  const bobBefore = await state(bob);
  await alice.page.click("#leave-button");
  await until(10000, "Bob sees Alice leave", async () => (await state(bob)).people.length === 0);
  // The error used to come within 100 ms of the renegotiation: give it 2 s.
  await new Promise((r) => setTimeout(r, 2000));
  const bobAfter = await state(bob);
  if (bobAfter.selfId !== bobBefore.selfId || bobAfter.status !== "connected") {
    throw new Error(`Bob lost his session after Alice left: ${JSON.stringify(bobAfter)}`);
  }
  report.alone_after_leave = "connected";

  // Carol joins: her tracks reach Bob on the subscribe connection he kept.
  const carol = await join(chromium, base, room, "Carol");
  people.push(carol);
  report.after_rejoin = await allDecoding([bob, carol], 30, 30000);
  const last = await Promise.all([bob, carol].map(state));
  report.server_errors = { Alice: states[0].serverErrors, Bob: last[0].serverErrors, Carol: last[1].serverErrors };
  if (Object.values(report.server_errors).some((e) => e.length) || last[0].selfId !== bobBefore.selfId) {
    throw new Error(`the SFU sent errors: ${JSON.stringify(report.server_errors)}`);
  }

  // A browser without encoded transforms is refused before joining.
  const context = await chromium.newContext();
  const page = await context.newPage();
  await page.addInitScript(() => {
    delete window.RTCRtpScriptTransform;
    delete RTCRtpSender.prototype.createEncodedStreams;
  });
  await page.goto(`${base}/?room=${room}&name=Old&autojoin=1`);
  report.refused = await until(10000, "the join screen refuses the browser", () =>
    page.evaluate(() => !document.getElementById("join").hidden && document.getElementById("join-error").textContent),
  );
  await context.close();
}

try {
  await run();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
await chromium?.close().catch(() => {});
await firefox?.close().catch(() => {});
rmSync(tmp, { recursive: true, force: true });
finish(report, people);
