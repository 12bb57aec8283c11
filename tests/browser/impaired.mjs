// Adaptive media on impaired links (started by sfu/tests/impaired.rs, which
// builds the network namespaces and runs this script in the publisher's).
// Usage:
//   node impaired.mjs --base http://198.18.0.1:7880 --capped WRAPPER --lossy WRAPPER --lift SCRIPT --uplink-loss SCRIPT
// Alice publishes her camera in simulcast from this namespace. Three
// subscribers without camera or microphone watch her: Bob beside her
// (unconstrained), Carol behind a rate cap (Chromium started by the `--capped`
// wrapper in her namespace), Dave behind random loss (`--lossy`). Checks:
// Bob receives the full camera size; Carol a lower layer without freezes,
// then the full size soon after `--lift` removes her cap; Dave decodes at
// least 95 % of the frames Alice sends on the layer he receives (over 30 s); then
// `--uplink-loss` makes Alice's uplink drop 5 % at the SFU, and Bob still
// decodes at least 90 % of her frames (NACK to her, RTX back).
// Prints one JSON line: {"ok": true|false, ...}.
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";
import { CHROMIUM_ARGS, args, finish, join, peerStats, state, until } from "./lib.mjs";

const a = args();
const base = a.base;
const room = `impaired-${Date.now().toString(36)}`;
const report = { ok: false };
const people = [];
const browsers = [];
const started = Date.now();
// Pages come from 198.18.0.1, not localhost: declare the origin secure so
// that WebCrypto and WebRTC's encoded transforms are available.
const secure = `--unsafely-treat-insecure-origin-as-secure=${base}`;
const NO_DEVICES = CHROMIUM_ARGS.filter((f) => !f.startsWith("--use-fake-"));

async function browser(executablePath, withDevices) {
  const b = await chromium.launch({
    executablePath,
    args: [...(withDevices ? CHROMIUM_ARGS : NO_DEVICES), secure],
    timeout: 30000,
  });
  browsers.push(b);
  return b;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The subscriber's view of Alice's camera: decoded frames and frame width. */
async function camera(p) {
  const v = (await peerStats(p, "Alice"))?.video;
  const { packetsReceived, packetsLost, retransmitted, nacks, framesDropped, freezes, plis } = v ?? {};
  return { frames: v?.framesDecoded ?? 0, width: v?.frameWidth ?? 0, packetsReceived, packetsLost, retransmitted, nacks, framesDropped, freezes, plis };
}

/** Alice's frames sent per layer (rid -> {frames, width, bytes, nacks, retransmitted}). */
async function sent(alice) {
  const layers = await alice.page.evaluate(() => window.sfu.publishedLayers());
  return Object.fromEntries(
    layers.map((l) => [l.rid, { frames: l.framesSent, width: l.frameWidth, bytes: l.bytesSent, nacks: l.nacksReceived, retransmitted: l.retransmitted, plis: l.plisReceived }]),
  );
}

const metric = async (name) => {
  const text = await (await fetch(`${base}/metrics`)).text();
  return [...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)`, "gm"))].map((m) => `${m[1] ?? ""} ${m[2]}`).join(", ");
};

async function scenario() {
  await until(20000, "the SFU answers in its namespace", async () => (await fetch(`${base}/metrics`)).ok);
  const here = await browser(process.env.CHROMIUM || "/usr/bin/chromium", true);
  const alice = await join(here, base, room, "Alice");
  people.push(alice);
  const watchers = await browser(process.env.CHROMIUM || "/usr/bin/chromium", false);
  const bob = await join(watchers, base, room, "Bob");
  const carol = await join(await browser(a.capped, false), base, room, "Carol");
  const dave = await join(await browser(a.lossy, false), base, room, "Dave");
  people.push(bob, carol, dave);
  for (const p of [bob, carol, dave]) {
    await until(60000, `${p.name} decodes Alice`, async () => (await camera(p)).frames >= 30);
  }
  report.decoding_ms = Date.now() - started;
  const full = await alice.page.evaluate(() => document.getElementById("preview").videoWidth);
  report.camera_width = full;

  report.unconstrained = await until(20000, "Bob receives the full size", async () => {
    const c = await camera(bob);
    return c.width === full ? c : false;
  });
  // The cap must sit below Alice's top layer for a lower one to be right:
  // her encoder ramps up over the first seconds.
  report.top_layer_kbps = await until(40000, "Alice's top layer above 300 kbit/s", async () => {
    const a0 = await sent(alice);
    await sleep(1000);
    const a1 = await sent(alice);
    const top = Object.values(a1).sort((x, y) => y.width - x.width)[0];
    const before = Object.values(a0).find((x) => x.width === top?.width);
    const kbps = top && before ? Math.round(((top.bytes - before.bytes) * 8) / 1000) : 0;
    if (kbps < 300) throw new Error(`${kbps} kbit/s`);
    return kbps;
  });
  report.capped = await until(30000, "Carol settles on a lower layer", async () => {
    const c = await camera(carol);
    if (!(c.width > 0 && c.width < full)) throw new Error(`Carol at ${JSON.stringify(c)}; ${await metric("sfu_layer_changes_total")}`);
    return c;
  });

  // Carol's page says her downlink holds Alice's video back; Bob's does not.
  const told = async (p) => {
    const st = await state(p);
    const badge = await p.page.evaluate(() => document.querySelector(".tile.limited .bandwidth")?.textContent ?? null);
    return { layers: Object.values(st.layers), badge };
  };
  report.capped.told = await until(10000, "Carol is told her video is limited by bandwidth", async () => {
    const t = await told(carol);
    return t.layers.some((l) => l.limited && l.layer) && t.badge === "low bandwidth" ? t : false;
  });
  report.unconstrained.told = await until(10000, "Bob is not told he is limited", async () => {
    const t = await told(bob);
    return t.badge === null && t.layers.length > 0 && t.layers.every((l) => !l.limited && l.layer === "f") ? t : false;
  });

  // Fifteen seconds watched: Carol's longest stall; Dave's decoded share
  // counts from here too.
  const window = 15000;
  const step = 100;
  let last = await camera(carol);
  let lastAt = Date.now();
  let stall = 0;
  let samples = 0;
  let atFull = 0; // samples at the full size (an upward probe that failed)
  const dave0 = await camera(dave);
  const sent0 = await sent(alice);
  const t0 = Date.now();
  for (let i = 0; i < window / step && Date.now() - t0 < window * 2; i++) {
    await sleep(step);
    const c = await camera(carol);
    const now = Date.now();
    if (c.frames > last.frames) {
      stall = Math.max(stall, now - lastAt);
      lastAt = now;
      last = c;
    }
    samples += 1;
    if (c.width === full) atFull += 1;
  }
  stall = Math.max(stall, Date.now() - lastAt);
  const sent1 = await sent(alice);
  const elapsed = Date.now() - t0;
  report.layers_kbps = Object.fromEntries(
    Object.entries(sent1).map(([rid, s]) => [rid, Math.round(((s.bytes - (sent0[rid]?.bytes ?? 0)) * 8) / elapsed)]),
  );
  report.capped.longest_stall_ms = stall;
  report.capped.full_share = samples ? atFull / samples : 1;
  report.capped.frames_in_window = last.frames - report.capped.frames;
  // The cap goes: Carol climbs to the full size.
  execFileSync(a.lift, { stdio: "inherit" });
  const lifted = Date.now();
  report.climb = await until(45000, "Carol climbs to the full size once the cap is lifted", async () => {
    const c = await camera(carol);
    if (c.width !== full) throw new Error(`Carol at ${JSON.stringify(c)}`);
    return c;
  });
  report.climb.ms = Date.now() - lifted;
  report.climb.told = await until(10000, "Carol's badge goes once she gets the full size", async () => {
    const t = await told(carol);
    return t.badge === null && t.layers.every((l) => !l.limited) ? t : false;
  });

  // Dave's share over 30 s (from the start of Carol's window; one freeze of
  // a dozen frames would be 4 % of 15 s): frames decoded / frames Alice sent
  // (every layer carries every frame; the layer sending the most counts, so
  // a switch between layers in the window cannot flatter him).
  await sleep(Math.max(0, t0 + 2 * window - Date.now()));
  const dave1 = await camera(dave);
  const sentLossy = await sent(alice);
  const frames = Math.max(0, ...Object.entries(sentLossy).map(([rid, s]) => s.frames - (sent0[rid]?.frames ?? 0)));
  report.lossy = {
    ...dave1,
    decoded: dave1.frames - dave0.frames,
    sent: frames,
    seconds: (Date.now() - t0) / 1000,
    share: frames ? (dave1.frames - dave0.frames) / frames : 0,
  };

  // Alice's uplink loses 5 % of its UDP at the SFU: the SFU asks her for
  // what it misses (NACK), she resends it (RTX), and Bob, on an unimpaired
  // downlink, still decodes at least 90 % of her frames (sfu/tests/impaired.rs).
  execFileSync(a["uplink-loss"], { stdio: "inherit" });
  await sleep(1000);
  const up0 = await sent(alice);
  const bob0 = await camera(bob);
  await sleep(10000);
  const up1 = await sent(alice);
  const bob1 = await camera(bob);
  const top = Object.entries(up1).sort(([, x], [, y]) => y.width - x.width)[0];
  const delta = (k) => (top ? top[1][k] - (up0[top[0]]?.[k] ?? 0) : 0);
  // Frames sent on the layers Bob was given at the start and at the end
  // (layers may send at different frame rates when Alice's uplink
  // estimate falls): the fewer of the two.
  const framesAt = (width) => {
    const e = Object.entries(up1).find(([, l]) => l.width === width);
    return e ? e[1].frames - (up0[e[0]]?.frames ?? 0) : 0;
  };
  report.uplink_loss = {
    layer: top?.[0],
    sent_by_layer: Object.fromEntries(Object.entries(up1).map(([rid, l]) => [rid, l.frames - (up0[rid]?.frames ?? 0)])),
    bob_widths: [bob0.width, bob1.width],
    sent: Math.min(framesAt(bob0.width), framesAt(bob1.width)) || delta("frames"),
    nacks_to_alice: delta("nacks"),
    resent_by_alice: delta("retransmitted"),
    decoded_by_bob: bob1.frames - bob0.frames,
    plis_to_alice: delta("plis"),
    bob: Object.fromEntries(["packetsLost", "nacks", "retransmitted", "framesDropped", "freezes", "plis"].map((k) => [k, (bob1[k] ?? 0) - (bob0[k] ?? 0)])),
  };
  report.uplink_loss.share = report.uplink_loss.sent ? report.uplink_loss.decoded_by_bob / report.uplink_loss.sent : 0;
  report.metrics = {
    layer_changes: await metric("sfu_layer_changes_total"),
    paused: await metric("sfu_paused_video_tracks"),
    estimates: Number((await metric("sfu_downlink_estimate_bps_count")).trim()),
  };
}

try {
  await scenario();
  report.ok = true;
} catch (e) {
  report.error = e.message;
}
report.wall_ms = Date.now() - started;
for (const b of browsers) await b.close().catch(() => {});
finish(report, people);
