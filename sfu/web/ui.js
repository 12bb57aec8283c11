// DOM rendering: the grid of participants, status badges, chat and files.
// No logic about calls or keys lives here.

const $ = (id) => document.getElementById(id);
export { $ };

/** Shows one of the three screens: "join", "call", "left". */
export function show(screen) {
  for (const id of ["join", "call", "left"]) $(id).hidden = id !== screen;
  // Connection and encryption state mean something only during a call.
  $("status").hidden = $("e2ee-badge").hidden = screen !== "call";
}

/** Sets the connection pill. */
export function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

/** Sets the encryption badge: "on", "warn" or "off". */
export function setE2ee(state, text) {
  $("e2ee-badge").dataset.state = state;
  $("e2ee-text").textContent = text;
}

/** Shows the safety number (empty hides it). */
export function setSafetyNumber(number) {
  $("safety").hidden = !number;
  $("safety-number").textContent = number;
}

/** A short notice over the grid (empty hides it). */
export function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function initials(name) {
  return (name || "?").trim().split(/\s+/).slice(0, 2).map((w) => w[0]?.toUpperCase() ?? "").join("") || "?";
}

/**
 * One participant's tile, or with `screen` (the track id of a shared screen)
 * the tile of that screen, beside the participant's own.
 */
export function tile(id, { name, self = false, screen = null }) {
  const selector = screen ? `.tile[data-screen="${CSS.escape(screen)}"]` : `.tile[data-participant-id="${CSS.escape(id)}"]`;
  let el = document.querySelector(selector);
  if (!el) {
    el = document.createElement("div");
    el.className = "tile no-video" + (self ? " self" : "") + (screen ? " screen" : "");
    if (screen) {
      el.dataset.screen = screen;
      el.dataset.owner = id;
    } else {
      el.dataset.participantId = id;
    }
    el.innerHTML =
      '<video autoplay playsinline muted></video><audio autoplay></audio><div class="avatar"></div>' +
      '<div class="label"><span class="lock" title="End-to-end encrypted"><svg class="icon" viewBox="0 0 16 16" aria-hidden="true"><path fill="currentColor" d="M4 7V5a4 4 0 0 1 8 0v2h1.5v8h-11V7H4zm2 0h4V5a2 2 0 0 0-4 0v2z"/></svg></span><span class="name"></span><span class="mic-off" title="Microphone off"><svg class="icon" viewBox="0 0 16 16" aria-hidden="true"><path fill="currentColor" d="M8 1a2.5 2.5 0 0 0-2.5 2.5v4a2.5 2.5 0 0 0 5 0v-4A2.5 2.5 0 0 0 8 1zM3.5 7h1a3.5 3.5 0 0 0 7 0h1a4.5 4.5 0 0 1-4 4.47V14h-1v-2.53A4.5 4.5 0 0 1 3.5 7z"/><path stroke="currentColor" stroke-width="1.5" d="M2 2l12 12"/></svg></span></div>';
    if (self) el.querySelector(".lock").remove();
    $("grid").append(el);
    layout();
  }
  const who = self ? `${name} (you)` : name;
  el.querySelector(".name").textContent = screen ? `${who} · screen` : who;
  el.querySelector(".avatar").textContent = initials(name);
  return el;
}

/**
 * Marks a remote tile whose video the SFU lowers or pauses for this
 * browser's downlink (`track_layer` with `limited`).
 */
export function setTileLimited(el, limited, paused) {
  el.classList.toggle("limited", limited);
  el.classList.toggle("paused", limited && paused);
  let badge = el.querySelector(".bandwidth");
  if (!limited) return badge?.remove();
  if (!badge) {
    badge = document.createElement("span");
    badge.className = "bandwidth";
    el.querySelector(".label").append(badge);
  }
  badge.textContent = paused ? "paused: low bandwidth" : "low bandwidth";
}

/** Removes a participant's tile and the tiles of the screens it shares. */
export function removeTile(id) {
  document.querySelectorAll(`.tile[data-participant-id="${CSS.escape(id)}"], .tile[data-owner="${CSS.escape(id)}"]`).forEach((el) => el.remove());
  layout();
}

/** Removes the tile of the shared screen with track id `screen`. */
export function removeScreenTile(screen) {
  document.querySelector(`.tile[data-screen="${CSS.escape(screen)}"]`)?.remove();
  layout();
}

/**
 * Marks the tiles of the active speakers (participant ids, the dominant
 * speaker first; "self" for this participant) and moves the dominant
 * speaker's tile to the front of the grid (the own tile keeps its place).
 */
export function setActiveSpeakers(ids) {
  for (const el of document.querySelectorAll(".tile[data-participant-id]")) {
    const i = ids.indexOf(el.dataset.participantId);
    el.classList.toggle("active-speaker", i >= 0);
    el.classList.toggle("dominant", i === 0);
  }
}

/** Removes every tile. */
export function clearTiles() {
  $("grid").replaceChildren();
}

const GAP = 10;

/** Sizes 4:3 tiles as large as the stage allows for their number (rows centred). */
function layout() {
  const grid = $("grid");
  const n = Math.max(1, grid.children.length);
  const { width, height } = grid.getBoundingClientRect();
  if (!width || !height) return;
  let best = { cols: 1, w: 0 };
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const w = Math.min((width - GAP * (cols - 1)) / cols, ((height - GAP * (rows - 1)) / rows) * (4 / 3));
    if (w > best.w) best = { cols, w };
  }
  grid.style.setProperty("--tile-w", `${Math.floor(best.w)}px`);
}
new ResizeObserver(layout).observe($("grid"));

/** Puts a track into a tile; returns the media element's play() promise. */
export function setTileTrack(el, kind, track) {
  const media = el.querySelector(kind);
  media.srcObject = track ? new MediaStream([track]) : null;
  if (kind === "video") el.classList.toggle("no-video", !track);
  return track ? media.play() : Promise.resolve();
}

/** Fills a device <select>. */
export function fillDevices(select, devices, chosen) {
  select.replaceChildren(
    ...devices.map((d) => {
      const o = document.createElement("option");
      o.value = d.deviceId;
      o.textContent = d.label;
      o.selected = d.deviceId === chosen;
      return o;
    }),
  );
  select.disabled = devices.length === 0;
}

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/** Appends a chat message. */
export function chatMessage({ name, text, ts, mine }) {
  const el = document.createElement("div");
  el.className = "msg" + (mine ? " mine" : "");
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = `${mine ? "You" : name} · ${time(ts)}`;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  el.append(who, body);
  const log = $("chat-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(el);
  if (atBottom || mine) log.scrollTop = log.scrollHeight;
}

function size(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

function speed(t) {
  return t.ms > 0 ? ` · ${(t.done / 1048576 / (t.ms / 1000)).toFixed(0)} MB/s` : "";
}

/**
 * Creates or updates a file transfer entry; `onDownload` is called when the
 * user asks for an offered file.
 */
export function fileEntry(t, senderName, onDownload) {
  let el = document.querySelector(`.file[data-file-id="${CSS.escape(t.id)}"]`);
  if (!el) {
    el = document.createElement("div");
    el.className = "file";
    el.dataset.fileId = t.id;
    el.innerHTML = '<div class="desc"></div><progress max="1" value="0"></progress><div class="state"></div>';
    $("files").append(el);
  }
  el.dataset.state = t.state;
  el.querySelector(".desc").textContent = `${t.mine ? "You" : senderName} · ${t.name} (${size(t.size)})`;
  const bar = el.querySelector("progress");
  bar.hidden = t.state !== "uploading" && t.state !== "downloading";
  bar.value = t.size ? t.done / t.size : 1;
  const state = el.querySelector(".state");
  const pct = `${Math.floor((t.size ? t.done / t.size : 1) * 100)} %`;
  el.classList.toggle("failed", t.state === "failed");
  const button = (label) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "fetch";
    b.textContent = label;
    b.addEventListener("click", () => onDownload(t.id));
    return b;
  };
  if (t.state === "uploading") state.textContent = `Encrypting and uploading ${pct}${speed(t)}`;
  else if (t.state === "downloading") state.textContent = `Downloading and decrypting ${pct}${speed(t)}`;
  else if (t.state === "offered") state.replaceChildren(button("Download"));
  else if (t.state === "failed") state.replaceChildren(t.error || "Failed", ...(t.mine ? [] : [" ", button("Retry")]));
  else if (t.state === "done") {
    const a = document.createElement("a");
    a.href = t.url;
    a.download = t.name;
    a.textContent = t.mine ? `Sent to ${t.to} (encrypted)` : "Save (verified)";
    state.replaceChildren(a);
  }
  return el;
}

/**
 * The recipient picker: a checkbox per participant (`people`: [{id, name}]),
 * ticked unless `chosen.get(id) === false`; `onChange(id, checked)`.
 */
export function fileRecipients(people, chosen, onChange) {
  const list = $("file-to-list");
  list.replaceChildren(
    ...people.map(({ id, name }) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.dataset.participantId = id;
      box.checked = chosen.get(id) !== false;
      box.addEventListener("change", () => onChange(id, box.checked));
      label.append(box, ` ${name}`);
      return label;
    }),
  );
  const picked = people.filter(({ id }) => chosen.get(id) !== false).length;
  $("file-to-summary").textContent = picked === people.length ? "everyone" : `${picked} of ${people.length}`;
}
