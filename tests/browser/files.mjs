// End-to-end encrypted file sharing in Chromium through the server's
// encrypted-blob store (started by sfu/tests/browser.rs). Usage:
//   node files.mjs --base http://127.0.0.1:PORT --files-dir DIR [--mb 200] [--stall-s S] [--bench 1 --server-pid PID]
// Alice sends a random file to Bob and Carol but not Mallory; her upload is
// cut mid-way and resumes; Bob downloads while she uploads (he must receive
// bytes before her upload ends), his download is cut and resumes; Carol
// downloads after Alice left; both get identical bytes (compared slice by
// slice with Alice's). Mallory never gets an offer; the server's bytes are
// not the plaintext; a guessed capability gets 404; a file over quota gets a
// clear error; a blob altered on the server is refused by its recipient;
// Bob closing his browser mid-upload ends Carol's download of it with a
// clear error within the server's stall bound (files.stall_s = --stall-s).
// --bench 1: only the transfer (no interruptions, no other checks), for
// benches/files/bench.sh, with CPU seconds of Chromium (all its processes)
// per phase and of the server, Chromium's peak memory (proportional set size
// of all its processes) and the pages' peak JS heap. Prints one JSON line:
// {"ok": true|false, ...}.
import { createHash, randomFillSync } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, readSync, closeSync, readdirSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as pathJoin } from "node:path";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, args, finish, state, until } from "./lib.mjs";

const a = args();
const base = a.base;
const filesDir = a["files-dir"];
const MB = 1024 * 1024;
const size = Number(a.mb || 200) * MB;
const bench = a.bench === "1";
const room = `files-${Date.now().toString(36)}`;
const report = { ok: false, scenario: bench ? "bench" : "files", bytes: size };
const people = [];
const profiles = mkdtempSync(pathJoin(tmpdir(), "sfu-files-profiles-"));

/**
 * A participant in a Chromium of its own with an on-disk profile, as a
 * user's: a test context (incognito) would keep the origin-private file
 * system, where received files go, in memory. No camera or microphone: this
 * test is about files, and two cores are better spent on encryption than on
 * video.
 */
async function joinOwnProfile(name) {
  const context = await chromium.launchPersistentContext(pathJoin(profiles, name), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: CHROMIUM_ARGS.filter((f) => !f.includes("fake")),
    viewport: { width: 1280, height: 720 },
    timeout: 30000,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const log = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => log.push(`[${name}] pageerror: ${e.message}`));
  await page.goto(`${base}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}&autojoin=1`);
  return { name, page, context, log };
}
const started = Date.now();
const cleanup = []; // run at the end, whatever happened

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

/**
 * Writes a random file of `bytes` to a temporary directory (the sender's
 * disk: the page reads it from there, as a user's file, without holding it
 * in memory); returns its path and SHA-256 per 16 MiB slice.
 */
function makeDiskFile(bytes, name) {
  const dir = mkdtempSync(pathJoin(tmpdir(), "sfu-files-"));
  const path = pathJoin(dir, name);
  const fd = openSync(path, "w");
  const hashes = [];
  const slice = Buffer.alloc(16 * MB);
  for (let at = 0; at < bytes; at += slice.length) {
    const part = slice.subarray(0, Math.min(slice.length, bytes - at));
    randomFillSync(part);
    writeSync(fd, part);
    hashes.push(createHash("sha256").update(part).digest("hex"));
  }
  closeSync(fd);
  return { dir, path, hashes };
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

/**
 * In `p`'s page: records when the transfer named `name` first moved bytes
 * (window.__firstAt) and ended (window.__endAt), in ms since the epoch.
 */
async function watch(p, name) {
  await p.page.evaluate((name) => {
    window.__firstAt = window.__endAt = null;
    const timer = setInterval(() => {
      const t = window.sfu.transfers().find((x) => x.name === name);
      if (!t) return;
      if (window.__firstAt === null && t.done > 0) window.__firstAt = Date.now();
      if (t.state === "done" || t.state === "failed") {
        window.__endAt = Date.now();
        clearInterval(timer);
      }
    }, 5);
    setTimeout(() => clearInterval(timer), 900000);
  }, name);
}
const timeline = (p) => p.page.evaluate(() => ({ firstAt: window.__firstAt, endAt: window.__endAt }));

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

/** Process ids of this process's descendants. */
function descendants() {
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
  const out = [];
  for (const pid of parent.keys()) {
    for (let p = pid, hops = 0; p > 1 && hops < 32; p = parent.get(p) ?? 0, hops++) {
      if (p === process.pid && pid !== process.pid) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

/** Chromium's process type of `pid` ("browser", "renderer", "utility:NetworkService", ...). */
function typeOf(pid) {
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    const type = /--type=([a-z-]+)/.exec(cmd)?.[1] ?? "browser";
    const sub = /--utility-sub-type=([A-Za-z.]+)/.exec(cmd)?.[1];
    return sub ? `${type}:${sub.split(".").pop()}` : type;
  } catch {
    return "gone";
  }
}

/** CPU seconds of this process's descendants (Chromium's processes): in all, and by process type. */
function chromiumCpu() {
  const byType = {};
  let sum = 0;
  for (const pid of descendants()) {
    const cpu = cpuOf(pid);
    const type = typeOf(pid);
    byType[type] = (byType[type] ?? 0) + cpu;
    sum += cpu;
  }
  return { sum, byType };
}

/** Proportional set size (KiB) of this process's descendants (Chromium's processes), in all and by process type. */
function chromiumPssKib() {
  const byType = {};
  let sum = 0;
  for (const pid of descendants()) {
    try {
      const kib = Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? 0);
      const key = typeOf(pid);
      byType[key] = (byType[key] ?? 0) + kib;
      sum += kib;
    } catch {
      // exited meanwhile
    }
  }
  return { sum, byType };
}

const memory = { chromium_peak_pss_mib: 0, js_heap_peak_mib: 0, peak_pss_mib_by_process_type: {} };
/** Samples Chromium's memory and the pages' JS heaps until stopped. */
function sampleMemory() {
  let busy = false;
  const sample = async () => {
    if (busy) return;
    busy = true;
    const pss = chromiumPssKib();
    memory.chromium_peak_pss_mib = Math.max(memory.chromium_peak_pss_mib, Math.round(pss.sum / 1024));
    const peaks = memory.peak_pss_mib_by_process_type;
    for (const [type, kib] of Object.entries(pss.byType)) peaks[type] = Math.max(peaks[type] ?? 0, Math.round(kib / 1024));
    for (const p of people) {
      // Chromium's performance.memory: the page's JS heap (workers not included; their buffers are in the PSS).
      const used = await p.page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0).catch(() => 0);
      memory.js_heap_peak_mib = Math.max(memory.js_heap_peak_mib, Math.round(used / MB));
    }
    busy = false;
  };
  sample();
  const timer = setInterval(sample, 1000);
  return () => clearInterval(timer);
}

const serverPid = Number(a["server-pid"] || 0);
/** Marks the start of a phase; returns a function giving its CPU seconds. */
function phase() {
  const c0 = chromiumCpu();
  const s0 = serverPid ? cpuOf(serverPid) : 0;
  const r2 = (x) => Math.round(x * 100) / 100;
  return () => {
    const c1 = chromiumCpu();
    const byType = {};
    // A process that exited during the phase (a helper Chromium ends) takes its CPU time along: not below 0.
    for (const [type, cpu] of Object.entries(c1.byType)) byType[type] = Math.max(0, r2(cpu - (c0.byType[type] ?? 0)));
    return {
      chromium_cpu_s: r2(c1.sum - c0.sum),
      chromium_cpu_s_by_process_type: byType,
      server_cpu_s: serverPid ? r2(cpuOf(serverPid) - s0) : null,
    };
  };
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
    people.push(await joinOwnProfile(name));
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
  const disk = makeDiskFile(size, name);
  cleanup.push(() => rmSync(disk.dir, { force: true, recursive: true }));
  const plain = disk.hashes;
  const stopSampling = sampleMemory();
  if (!bench) await dropAt(alice, name, 0.3);
  await watch(alice, name);
  const t0 = Date.now();
  // Alice's upload and Bob's download run at the same time: CPU is per phase of both.
  const livePhase = phase();
  await alice.page.setInputFiles("#file-input", disk.path);
  // Bob downloads as soon as he is offered the file, while Alice uploads; cut mid-way, it resumes.
  await until(30000, `Bob is offered ${name}`, async () => (await transfer(bob, name))?.state === "offered");
  await watch(bob, name);
  if (!bench) await dropAt(bob, name, 0.25);
  const bobClick = Date.now();
  await bob.page.click(`.file[data-state="offered"] button.fetch`);
  const sent = await finished(alice, name, 900000);
  if (!sent.ok) throw new Error(`upload failed: ${sent.error}`);
  const b = await finished(bob, name, 900000);
  if (!b.ok) throw new Error(`Bob could not download ${name}: ${b.error}`);
  const liveCpu = livePhase();
  stopSampling();
  const [aliceT, bobT] = [await timeline(alice), await timeline(bob)];
  const cipherBytes = cipherLength(size);
  report.upload = { mbps: mbps(size, sent.ms), ms: Math.round(sent.ms), wall_ms: aliceT.endAt - t0, resumes: sent.resumes, wire: sent.wire, to: sent.to };
  report.bob = { mbps: mbps(size, b.ms), ms: Math.round(b.ms), resumes: b.resumes, wire: b.wire, clicked_after_ms: bobClick - t0, first_bytes_after_ms: bobT.firstAt - t0, done_after_ms: bobT.endAt - t0 };
  // Alice and Bob together (on this one machine), from picking the file until Bob can save it.
  report.live = { end_to_end_mbps: mbps(size, bobT.endAt - t0), ms: bobT.endAt - t0, ...liveCpu };
  // Bob received bytes before Alice's upload was complete (a 10 MB upload may end before his click: only reported then).
  report.bob.began_before_upload_ended = Boolean(bobT.firstAt && aliceT.endAt && bobT.firstAt < aliceT.endAt);
  if (!bench && !report.bob.began_before_upload_ended) throw new Error(`Bob did not start before Alice finished: ${JSON.stringify({ aliceT, bobT, t0 })}`);
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
    if (b.resumes < 1) throw new Error("Bob's download was not interrupted");
    if (b.wire > cipherBytes + MB) throw new Error(`Bob received ${b.wire} bytes for ${cipherBytes}`);
  }
  const bobGot = await savedHashes(bob, name);
  if (bobGot.size !== size || bobGot.hashes.join() !== plain.join()) throw new Error("Bob's file differs");

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

  // Alice leaves; Carol still gets the file.
  await alice.page.click("#leave-button");
  await until(20000, "Carol sees Alice leave", async () => (await state(carol)).people.length === people.length - 2);
  const carolPhase = phase();
  const stopSamplingCarol = sampleMemory();
  const c = await download(carol, name, 900000, 0);
  stopSamplingCarol();
  report.carol = { mbps: mbps(size, c.ms), ms: Math.round(c.ms), after_sender_left: true, ...carolPhase() };
  // While files move (not while this script checks them).
  report.memory = memory;
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

  // Bob closes his browser in the middle of an upload Carol is downloading:
  // her download ends with a clear error within the server's stall bound
  // (--stall-s, files.stall_s of the server) plus one retry.
  const stallS = Number(a["stall-s"] || 30);
  await makeFile(bob, 150 * MB, "abandoned.bin");
  await pickFile(bob);
  await until(30000, "Carol is offered abandoned.bin", async () => (await transfer(carol, "abandoned.bin"))?.state === "offered");
  await carol.page.click(`.file[data-state="offered"] button.fetch`);
  await bob.context.close();
  people.splice(people.indexOf(bob), 1);
  const closed = Date.now();
  const abandoned = await finished(carol, "abandoned.bin", (stallS + 30) * 1000);
  const waited = Date.now() - closed;
  report.abandoned = { error: abandoned.error, done: abandoned.done, ms_after_sender_closed: waited };
  if (abandoned.ok || !/The sender stopped sending: upload stalled/.test(abandoned.error ?? "")) throw new Error(`abandoned upload: ${JSON.stringify(abandoned)}`);
  if (abandoned.done >= 150 * MB) throw new Error("the abandoned upload was complete");
  // The stall bound, one retry after 0.5 s, the page's 250 ms polling, and slack for a busy machine.
  if (waited > (stallS + 5) * 1000) throw new Error(`Carol waited ${waited} ms for an abandoned upload (bound ${stallS} s)`);
}

try {
  await scenario();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
for (const p of people) await p.context.close().catch(() => {});
rmSync(profiles, { force: true, recursive: true });
for (const f of cleanup) {
  try {
    f();
  } catch {
    // best effort
  }
}
finish(report, people);
