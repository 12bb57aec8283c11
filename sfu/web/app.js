// The web client: join screen, session lifecycle with automatic reconnect,
// and the wiring between signaling, media, E2EE, chat, files and the UI.
import { TileWatcher } from "./adaptive.js";
import { Call } from "./call.js";
import { Chat } from "./chat.js";
import { KeyManager } from "./e2ee/keys.js";
import { E2eeTransforms, transformMode } from "./e2ee/transform.js";
import { Files } from "./files.js";
import { LocalMedia } from "./media.js";
import { FATAL, Signaling } from "./signaling.js";
import * as ui from "./ui.js";

const { $ } = ui;
const params = new URLSearchParams(location.search);
const opts = {
  room: params.get("room") || "",
  name: params.get("name") || localStorage.getItem("sfu-name") || "",
  autojoin: params.get("autojoin") === "1",
  token: params.get("token") || "",
  // iceTransportPolicy "relay": only TURN candidates (networks that block UDP to the SFU; tests).
  relayOnly: params.get("ice") === "relay",
  codec: params.get("codec") === "vp9" ? "vp9" : "vp8",
  // Test switch: discard every key received, so media arrives but cannot be decrypted.
  noKeys: params.get("e2ee_test_nokeys") === "1",
  // Force the older createEncodedStreams API where both exist (tests).
  api: params.get("e2ee_api") === "streams" ? "streams" : null,
  // Test hook: a tone instead of the microphone, its gain set by window.sfu.setToneGain.
  testTone: params.get("test_tone") === "1",
};
const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
const media = new LocalMedia();
media.testTone = opts.testTone;
let session = null; // the live session, see connect()
document.addEventListener("visibilitychange", () => session?.tiles?.refresh());
let leaving = false;
let attempt = 0; // reconnect attempts since the last good connection
let retryTimer = null;
let connecting = false; // a connect() is under way
const serverErrors = []; // {code, message} of every error the server sent (window.sfu, tests)

function identity() {
  let id = sessionStorage.getItem("sfu-identity");
  if (!id) {
    id = "u-" + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("sfu-identity", id);
  }
  return id;
}

async function fetchToken() {
  if (opts.token) return opts.token;
  const q = new URLSearchParams({ room: opts.room, identity: identity(), name: opts.name });
  const r = await fetch(`/dev/token?${q}`);
  if (r.status === 404) throw new Error("This server needs an invitation link with a token (&token=...).");
  if (!r.ok) throw new Error(`token request failed: ${r.status}`);
  return (await r.text()).trim();
}

// ---------------------------------------------------------------- join screen

async function refreshDevices() {
  const d = await media.devices();
  for (const [kind, ids] of [["video", ["cam-select", "cam-select-call"]], ["audio", ["mic-select", "mic-select-call"]]]) {
    const chosen = (kind === "video" ? media.video : media.audio)?.getSettings().deviceId;
    for (const id of ids) ui.fillDevices($(id), d[kind], chosen);
  }
}

function updateSelf() {
  $("preview").srcObject = media.video ? new MediaStream([media.video]) : null;
  $("mic-button").setAttribute("aria-pressed", String(media.micMuted));
  $("mic-button").textContent = media.micMuted ? "Unmute" : "Mute";
  $("cam-button").setAttribute("aria-pressed", String(media.camOff));
  $("cam-button").textContent = media.camOff ? "Start video" : "Stop video";
  $("screen-button").setAttribute("aria-pressed", String(!!media.screen));
  $("screen-button").textContent = media.screen ? "Stop sharing" : "Share screen";
  $("screen-switch").hidden = !media.screen;
  if (!$("call").hidden) {
    // The self view stays through reconnects, so it has a fixed id.
    const el = ui.tile("self", { name: opts.name, self: true });
    ui.setTileTrack(el, "video", media.video);
    el.classList.toggle("mic-muted", media.micMuted || !media.audio);
    if (media.screen) ui.setTileTrack(ui.tile("self", { name: opts.name, self: true, screen: "self" }), "video", media.screen);
    else ui.removeScreenTile("self");
  }
}

async function chooseDevice(kind, deviceId) {
  try {
    const track = await media.choose(kind, deviceId);
    if (session && track) await session.call.setTrack(kind, track);
  } catch (e) {
    ui.notice(`Cannot open that device: ${e.message}`);
  }
  updateSelf();
  refreshDevices();
}

function setupJoinScreen() {
  $("name").value = opts.name;
  $("room").value = opts.room || `room-${Math.random().toString(36).slice(2, 8)}`;
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    opts.name = $("name").value.trim();
    opts.room = $("room").value.trim();
    if (!opts.name || !opts.room) return;
    localStorage.setItem("sfu-name", opts.name);
    const url = new URL(location.href);
    url.searchParams.set("room", opts.room);
    url.searchParams.set("name", opts.name);
    history.replaceState(null, "", url);
    start();
  });
  for (const [sel, kind] of [["cam-select", "video"], ["mic-select", "audio"], ["cam-select-call", "video"], ["mic-select-call", "audio"]]) {
    $(sel).addEventListener("change", () => chooseDevice(kind, $(sel).value));
  }
  $("room").addEventListener("input", () => {
    $("share").textContent = `Invite: ${location.origin}/?room=${encodeURIComponent($("room").value.trim())}`;
  });
  $("room").dispatchEvent(new Event("input"));
}

// -------------------------------------------------------------------- session

async function start() {
  if (!transformMode()) {
    $("join-error").textContent = "This browser cannot encrypt calls end to end (no encoded transforms). Use a current Chromium, Chrome, Edge, Firefox or Safari.";
    ui.show("join");
    return;
  }
  leaving = false;
  $("room-name").textContent = opts.room;
  document.title = `${opts.room} · Private call`;
  ui.show("call");
  if (!media.audio && !media.video) await media.open();
  refreshDevices().catch(() => {});
  connect();
}

async function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  if (connecting || leaving) return;
  connecting = true;
  try {
    await openSession();
  } finally {
    connecting = false;
  }
}

/** What to tell the user when the server ends the session for good. */
const FATAL_TEXT = {
  bad_token: "This link's token is not valid on this server.",
  token_expired: "This link has expired: ask for a new one.",
  replaced: "This call was opened again elsewhere (another tab or device).",
};

async function openSession() {
  ui.setStatus(attempt ? "reconnecting" : "connecting", attempt ? "Reconnecting…" : "Connecting…");
  const e2ee = new E2eeTransforms(opts.api);
  const sig = new Signaling(wsUrl);
  let joined;
  let token;
  try {
    token = await fetchToken();
    joined = await sig.join(token);
  } catch (err) {
    e2ee.worker.terminate();
    if (sig.fatal && FATAL.has(sig.fatal)) return fatal(FATAL_TEXT[sig.fatal] ?? err.message);
    if (err.message.includes("invitation link")) return fatal(err.message);
    return retry();
  }
  const selfId = joined.participant.id;
  const keys = new KeyManager({ send: (to, p) => sig.relay(to, p), worker: e2ee.worker, dropKeys: opts.noKeys });
  const call = new Call({
    signaling: sig,
    e2ee,
    iceServers: joined.ice_servers,
    iceTransportPolicy: opts.relayOnly ? "relay" : "all",
    codec: opts.codec,
    selfId,
    sourceOf: (trackId) => sourceOf(s, trackId),
  });
  const s = (session = {
    sig,
    e2ee,
    keys,
    call,
    selfId,
    chat: new Chat({ keys, signaling: sig, selfId }),
    files: new Files({ keys, signaling: sig, selfId, token }),
    people: new Map(), // id -> {name, identity, tracks: Map(trackId -> {kind, source, muted})}
    speakers: { list: [], at: 0 }, // the last active_speakers and when it came (Date.now())
    chain: Promise.resolve(),
    inbox: new Map(), // sender -> promise chain for chat/files
  });
  ui.clearTiles();
  updateSelf();
  for (const p of joined.participants) addPerson(p);
  refreshRecipients();

  s.chat.addEventListener("message", (e) => ui.chatMessage({ ...e.detail, name: nameOf(e.detail.from) }));
  for (const ev of ["offer", "progress", "done"]) {
    // The name is kept: the sender may have left by the time the file is done.
    s.files.addEventListener(ev, (e) =>
      ui.fileEntry(e.detail, (e.detail.senderName ??= nameOf(e.detail.from)), (id) => s.files.download(id)),
    );
  }
  s.files.addEventListener("error", (e) => ui.notice(e.detail.message));
  keys.addEventListener("change", refreshE2ee);
  const tiles = new TileWatcher((settings) => call.trackSettings(settings));
  s.tiles = tiles;
  call.addEventListener("track", (e) => onTrack(e.detail, tiles));
  call.addEventListener("untrack", (e) => {
    if (e.detail.source === "screen") return ui.removeScreenTile(e.detail.trackId);
    const el = ui.tile(e.detail.participantId, { name: nameOf(e.detail.participantId) });
    if (e.detail.kind === "video") tiles.unwatch(el.querySelector("video"));
    ui.setTileTrack(el, e.detail.kind, null);
  });
  call.addEventListener("published", (e) => {
    if (e.detail.kind === "audio" && media.micMuted) call.mute("audio", true);
    if (e.detail.kind === "video" && media.camOff) call.mute("video", true);
  });
  call.addEventListener("state", () => {
    if (session !== s) return;
    if (call.state === "connected") {
      attempt = 0;
      ui.setStatus("connected", "Connected");
    }
  });
  call.addEventListener("failed", () => sig.drop());
  sig.addEventListener("message", (e) => {
    // Speaker changes are shown at once, never queued behind key work.
    if (e.detail.type === "active_speakers") return showSpeakers(s, e.detail.speakers);
    // Key messages are handled strictly in order; chat and files per sender,
    // so waiting for a key never holds up the key that would unblock it.
    s.chain = s.chain.then(() => onMessage(s, e.detail)).catch((err) => console.warn("message:", err));
  });
  sig.addEventListener("close", (e) => {
    if (session !== s) return;
    teardown();
    if (leaving) return;
    if (e.detail.fatal) {
      return fatal(FATAL_TEXT[e.detail.fatal] ?? `The server refused the session (${e.detail.fatal}).`);
    }
    retry();
  });

  s.chain = s.chain.then(() => keys.start(selfId));
  ui.setStatus("connecting", "Connecting media…");
  if (media.audio || media.video || media.screen) await call.publish({ audio: media.audio, video: media.video, screen: media.screen });
  else ui.setStatus("connected", "Connected (no camera or microphone)");
}

function retry() {
  const delay = Math.min(10000, 500 * 2 ** attempt) * (0.75 + Math.random() / 2);
  attempt++;
  ui.setStatus("reconnecting", "Connection lost, reconnecting…");
  retryTimer = setTimeout(connect, delay);
}

function fatal(message) {
  ui.setStatus("failed", "Disconnected");
  ui.notice(message);
}

function teardown() {
  const s = session;
  if (!s) return;
  session = null;
  s.call.close();
  s.e2ee.worker.terminate();
  ui.clearTiles();
  updateSelf();
  ui.setE2ee("warn", "Keys are exchanged again after reconnecting");
  ui.setSafetyNumber("");
}

function nameOf(id) {
  if (id === "self" || (session && id === session.selfId)) return opts.name;
  const p = session?.people.get(id);
  return p ? p.name || p.identity : "Someone";
}

function addPerson(p) {
  const s = session;
  const tracks = new Map((p.tracks || []).map((t) => [t.id, { kind: t.kind, source: t.source, muted: t.muted }]));
  s.people.set(p.id, { name: p.name, identity: p.identity, tracks });
  ui.tile(p.id, { name: p.name || p.identity });
  refreshTile(p.id);
}

/** Who files go to: participant id -> false when unticked (everyone by default). */
const fileTo = new Map();

function refreshRecipients() {
  const people = [...(session?.people.keys() ?? [])].map((id) => ({ id, name: nameOf(id) }));
  ui.fileRecipients(people, fileTo, (id, on) => {
    fileTo.set(id, on);
    refreshRecipients();
  });
}

function refreshTile(id) {
  const p = session?.people.get(id);
  if (!p) return;
  const el = ui.tile(id, { name: p.name || p.identity });
  const audio = [...p.tracks.values()].find((t) => t.kind === "audio");
  const video = [...p.tracks.values()].find((t) => t.kind === "video" && t.source !== "screen");
  el.classList.toggle("mic-muted", !audio || audio.muted);
  el.classList.toggle("video-muted", !video || video.muted);
}

/** The `source` label ("camera", "screen", ...) of a remote track, from track_published or joined. */
function sourceOf(s, trackId) {
  for (const p of s.people.values()) {
    const t = p.tracks.get(trackId);
    if (t) return t.source;
  }
  return undefined;
}

async function onTrack({ participantId, kind, source, trackId, track }, tiles) {
  const screen = source === "screen" ? trackId : null;
  const el = ui.tile(participantId, { name: nameOf(participantId), screen });
  if (kind === "video") tiles.watch(el.querySelector("video"), trackId);
  try {
    await ui.setTileTrack(el, kind, track);
  } catch (e) {
    if (kind === "audio" && e.name === "NotAllowedError") $("unblock-audio").hidden = false;
  }
}

function showSpeakers(s, speakers) {
  if (session !== s) return;
  s.speakers = { list: speakers, at: Date.now() };
  ui.setActiveSpeakers(speakers.map((x) => (x.participant_id === s.selfId ? "self" : x.participant_id)));
}

async function onMessage(s, m) {
  if (session !== s) return;
  if (s.call.handle(m)) return;
  switch (m.type) {
    case "participant_joined":
      addPerson(m.participant);
      s.keys.peerJoined(m.participant.id);
      refreshRecipients();
      refreshE2ee();
      break;
    case "participant_left":
      s.people.delete(m.participant_id);
      ui.removeTile(m.participant_id);
      fileTo.delete(m.participant_id);
      refreshRecipients();
      await s.keys.peerLeft(m.participant_id);
      break;
    case "track_published": {
      const p = s.people.get(m.track.participant_id);
      p?.tracks.set(m.track.id, { kind: m.track.kind, source: m.track.source, muted: m.track.muted });
      refreshTile(m.track.participant_id);
      break;
    }
    case "track_unpublished":
      s.people.get(m.participant_id)?.tracks.delete(m.track_id);
      ui.removeScreenTile(m.track_id);
      refreshTile(m.participant_id);
      break;
    case "track_layer": {
      // The layer the SFU sends us of a track; say so when our downlink,
      // not the tile, holds it back.
      for (const [id, p] of s.people) {
        const t = p.tracks.get(m.track_id);
        if (!t) continue;
        t.layer = { layer: m.layer, temporal: m.temporal, limited: m.limited };
        const el = document.querySelector(t.source === "screen" ? `.tile[data-screen="${CSS.escape(m.track_id)}"]` : `.tile[data-participant-id="${CSS.escape(id)}"]`);
        if (el) ui.setTileLimited(el, m.limited, m.layer === null);
      }
      break;
    }
    case "track_muted": {
      const t = s.people.get(m.participant_id)?.tracks.get(m.track_id);
      if (t) t.muted = m.muted;
      refreshTile(m.participant_id);
      break;
    }
    case "relay": {
      const p = m.payload;
      if (!p || typeof p !== "object" || typeof p.kind !== "string") return;
      if (p.kind.startsWith("e2ee-")) return s.keys.handle(m.from, p);
      const handler = p.kind === "chat" ? s.chat : p.kind.startsWith("file-") ? s.files : null;
      if (!handler) return;
      const prev = s.inbox.get(m.from) ?? Promise.resolve();
      s.inbox.set(m.from, prev.then(() => handler.receive(m.from, p)).catch((err) => console.warn(`${p.kind} from ${m.from}:`, err)));
      break;
    }
    case "error":
      serverErrors.push({ code: m.code, message: m.message });
      if (m.code === "rate_limited" || m.code === "message_too_large") ui.notice(`Server: ${m.message}`);
      console.warn("server error", m);
      break;
  }
}

// ------------------------------------------------------------ E2EE indicators

async function refreshE2ee() {
  const s = session;
  if (!s) return;
  const peers = new Map(s.keys.peerState().map((p) => [p.id, p.haveKey]));
  let waiting = 0;
  for (const id of s.people.keys()) {
    const have = peers.get(id) === true;
    if (!have) waiting++;
    const sel = `.tile[data-participant-id="${CSS.escape(id)}"] .lock, .tile[data-owner="${CSS.escape(id)}"] .lock`;
    for (const lock of document.querySelectorAll(sel)) {
      lock.dataset.state = have ? "ok" : "waiting";
      lock.title = have ? "End-to-end encrypted" : "Waiting for this participant's key";
    }
  }
  if (s.keys.kid === null) ui.setE2ee("warn", "Setting up encryption…");
  else if (waiting) ui.setE2ee("warn", `Exchanging keys (${waiting} waiting)…`);
  else ui.setE2ee("on", "End-to-end encrypted");
  ui.setSafetyNumber(await s.keys.safetyNumber());
}

// Speaking indicators from RTP audio levels (remote) and the local sender.
setInterval(async () => {
  const s = session;
  if (!s) return;
  const levels = s.call.levels();
  for (const id of s.people.keys()) {
    document.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`)?.classList.toggle("speaking", (levels[id] ?? 0) > 0.05);
  }
  const sender = s.call.senders.audio?.sender;
  if (sender && !media.micMuted) {
    let level = 0;
    (await s.call.pub?.getStats(sender.track ?? null))?.forEach((r) => {
      if (r.type === "media-source" && r.kind === "audio") level = r.audioLevel ?? 0;
    });
    document.querySelector(".tile.self")?.classList.toggle("speaking", level > 0.05);
  }
  refreshE2ee();
}, 400);

// ------------------------------------------------------------------ controls

$("mic-button").addEventListener("click", () => {
  media.setMicMuted(!media.micMuted);
  session?.call.mute("audio", media.micMuted);
  updateSelf();
});
$("cam-button").addEventListener("click", async () => {
  try {
    const track = await media.setCamOff(!media.camOff);
    await session?.call.setTrack("video", track);
    session?.call.mute("video", media.camOff);
  } catch (e) {
    ui.notice(`Camera: ${e.message}`);
  }
  updateSelf();
});
/** Shares a screen, window or tab (the browser asks which), or shares another one. */
async function shareScreen() {
  try {
    const track = await media.shareScreen();
    await session?.call.shareScreen(track);
  } catch (e) {
    if (e.name !== "NotAllowedError") ui.notice(`Screen sharing: ${e.message}`); // NotAllowed: the user cancelled
  }
  updateSelf();
}

function stopScreen() {
  media.stopScreen();
  session?.call.stopScreen();
  updateSelf();
}

$("screen-button").addEventListener("click", () => (media.screen ? stopScreen() : shareScreen()));
$("screen-switch").addEventListener("click", shareScreen);
// The browser's own "Stop sharing" control ends the track.
media.addEventListener("screenended", () => {
  session?.call.stopScreen();
  updateSelf();
});
$("leave-button").addEventListener("click", leave);
$("rejoin").addEventListener("click", start);
$("copy-link").addEventListener("click", async () => {
  const link = `${location.origin}/?room=${encodeURIComponent(opts.room)}`;
  try {
    await navigator.clipboard.writeText(link);
    ui.notice("Link copied");
  } catch {
    ui.notice(link);
  }
  setTimeout(() => ui.notice(""), 3000);
});
$("unblock-audio").addEventListener("click", () => {
  document.querySelectorAll(".tile audio").forEach((a) => a.play().catch(() => {}));
  $("unblock-audio").hidden = true;
});
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-input").value;
  $("chat-input").value = "";
  session?.chat.send(text);
});
$("file-input").addEventListener("change", () => {
  const s = session;
  const to = [...(s?.people.keys() ?? [])].filter((id) => fileTo.get(id) !== false);
  for (const f of $("file-input").files) s?.files.send(f, to);
  $("file-input").value = "";
});
media.addEventListener("change", updateSelf);
media.addEventListener("error", (e) => ui.notice(`No ${e.detail.kind === "audio" ? "microphone" : "camera"}: ${e.detail.message}`));
navigator.mediaDevices?.addEventListener("devicechange", refreshDevices);
window.addEventListener("online", () => {
  if (!session && retryTimer) connect();
});
window.addEventListener("pagehide", () => session?.sig.leave());

function leave() {
  leaving = true;
  clearTimeout(retryTimer);
  session?.sig.leave();
  teardown();
  media.close();
  ui.setStatus("idle", "Not connected");
  ui.show("left");
}

// ----------------------------------------------------- inspection (tests, support)

/** Read-only state for tests and troubleshooting (window.sfu in the console). */
window.sfu = {
  state() {
    const s = session;
    return {
      selfId: s?.selfId ?? null,
      status: $("status").dataset.state,
      e2ee: $("e2ee-badge").dataset.state,
      safetyNumber: $("safety-number").textContent,
      kid: s?.keys.kid ?? null,
      people: s ? [...s.people].map(([id, p]) => ({ id, name: p.name })) : [],
      transform: s?.e2ee.mode ?? transformMode(),
      sharingScreen: !!media.screen,
      serverErrors: [...serverErrors],
      activeSpeakers: s?.speakers.list ?? [],
      activeSpeakersAt: s?.speakers.at ?? 0,
      // track_layer per track id: {layer, limited}
      layers: Object.fromEntries(s ? [...s.people.values()].flatMap((p) => [...p.tracks].filter(([, t]) => t.layer).map(([id, t]) => [id, t.layer])) : []),
    };
  },
  /** Test hook (with ?test_tone=1): how loud this participant is, 0 to 1. */
  setToneGain(gain) {
    media.setToneGain(gain);
  },
  /** Our camera's simulcast layers as sent (dynacast): [{rid, active, bytesSent}]. */
  async publishedLayers() {
    return (await session?.call.publishedLayers()) ?? [];
  },
  async stats() {
    const s = session;
    if (!s) return null;
    const [rtp, worker] = await Promise.all([s.call.stats(), s.e2ee.stats()]);
    const out = { self: { encrypted: worker.encrypted, sendKid: worker.sendKid }, peers: {} };
    for (const id of s.people.keys()) {
      out.peers[id] = { name: nameOf(id), ...rtp[id], e2ee: worker.senders[id] ?? null };
    }
    return out;
  },
  /** Candidate types of the selected ICE pairs: {pub, sub} ("host", "relay", ...). */
  async iceRoutes() {
    const route = async (pc) => {
      if (!pc) return null;
      const r = await pc.getStats();
      for (const s of r.values()) {
        if (s.type === "transport" && s.selectedCandidatePairId) {
          const pair = r.get(s.selectedCandidatePairId);
          return r.get(pair?.localCandidateId)?.candidateType ?? null;
        }
      }
      return null;
    };
    return { pub: await route(session?.call.pub), sub: await route(session?.call.sub) };
  },
  /** File transfers of this session: [{id, name, size, done, state, ok, error, resumes, wire, ms, ...}]. */
  transfers() {
    return session?.files.list() ?? [];
  },
  /** Ends the running file uploads and downloads as a network failure would (they resume); returns how many. */
  dropFileTransfers() {
    return session?.files.drop() ?? 0;
  },
  /** Drops the WebSocket as a network failure would. */
  dropConnection() {
    session?.sig.drop();
  },
  leave,
};

// ------------------------------------------------------------------ start

setupJoinScreen();
Files.cleanUp().catch(() => {});
if (opts.autojoin && opts.room && opts.name) {
  start();
} else {
  ui.show("join");
  media.open().then(refreshDevices).catch(() => {});
}
