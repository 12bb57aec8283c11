// Local camera and microphone: opening devices, switching them, muting.

const VIDEO = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } };

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
    const device = kind === "audio" ? this.audioDevice : this.videoDevice;
    const base = kind === "audio" ? { echoCancellation: true, noiseSuppression: true } : VIDEO;
    const constraints = device ? { ...base, deviceId: { exact: device } } : base;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ [kind]: constraints });
    } catch (e) {
      if (!device || e.name !== "OverconstrainedError") throw e;
      stream = await navigator.mediaDevices.getUserMedia({ [kind]: base }); // remembered device is gone
    }
    const track = stream.getTracks()[0];
    this[kind]?.stop();
    this[kind] = track;
    if (kind === "audio") track.enabled = !this.micMuted;
    return track;
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

  /** Releases both devices. */
  close() {
    this.audio?.stop();
    this.video?.stop();
    this.audio = this.video = null;
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}
