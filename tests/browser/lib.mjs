// Shared helpers for the browser tests: Chromium and Firefox with fake
// devices, pages that join through links, bounded waiting.
import { chromium } from "playwright-core";

/** Flags for Debian's Chromium in a headless, loopback-only test. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
  "--allow-loopback-in-peer-connection",
  "--autoplay-policy=no-user-gesture-required",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/**
 * Preferences for Debian's Firefox ESR in a headless, loopback-only call.
 * Camera and microphone are allowed by default permission rather than with
 * media.navigator.permission.disabled: without a permission Firefox gathers
 * ICE candidates on the default route only, never on 127.0.0.1.
 */
export const FIREFOX_PREFS = {
  "media.navigator.streams.fake": true,
  "permissions.default.camera": 1,
  "permissions.default.microphone": 1,
  "media.peerconnection.ice.loopback": true,
  "media.peerconnection.ice.obfuscate_host_addresses": false,
  "media.autoplay.default": 0,
};

/** Parses `--key value` arguments. */
export function args() {
  const out = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) out[a[i].replace(/^--/, "")] = a[i + 1];
  return out;
}

/** Starts Chromium. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: CHROMIUM_ARGS,
    timeout: 30000,
  });
}

/** Starts Firefox ESR over WebDriver BiDi (puppeteer-core, loaded only by Firefox tests). */
export async function launchFirefox() {
  const { default: puppeteer } = await import("puppeteer-core");
  return puppeteer.launch({
    browser: "firefox",
    executablePath: process.env.FIREFOX || "/usr/bin/firefox-esr",
    headless: true,
    extraPrefsFirefox: FIREFOX_PREFS,
    timeout: 60000,
  });
}

/** A Firefox participant, joined through a link (same shape as `join`). */
export async function joinFirefox(browser, base, room, name, extra = "") {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  const log = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warn" || m.type() === "warning") log.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => log.push(`[${name}] pageerror: ${e.message}`));
  const url = `${base}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}&autojoin=1${extra}`;
  await page.goto(url);
  return { name, page, context, log };
}

/** A participant: its own browser context (storage), joined through a link. */
export async function join(browser, base, room, name, extra = "") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const log = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") log.push(`[${name}] ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => log.push(`[${name}] pageerror: ${e.message}`));
  const url = `${base}/?room=${encodeURIComponent(room)}&name=${encodeURIComponent(name)}&autojoin=1${extra}`;
  await page.goto(url);
  return { name, page, context, log };
}

/** Polls `check` (async, returns truthy when done) every 250 ms for at most `ms`. */
export async function until(ms, what, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export const state = (p) => p.page.evaluate(() => window.sfu.state());
export const stats = (p) => p.page.evaluate(() => window.sfu.stats());

/** `p`'s stats for the participant named `name`. */
export async function peerStats(p, name) {
  const s = await stats(p);
  return Object.values(s?.peers ?? {}).find((x) => x.name === name) ?? null;
}

/** Frames decoded and frame width of `name`'s camera at `p`. */
export async function camera(p, name) {
  const v = (await peerStats(p, name))?.video;
  return { frames: v?.framesDecoded ?? 0, width: v?.frameWidth ?? 0 };
}

/** Sets the inline style of `p`'s remote video elements (tile size, hiding). */
export const styleRemote = (p, style) =>
  p.page.evaluate((st) => {
    for (const v of document.querySelectorAll(".tile:not(.self) video")) v.style.cssText = st;
  }, style);

/** Waits until each participant decodes >= `frames` video frames and hears audio of every other. */
export async function allDecoding(ps, frames, ms) {
  return until(ms, `every participant decoding ${frames} frames of every other`, async () => {
    const out = {};
    for (const p of ps) {
      for (const q of ps) {
        if (p === q) continue;
        const s = await peerStats(p, q.name);
        const ok =
          s?.video?.framesDecoded >= frames &&
          s?.audio?.packetsReceived > 0 &&
          s?.audio?.totalAudioEnergy > 0 &&
          s?.e2ee?.decrypted > 0;
        if (!ok) return false;
        out[`${p.name}<-${q.name}`] = { frames: s.video.framesDecoded, audioEnergy: s.audio.totalAudioEnergy, kid: s.e2ee.kid };
      }
    }
    return out;
  });
}

/** Prints the report line the Rust test reads and exits. */
export function finish(report, participants = []) {
  if (!report.ok) for (const p of participants) for (const l of p.log.slice(-20)) console.error(l);
  console.log(JSON.stringify(report));
  process.exit(report.ok ? 0 : 1);
}
