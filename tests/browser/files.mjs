// End-to-end encrypted file sharing in Chromium through the server's
// encrypted-blob store (started by sfu/tests/browser.rs). Usage:
//   node files.mjs --base http://127.0.0.1:PORT --files-dir DIR [--mb 200] [--bench 1 --server-pid PID]
// Alice sends a random file to Bob and Carol but not Mallory; her upload is
// cut mid-way and resumes; Bob's download is cut and resumes; Carol
// downloads after Alice left; both get identical bytes (compared slice by
// slice with Alice's). Mallory never gets an offer; the server's bytes are
// not the plaintext; a guessed capability gets 404; a file over quota gets a
// clear error; a blob altered on the server is refused by its recipient.
// --bench 1: only the transfer (no interruptions, no other checks), for
// benches/files/bench.sh, with CPU seconds of Chromium (all its processes)
// per phase and of the server. Prints one JSON line: {"ok": true|false, ...}.
import { createHash } from "node:crypto";
import { openSync, readFileSync, readSync, closeSync, readdirSync, statSync, writeSync } from "node:fs";
import { join as pathJoin } from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, args, finish, join, state, until } from "./lib.mjs";

const a = args();
const base = a.base;
const filesDir = a["files-dir"];
const MB = 1024 * 1024;
const size = Number(a.mb || 200) * MB;
const bench = a.bench === "1";
const room = `files-${Date.now().toString(36)}`;
const report = { ok: false, scenario: bench ? "bench" : "files", bytes: size };
const people = [];
// No camera or microphone: this test is about files, and two cores are
// better spent on encryption than on video.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: CHROMIUM_ARGS.filter((f) => !f.includes("fake")),
  timeout: 30000,
});
const started = Date.now();

/** Makes a random file of `bytes` in `p`'s page as window.__file; returns SHA-256 per 16 MiB slice. */
async function makeFile(p, bytes, name) {
  return p.page.evaluate(
    async ({ bytes, name }) => {
      const parts = [];
      for (let at = 0; at < bytes; at += 1 << 20) {
        const part = new Uint8Array(Math.min(1 << 20, bytes - at));
        for (let i = 0; i < part.length; i += 65536) crypto.getRandomValues(part.subarray(i, i + 65536));
        parts.push(part);
      }
      window.__file = new File(parts, name, { type: "application/octet-stream" });
      const hashes = [];
      for (let at = 0; at < bytes; at += 16 << 20) {
        const slice = await window.__file.slice(at, at + (16 << 20)).arrayBuffer();
        hashes.push(Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", slice)), (b) => b.toString(16).padStart(2, "0")).join(""));
      }
      return hashes;
    },
    { bytes, name },
  );
}

/** Sends window.__file through the file input, as a user picking it would. */
async function pickFile(p) {
  await p.page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(window.__file);
    const input = document.getElementById("file-input");
    input.files = dt.files;
    input.dispatchEvent(new Event("change"));
  });
}

/** In `p`'s page: drops the file connections once a transfer named `name` passes `fraction`. */
async function dropAt(p, name, fraction) {
  await p.page.evaluate(
    ({ name, fraction }) => {
      const timer = setInterval(() => {
        const t = window.sfu.transfers().find((x) => x.name === name && (x.state === "uploading" || x.state === "downloading"));
        // Between two requests there is nothing to cut: try again.
        if (t && t.done >= t.size * fraction && window.sfu.dropFileTransfers() > 0) {
          clearInterval(timer);
          window.__droppedAt = t.done;
        }
      }, 2);
      setTimeout(() => clearInterval(timer), 120000);
    },
    { name, fraction },
  );
}

const transfer = (p, name) => p.page.evaluate((n) => window.sfu.transfers().find((x) => x.name === n) ?? null, name);

async function finished(p, name, ms) {
  const t = await until(ms, `${p.name}: ${name} finished`, async () => {
    const x = await transfer(p, name);
    return x && (x.state === "done" || x.state === "failed") ? x : false;
  });
  return t;
}

/** SHA-256 per 16 MiB slice of the file behind `p`'s "Save" link for `name`. */
async function savedHashes(p, name) {
  return p.page.evaluate(async (n) => {
    const t = window.sfu.transfers().find((x) => x.name === n);
    const blob = await (await fetch(t.url)).blob();
    const hashes = [];
    for (let at = 0; at < blob.size; at += 16 << 20) {
      const slice = await blob.slice(at, at + (16 << 20)).arrayBuffer();
      hashes.push(Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", slice)), (b) => b.toString(16).padStart(2, "0")).join(""));
    }
    return { size: blob.size, hashes };
  }, name);
}

async function download(p, name, ms, fraction) {
  await until(30000, `${p.name} is offered ${name}`, async () => (await transfer(p, name))?.state === "offered");
  if (fraction) await dropAt(p, name, fraction);
  const t0 = Date.now();
  await p.page.click(`.file[data-state="offered"] button.fetch`);
  const t = await finished(p, name, ms);
  if (!t.ok) throw new Error(`${p.name} could not download ${name}: ${t.error}`);
  return { ...t, wallMs: Date.now() - t0 };
}

/** CPU seconds (user + system) of `pid`, 0 if it is gone. */
function cpuOf(pid) {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds of this process's descendants (Chromium's processes). */
function chromiumCpu() {
  const parent = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const f = readFileSync(`/proc/${d}/stat`, "utf8").split(") ")[1].split(" ");
      parent.set(Number(d), Number(f[1]));
    } catch {
      // exited meanwhile
    }
  }
  let sum = 0;
  for (const pid of parent.keys()) {
    for (let p = pid, hops = 0; p > 1 && hops < 32; p = parent.get(p) ?? 0, hops++) {
      if (p === process.pid && pid !== process.pid) {
        sum += cpuOf(pid);
        break;
      }
    }
  }
  return sum;
}

const serverPid = Number(a["server-pid"] || 0);
/** Marks the start of a phase; returns a function giving its CPU seconds. */
function phase() {
  const c0 = chromiumCpu();
  const s0 = serverPid ? cpuOf(serverPid) : 0;
  return () => ({
    chromium_cpu_s: Math.round((chromiumCpu() - c0) * 100) / 100,
    server_cpu_s: serverPid ? Math.round((cpuOf(serverPid) - s0) * 100) / 100 : null,
  });
}

/** Ciphertext bytes of a file (64 KiB chunks, 16-byte tags; e2ee/filecrypt.js). */
const cipherLength = (n) => n + 16 * Math.max(1, Math.ceil(n / 65536));

const mbps = (bytes, ms) => Math.round((bytes / MB / (ms / 1000)) * 10) / 10;

function blobFiles() {
  return readdirSync(filesDir)
    .filter((f) => f.endsWith(".blob"))
    .map((f) => ({ path: pathJoin(filesDir, f), size: statSync(pathJoin(filesDir, f)).size }));
}

function sha256OfRange(path, start, length) {
  const fd = openSync(path, "r");
  const buf = Buffer.alloc(length);
  readSync(fd, buf, 0, length, start);
  closeSync(fd);
  return createHash("sha256").update(buf).digest("hex");
}

async function scenario() {
  for (const name of bench ? ["Alice", "Bob", "Carol"] : ["Alice", "Bob", "Carol", "Mallory"]) {
    people.push(await join(browser, base, room, name));
  }
  const [alice, bob, carol, mallory] = people;
  await until(30000, "everyone holds everyone's key", async () => {
    const s = await Promise.all(people.map(state));
    return s.every((x) => x.e2ee === "on" && x.people.length === people.length - 1);
  });
  report.ready_ms = Date.now() - started;

  // Alice leaves Mallory out.
  if (mallory) {
    const malloryId = (await state(mallory)).selfId;
    await alice.page.click("#file-to summary");
    await alice.page.uncheck(`#file-to-list input[data-participant-id="${malloryId}"]`);
    const summary = await alice.page.textContent("#file-to-summary");
    if (summary !== "2 of 3") throw new Error(`recipient summary ${summary}`);
  }

  const name = "random.bin";
  const plain = await makeFile(alice, size, name);
  if (!bench) await dropAt(alice, name, 0.3);
  const t0 = Date.now();
  const upPhase = phase();
  await pickFile(alice);
  const sent = await finished(alice, name, 600000);
  const upCpu = upPhase();
  if (!sent.ok) throw new Error(`upload failed: ${sent.error}`);
  const cipherBytes = cipherLength(size);
  report.upload = { mbps: mbps(size, sent.ms), ms: Math.round(sent.ms), wall_ms: Date.now() - t0, resumes: sent.resumes, wire: sent.wire, to: sent.to, ...upCpu };
  if (!bench) {
    if (sent.resumes < 1) throw new Error("the upload was not interrupted");
    // Resumed, not restarted: at most one 16 MiB batch is sent twice.
    if (sent.wire > cipherBytes + 17 * MB) throw new Error(`upload sent ${sent.wire} bytes for ${cipherBytes}`);
    report.upload.dropped_at = await alice.page.evaluate(() => window.__droppedAt);
    // What the server received in all: the cut request's bytes count once.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const received = Number(/^sfu_files_uploaded_bytes_total (\d+)/m.exec(metrics)?.[1]);
    report.upload.server_received = received;
    if (!(received >= cipherBytes && received <= cipherBytes + 17 * MB)) throw new Error(`the server received ${received} bytes for ${cipherBytes}`);
  }

  // The server holds ciphertext of the right size, not the plaintext.
  const stored = blobFiles().find((f) => f.size === cipherBytes);
  if (!stored) throw new Error(`no stored blob of ${cipherBytes} bytes: ${JSON.stringify(blobFiles())}`);
  if (sha256OfRange(stored.path, 0, 16 * MB) === plain[0]) throw new Error("the server stores the plaintext");

  if (!bench) {
    // Over quota: a clear error, nothing uploaded.
    await makeFile(alice, 150 * MB, "second.bin");
    await pickFile(alice);
    const refused = await finished(alice, "second.bin", 30000);
    if (refused.ok || !/quota exceeded/.test(refused.error)) throw new Error(`over quota: ${JSON.stringify(refused)}`);
    report.quota_error = refused.error;
    if (!(await alice.page.textContent(`.file[data-state="failed"]`)).includes("quota exceeded")) throw new Error("quota error not shown");
  }

  // Bob downloads, cut mid-way; it resumes.
  const bobPhase = phase();
  const b = await download(bob, name, 600000, bench ? 0 : 0.25);
  report.bob = { mbps: mbps(size, b.ms), ms: Math.round(b.ms), resumes: b.resumes, wire: b.wire, ...bobPhase() };
  if (!bench) {
    if (b.resumes < 1) throw new Error("Bob's download was not interrupted");
    if (b.wire > cipherBytes + MB) throw new Error(`Bob received ${b.wire} bytes for ${cipherBytes}`);
  }
  const bobGot = await savedHashes(bob, name);
  if (bobGot.size !== size || bobGot.hashes.join() !== plain.join()) throw new Error("Bob's file differs");

  // Alice leaves; Carol still gets the file.
  await alice.page.click("#leave-button");
  await until(20000, "Carol sees Alice leave", async () => (await state(carol)).people.length === people.length - 2);
  const carolPhase = phase();
  const c = await download(carol, name, 600000, 0);
  report.carol = { mbps: mbps(size, c.ms), ms: Math.round(c.ms), after_sender_left: true, ...carolPhase() };
  // End to end: Alice picks the file until Carol can save it, for one recipient.
  report.end_to_end_mbps = mbps(size, sent.ms + c.ms);
  const carolGot = await savedHashes(carol, name);
  if (carolGot.size !== size || carolGot.hashes.join() !== plain.join()) throw new Error("Carol's file differs");
  report.identical = { slices: plain.length, sha256_first_slice: plain[0] };
  if (bench) return;

  // Mallory, in the room but not chosen, was never offered the file.
  const m = await mallory.page.evaluate(() => ({ transfers: window.sfu.transfers().length, entries: document.querySelectorAll(".file").length }));
  if (m.transfers || m.entries) throw new Error(`Mallory got something: ${JSON.stringify(m)}`);
  report.mallory = m;

  // No capability, no file.
  report.guessed = await mallory.page.evaluate(async () => {
    const hex = Array.from(crypto.getRandomValues(new Uint8Array(16)), (x) => x.toString(16).padStart(2, "0")).join("");
    return [(await fetch(`/files/${hex}`)).status, (await fetch("/files/not-a-capability")).status];
  });
  if (report.guessed.join() !== "404,404") throw new Error(`guessed capabilities: ${report.guessed}`);

  // A byte of a stored blob altered on the server: its recipient refuses it.
  const small = 3 * MB + 12345;
  await makeFile(bob, small, "altered.bin");
  await pickFile(bob);
  const smallSent = await finished(bob, "altered.bin", 60000);
  if (!smallSent.ok) throw new Error(`small upload failed: ${smallSent.error}`);
  const smallBlob = blobFiles().find((f) => f.size === cipherLength(small));
  const fd = openSync(smallBlob.path, "r+");
  const byte = Buffer.alloc(1);
  readSync(fd, byte, 0, 1, 2 * MB);
  byte[0] ^= 0x01;
  writeSync(fd, byte, 0, 1, 2 * MB);
  closeSync(fd);
  await until(30000, "Carol is offered altered.bin", async () => (await transfer(carol, "altered.bin"))?.state === "offered");
  await carol.page.click(`.file[data-state="offered"] button.fetch`);
  const altered = await finished(carol, "altered.bin", 30000);
  if (altered.ok || !/Damaged/.test(altered.error)) throw new Error(`altered blob: ${JSON.stringify(altered)}`);
  report.altered = altered.error;
  // Nothing of it is left for Carol to save.
  const leftover = await carol.page.evaluate(async () => {
    const names = [];
    for await (const n of (await navigator.storage.getDirectory()).keys()) names.push(n);
    return names;
  });
  if (leftover.length !== 1) throw new Error(`Carol's private files: ${leftover}`);
}

try {
  await scenario();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
await browser.close().catch(() => {});
finish(report, people);
