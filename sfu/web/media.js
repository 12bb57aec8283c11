// Local camera and microphone: opening devices, switching them, muting.

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } };
/**
 * Screen capture: up to 1080p, and a low frame rate since slides and text
 * change rarely and every frame is encrypted in a worker; the "detail" hint
 * makes the encoder keep resolution (legible text) rather than frame rate.
 */
const SCREEN = { width: { max: 1920 }, height: { max: 1080 }, frameRate: { ideal: 15, max: 30 } };

/** The local camera/microphone tracks and the device choice. */
export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.audio = null;
    this.video = null;
    this.audioDevice = localStorage.getItem("sfu-mic") || "";
    this.videoDevice = localStorage.getItem("sfu-cam") || "";
    this.micMuted = false;
    this.camOff = false;
    this.screen = null; // the shared screen, window or tab
    this.testTone = false; // test hook: the microphone is a tone (see #tone)
    this.toneGain = null;
  }

  /** Opens both devices; a missing or refused device leaves its track null. */
  async open() {
    for (const kind of ["audio", "video"]) {
      if (kind === "video" && this.camOff) continue;
      try {
        await this.#openKind(kind);
      } catch (e) {
        this.dispatchEvent(new CustomEvent("error", { detail: { kind, message: e.message || e.name } }));
      }
    }
    this.#changed();
  }

  async #openKind(kind) {
    const stream = kind === "audio" && this.testTone ? this.#tone() : await this.#capture(kind);
    const track = stream.getTracks()[0];
    this[kind]?.stop();
    this[kind] = track;
    if (kind === "audio") track.enabled = !this.micMuted;
    return track;
  }

  async #capture(kind) {
    const device = kind === "audio" ? this.audioDevice : this.videoDevice;
    const base = kind === "audio" ? { echoCancellation: true, noiseSuppression: true } : VIDEO;
    const constraints = device ? { ...base, deviceId: { exact: device } } : base;
    try {
      return await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
    } catch (e) {
      if (!device || e.name !== "OverconstrainedError") throw e;
      return navigator.mediaDevices.getUserMedia({ [kind]: base }); // remembered device is gone
    }
  }

  /**
   * Test hook (`?test_tone=1`): a 440 Hz WebAudio tone instead of the
   * microphone, silent until setToneGain(), so a test controls how loud
   * each participant is (the level browsers put in every audio packet).
   */
  #tone() {
    const ctx = new AudioContext();
    const osc = new OscillatorNode(ctx, { frequency: 440 });
    this.toneGain = new GainNode(ctx, { gain: 0 });
    const out = new MediaStreamAudioDestinationNode(ctx);
    osc.connect(this.toneGain).connect(out);
    osc.start();
    ctx.resume().catch(() => {});
    return out.stream;
  }

  /** Test hook: the tone's gain, 0 (silent) to 1. */
  setToneGain(gain) {
    if (this.toneGain) this.toneGain.gain.value = gain;
  }

  /** Available input devices: {audio: [{deviceId, label}], video: [...]}. */
  async devices() {
    const all = await navigator.mediaDevices.enumerateDevices();
    const pick = (k) => all.filter((d) => d.kind === k).map((d, i) => ({ deviceId: d.deviceId, label: d.label || `${k} ${i + 1}` }));
    return { audio: pick("audioinput"), video: pick("videoinput") };
  }

  /** Switches to another device of `kind`; returns the new track. */
  async choose(kind, deviceId) {
    if (kind === "audio") this.audioDevice = deviceId;
    else this.videoDevice = deviceId;
    localStorage.setItem(kind === "audio" ? "sfu-mic" : "sfu-cam", deviceId);
    if (kind === "video" && this.camOff) return null;
    const track = await this.#openKind(kind);
    this.#changed();
    return track;
  }

  /** Mutes or unmutes the microphone (the track stays open). */
  setMicMuted(muted) {
    this.micMuted = muted;
    if (this.audio) this.audio.enabled = !muted;
    this.#changed();
  }

  /** Turns the camera off (releasing it) or on again; returns the track or null. */
  async setCamOff(off) {
    this.camOff = off;
    if (off) {
      this.video?.stop();
      this.video = null;
    } else {
      await this.#openKind("video");
    }
    this.#changed();
    return this.video;
  }

  /**
   * Asks the browser for a screen, window or tab to share (its own picker);
   * replaces the one shared so far. Returns the new track. The "screenended"
   * event fires when the browser's own "Stop sharing" ends it.
   */
  async shareScreen() {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: SCREEN, audio: false });
    const track = stream.getVideoTracks()[0];
    track.contentHint = "detail";
    track.addEventListener("ended", () => {
      if (this.screen !== track) return;
      this.screen = null;
      track.stop();
      this.dispatchEvent(new Event("screenended"));
      this.#changed();
    });
    const old = this.screen;
    this.screen = track;
    old?.stop();
    this.#changed();
    return track;
  }

  /** Stops sharing the screen. */
  stopScreen() {
    const t = this.screen;
    this.screen = null;
    t?.stop(); // stop() does not fire "ended" on our own track
    this.#changed();
  }

  /** Releases both devices and the shared screen. */
  close() {
    this.audio?.stop();
    this.video?.stop();
    this.screen?.stop();
    this.audio = this.video = this.screen = null;
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
