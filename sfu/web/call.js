// The media side of a session: the publish connection (we offer) and the
// subscribe connection (the server offers), per docs/protocol.md section 5.

/**
 * Codecs offered under E2EE. VP8 (default) is offered with VP9 behind it;
 * asking for VP9 offers VP9 alone, since the server's answer, not our order,
 * decides which codec is sent.
 */
function videoCodecs(prefer) {
  const caps = RTCRtpSender.getCapabilities("video")?.codecs ?? [];
  const rank = (c) => {
    const m = c.mimeType.toLowerCase();
    if (m === `video/${prefer}`) return 0;
    if (m === "video/vp9" && prefer === "vp8") return 1;
    if (m === "video/rtx") return 2;
    return -1; // H.264 and AV1 packetizers need clear bytes: never under E2EE
  };
  return caps.filter((c) => rank(c) >= 0).sort((a, b) => rank(a) - rank(b));
}

function audioCodecs() {
  return (RTCRtpSender.getCapabilities("audio")?.codecs ?? []).filter((c) => c.mimeType.toLowerCase() === "audio/opus");
}

/**
 * The lowest layer fits, with audio, a 250 kbit/s downlink: what a
 * subscriber on a weak link or a thumbnail receives.
 */
const LOWEST_BPS = 120_000;

/**
 * Camera simulcast: ¼, ½ and full size, lowest first (the rids the SFU
 * ranks q < h < f). Browsers send no more layers than the size allows
 * (Chromium: three from 960×540, two below, dropping the largest), so a
 * smaller camera sends ½ (at the lowest layer's rate) and full size only.
 */
function simulcastFor(track) {
  const layers = [
    { rid: "q", scaleResolutionDownBy: 4, maxBitrate: LOWEST_BPS, scalabilityMode: "L1T3" },
    { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000, scalabilityMode: "L1T3" },
    { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000, scalabilityMode: "L1T3" },
  ];
  const { width = 0, height = 0 } = track.getSettings?.() ?? {};
  if (Math.min(width, height) >= 540) return layers;
  return [{ ...layers[1], maxBitrate: LOWEST_BPS }, layers[2]];
}

/**
 * Our senders: the media kind of each and the `source` label others see
 * (docs/protocol.md section 5.1), so receivers put a screen in its own tile.
 */
const SENDERS = {
  audio: { kind: "audio", source: "microphone" },
  video: { kind: "video", source: "camera" },
  screen: { kind: "video", source: "screen" },
};

/**
 * Events: "track" (detail {participantId, kind, source, trackId, track, receiver}),
 * "untrack" (detail {participantId, kind, source, trackId}), "published" (detail {kind, trackId})
 * where `kind` names one of our SENDERS,
 * "failed" (a peer connection failed: reconnect).
 */
export class Call extends EventTarget {
  /**
   * @param {object} o
   * @param {import("./signaling.js").Signaling} o.signaling
   * @param {import("./e2ee/transform.js").E2eeTransforms} o.e2ee
   * @param {RTCIceServer[]} o.iceServers from `joined`
   * @param {"all"|"relay"} o.iceTransportPolicy
   * @param {string} o.codec "vp8" or "vp9"
   * @param {(trackId: string) => string|undefined} [o.sourceOf] a remote track's `source` label
   */
  constructor({ signaling, e2ee, iceServers, iceTransportPolicy, codec, selfId, sourceOf = () => undefined }) {
    super();
    this.sourceOf = sourceOf;
    this.sig = signaling;
    this.e2ee = e2ee;
    this.selfId = selfId;
    this.codec = codec;
    this.config = { iceServers, iceTransportPolicy, ...e2ee.pcConfig };
    this.pub = null;
    this.sub = null;
    this.senders = {}; // SENDERS key -> RTCRtpTransceiver
    this.trackIds = {}; // SENDERS key -> our track id (from track_published)
    this.remote = new Map(); // mid -> {participantId, kind, source, trackId, receiver}
    // One negotiation at a time per connection.
    this.chains = { pub: Promise.resolve(), sub: Promise.resolve() };
  }

  #serial(which, fn) {
    const next = this.chains[which].then(fn).catch((e) => {
      // The server waits for our answer; without one nothing moves again.
      console.error(`${which} negotiation failed, reconnecting:`, e);
      this.dispatchEvent(new Event("failed"));
    });
    this.chains[which] = next;
    return next;
  }

  #pc(bundlePolicy) {
    // The subscribe offer has no BUNDLE group once every m-line is stopped,
    // which "max-bundle" would refuse.
    const pc = new RTCPeerConnection({ ...this.config, bundlePolicy });
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") this.dispatchEvent(new Event("failed"));
      this.dispatchEvent(new Event("state"));
    };
    return pc;
  }

  /** Publishes the given tracks ({audio, video, screen}, any may be null) in one offer. */
  publish(tracks) {
    return this.#serial("pub", async () => {
      let added = false;
      for (const [name, { kind }] of Object.entries(SENDERS)) {
        const track = tracks[name];
        if (!track || this.senders[name]) continue;
        if (!this.pub) this.pub = this.#pc("max-bundle");
        // The camera goes out in three VP8 layers (simulcast) with three
        // temporal layers each, so the SFU can give every subscriber the
        // one its bandwidth and tile size allow.
        const init = { direction: "sendonly" };
        if (name === "video" && this.codec === "vp8") init.sendEncodings = simulcastFor(track);
        const t = this.pub.addTransceiver(track, init);
        if (kind === "video") t.setCodecPreferences(videoCodecs(this.codec));
        else t.setCodecPreferences(audioCodecs());
        this.e2ee.encrypt(t.sender, kind === "video" ? this.codec : "opus");
        this.senders[name] = t;
        added = true;
      }
      if (added) await this.#publishOffer();
    });
  }

  /**
   * Shares `track` as our screen: the first time (or after stopScreen) a
   * renegotiation publishes it as a track of its own; while sharing, another
   * source only replaces the track (same track id, no renegotiation).
   */
  shareScreen(track) {
    if (!this.senders.screen) return this.publish({ screen: track });
    return this.#serial("pub", async () => {
      const t = this.senders.screen;
      await t.sender.replaceTrack(track);
      if (t.direction !== "sendonly") {
        t.direction = "sendonly";
        await this.#publishOffer();
      }
    });
  }

  /** Stops sending our screen; the renegotiation unpublishes its track everywhere. */
  stopScreen() {
    return this.#serial("pub", async () => {
      const t = this.senders.screen;
      if (!t || t.direction === "inactive") return;
      await t.sender.replaceTrack(null);
      t.direction = "inactive";
      delete this.trackIds.screen;
      await this.#publishOffer();
    });
  }

  /** Replaces the local track of `kind` (null stops sending); publishes it if new. */
  async setTrack(kind, track) {
    const t = this.senders[kind];
    if (t) await t.sender.replaceTrack(track);
    else if (track) await this.publish({ [kind]: track });
  }

  async #publishOffer() {
    const offer = await this.pub.createOffer();
    await this.pub.setLocalDescription(offer);
    this.answered = new Promise((resolve) => (this.onPublishAnswer = resolve));
    const tracks = Object.entries(this.senders).map(([name, t]) => ({ mid: t.mid, source: SENDERS[name].source }));
    this.sig.send({ type: "publish_offer", sdp: this.pub.localDescription.sdp, tracks });
    // A refused offer gets an error, not an answer: do not wait forever.
    await Promise.race([this.answered, new Promise((r) => setTimeout(r, 10000))]);
  }

  /** Handles a signaling message that concerns media; returns true if it did. */
  handle(m) {
    switch (m.type) {
      case "publish_answer":
        // Not queued: the offer's own task is waiting for this answer.
        (this.pub?.setRemoteDescription({ type: "answer", sdp: m.sdp }) ?? Promise.resolve())
          .catch((e) => console.error("publish answer:", e))
          .finally(() => this.onPublishAnswer?.());
        return true;
      case "subscribe_offer":
        this.#serial("sub", () => this.#subscribeOffer(m));
        return true;
      case "track_published":
        if (m.track.participant_id === this.selfId) {
          const kind = Object.keys(this.senders).find((k) => this.senders[k].mid === m.track.mid);
          if (kind) {
            this.trackIds[kind] = m.track.id;
            this.dispatchEvent(new CustomEvent("published", { detail: { kind, trackId: m.track.id } }));
          }
        }
        return false;
      case "publisher_layers":
        this.#setLayers(m);
        return true;
      default:
        return false;
    }
  }

  /**
   * Dynacast: turns our simulcast encodings on and off as the SFU says
   * (`active: false` stops encoding a layer nobody receives). Unknown track
   * ids and rids are ignored; rids in neither list are left as they are.
   */
  #setLayers(m) {
    const kind = Object.keys(this.trackIds).find((k) => this.trackIds[k] === m.track_id);
    const sender = kind && this.senders[kind]?.sender;
    if (!sender || !Array.isArray(m.active) || !Array.isArray(m.inactive)) return;
    // One getParameters/setParameters pair at a time: a second
    // setParameters with a stale transaction would be rejected.
    this.layerChange = (this.layerChange ?? Promise.resolve())
      .then(async () => {
        const params = sender.getParameters();
        let changed = false;
        for (const e of params.encodings ?? []) {
          const active = m.active.includes(e.rid) ? true : m.inactive.includes(e.rid) ? false : e.active;
          if (e.rid && active !== e.active) {
            e.active = active;
            changed = true;
          }
        }
        if (changed) await sender.setParameters(params);
      })
      .catch((e) => console.warn("publisher_layers:", e));
  }

  /** Our camera's simulcast layers: [{rid, active, bytesSent, framesSent, frameWidth}] (tests, troubleshooting). */
  async publishedLayers() {
    const sender = this.senders.video?.sender;
    if (!sender) return [];
    const sent = new Map();
    for (const s of (await sender.getStats()).values()) {
      if (s.type === "outbound-rtp" && s.rid) sent.set(s.rid, s);
    }
    return (sender.getParameters().encodings ?? []).map((e) => {
      const s = sent.get(e.rid);
      return {
        rid: e.rid,
        active: e.active,
        bytesSent: s?.bytesSent ?? 0,
        framesSent: s?.framesSent ?? 0,
        frameWidth: s?.frameWidth ?? 0,
        nacksReceived: s?.nackCount ?? 0,
        retransmitted: s?.retransmittedPacketsSent ?? 0,
        plisReceived: s?.pliCount ?? 0,
      };
    });
  }

  async #subscribeOffer(m) {
    if (!this.sub) {
      this.sub = this.#pc("balanced");
      this.sub.ontrack = () => {};
    }
    await this.sub.setRemoteDescription({ type: "offer", sdp: m.sdp });
    const wanted = new Map(m.tracks.map((t) => [t.mid, t]));
    for (const t of this.sub.getTransceivers()) {
      const info = wanted.get(t.mid);
      if (info && !this.remote.has(t.mid)) {
        this.e2ee.decrypt(t.receiver, info.participant_id, info.kind === "video" ? "vp8" : "opus");
        const entry = {
          participantId: info.participant_id,
          kind: info.kind,
          source: this.sourceOf(info.track_id),
          trackId: info.track_id,
          receiver: t.receiver,
        };
        this.remote.set(t.mid, entry);
        this.dispatchEvent(new CustomEvent("track", { detail: { ...entry, track: t.receiver.track } }));
      }
    }
    for (const [mid, entry] of this.remote) {
      if (!wanted.has(mid)) {
        this.remote.delete(mid);
        this.dispatchEvent(new CustomEvent("untrack", { detail: entry }));
      }
    }
    const answer = await this.sub.createAnswer();
    await this.sub.setLocalDescription(answer);
    this.sig.send({ type: "subscribe_answer", sdp: this.sub.localDescription.sdp });
  }

  /** Adaptive stream: how we show a remote track (see adaptive.js). */
  trackSettings(settings) {
    this.sig.send({ type: "track_settings", ...settings });
  }

  /** Tells the others our track of `kind` is (un)muted, once its id is known. */
  mute(kind, muted) {
    const id = this.trackIds[kind];
    if (id) this.sig.send({ type: "mute", track_id: id, muted });
  }

  /** "new" | "connecting" | "connected" | "failed" ... of the worst connection. */
  get state() {
    const order = ["failed", "disconnected", "connecting", "new", "connected"];
    const states = [this.pub, this.sub].filter(Boolean).map((pc) => pc.connectionState);
    if (states.length === 0) return "new";
    return states.sort((a, b) => order.indexOf(a) - order.indexOf(b))[0];
  }

  /** Per remote participant: video frames decoded, audio received, speaking level. */
  async stats() {
    const out = {};
    if (!this.sub) return out;
    const report = await this.sub.getStats();
    for (const s of report.values()) {
      if (s.type !== "inbound-rtp") continue;
      const entry = this.remote.get(s.mid);
      if (!entry) continue;
      const p = (out[entry.participantId] ??= {});
      if (s.kind === "video") {
        // A shared screen is reported beside the camera, not over it.
        p[entry.source === "screen" ? "screen" : "video"] = {
          packetsReceived: s.packetsReceived ?? 0,
          packetsLost: s.packetsLost ?? 0,
          retransmitted: s.retransmittedPacketsReceived ?? 0,
          nacks: s.nackCount ?? 0,
          framesDecoded: s.framesDecoded ?? 0,
          framesDropped: s.framesDropped ?? 0,
          freezes: s.freezeCount ?? 0,
          plis: s.pliCount ?? 0,
          frameWidth: s.frameWidth,
          codec: report.get(s.codecId)?.mimeType,
        };
      } else {
        p.audio = {
          packetsReceived: s.packetsReceived ?? 0,
          totalSamplesReceived: s.totalSamplesReceived ?? 0,
          concealedSamples: s.concealedSamples ?? 0,
          totalAudioEnergy: s.totalAudioEnergy ?? 0,
        };
      }
    }
    return out;
  }

  /** Audio level (0..1) per remote participant, from the RTP audio-level extension. */
  levels() {
    const out = {};
    for (const e of this.remote.values()) {
      if (e.kind !== "audio") continue;
      const src = e.receiver.getSynchronizationSources?.()[0];
      if (src) out[e.participantId] = src.audioLevel ?? 0;
    }
    return out;
  }

  /** Closes both connections. */
  close() {
    this.pub?.close();
    this.sub?.close();
    this.pub = this.sub = null;
  }
}
