#!/usr/bin/env python3
"""FFmpeg WHIP muxer -> SFU -> aiortc WHEP viewer interop check.

A publisher process drives FFmpeg's `whip` muxer (FFmpeg 8.1 as bundled in
PyAV, the `av` package) with synthetic H.264 video (moving bar, 30 fps) and,
unless --no-audio, an Opus 440 Hz tone.  Meanwhile an aiortc viewer pulls the
room over WHEP and decodes the video.  Success means the viewer decoded at
least --frames frames within --timeout seconds.  Then the publisher closes its
container (FFmpeg DELETEs its WHIP session), the check confirms that with a
second DELETE answering 404, and DELETEs the viewer session.

Usage (from the repo root, after scripts/test-deps.sh):

    .venv/bin/python tests/interop/ffmpeg_whip.py --base http://127.0.0.1:7880 \
        --room demo [--token JWT] [--frames 30] [--timeout 40]

On success prints one JSON line on stdout, e.g.
    {"decoded_frames": 30, "width": 320, "height": 240, "encoder": "libx264", ...}
and exits 0.  On failure prints the reason on stderr and exits 1.

Why things are done the way they are:
- FFmpeg's WHIP muxer self-signs a P-224 DTLS certificate, which str0m
  rejects ("unsupported EC curve"); the check generates a P-256 certificate
  and key and passes them with the muxer's `cert_file` / `key_file` options.
- The publisher runs in a child process (this script with `--role publisher`),
  not a thread: PyAV holds the GIL inside avformat_write_header() and
  av_write_trailer(), and FFmpeg's DTLS handshake ignores `handshake_timeout`
  when the server rejects its certificate (it blocks ~60 s in GnuTLS).  A child
  can always be killed; a thread would freeze the viewer and the watchdog.
- Loopback only: the viewer's aioice gathers 127.0.0.1 (helpers shared with
  whip_whep.py); FFmpeg connects to the first UDP candidate of the WHIP answer,
  so the publisher aborts before sending media if that is not a loopback
  address; proxies are removed from the publisher's environment.
- The token is handed to the publisher through the environment (not argv) and
  sent by FFmpeg as `Authorization: Bearer` (muxer option `authorization`).

Muxer options passed: cert_file, key_file (the P-256 pair, written to a temp
dir), handshake_timeout (--timeout in ms), authorization (--token), and with
--dtls-active whip_flags=dtls_active.  Encoder: the first H.264 encoder that
opens (libx264 in PyAV's wheels: preset=ultrafast, tune=zerolatency,
profile=baseline, GOP 30, no B-frames) and libopus (48 kHz stereo, 20 ms).

FFmpeg's muxer answers NACKs (RTX) but not PLI/FIR: a viewer that joins after
the publisher's first keyframe waits for the next one (up to one GOP, 1 s).
DTLS setup takes ~0.8-1.3 s by default (FFmpeg is the DTLS server, str0m's
ClientHello sent before ICE completes is lost and str0m retransmits after 1 s);
~0.3 s with --dtls-active.

Extra fields of the JSON line: audio_encoder, publisher_setup_ms (WHIP POST
to SRTP ready), first_frame_ms (WHEP POST to first decoded frame), total_ms,
pattern_frames (decoded frames showing the published moving bar) and
first_frame_index (publisher frame number, modulo the bar's sweep period, of
the first decoded frame).

--ffmpeg-cert (diagnosis) lets FFmpeg use its own certificate and is expected
to fail against str0m.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import whip_whep  # noqa: E402  (helpers: loopback ICE, WHEP negotiation, HTTP)
from whip_whep import CheckFailed, Deadline, http, is_loopback_host  # noqa: E402

PROG = "ffmpeg_whip"
whip_whep.PROG = PROG  # whip_whep.log() reads PROG at call time

TOKEN_ENV = "FFMPEG_WHIP_TOKEN"
AUDIO_RATE = 48000
AUDIO_SAMPLES = 960  # 20 ms, what the WHIP muxer's Opus packetizer expects
TONE_HZ = 440
GOP = 30

# Seconds allowed for cleanup on top of --timeout; a watchdog ends the process
# after --timeout + 2 * CLEANUP_GRACE no matter what.
CLEANUP_GRACE = 10.0

# H.264 encoders to try, in order, with their low-latency settings.
H264_ENCODERS = [
    ("libx264", {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline"}),
    ("libopenh264", {"profile": "constrained_baseline"}),
    ("h264_nvenc", {"preset": "p1", "tune": "ull", "profile": "baseline"}),
    ("h264_qsv", {"profile": "baseline"}),
    ("h264_amf", {"usage": "ultralowlatency", "profile": "constrained_baseline"}),
    ("h264_v4l2m2m", {}),
]


def log(msg: str) -> None:
    print(f"[{PROG}] {msg}", file=sys.stderr, flush=True)


def plog(msg: str) -> None:
    print(f"[{PROG}/publisher] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# DTLS certificate
# ---------------------------------------------------------------------------

def write_p256_cert(directory: str) -> tuple[str, str]:
    """Self-signed ECDSA P-256 certificate + PKCS#8 key (PEM) for the muxer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ffmpeg-whip-interop")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "dtls-cert.pem")
    key_path = os.path.join(directory, "dtls-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


# ---------------------------------------------------------------------------
# Publisher (child process): synthetic media -> FFmpeg whip muxer
# ---------------------------------------------------------------------------

def report(event: str, **fields) -> None:
    """One JSON event line to the parent (stdout is reserved for these)."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def short(err: BaseException) -> str:
    """First line of an error, bounded (FFmpeg's last log line may hold an SDP)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def make_video_frame(n: int, width: int, height: int):
    """yuv420p: bright vertical bar sweeping over a dark background whose
    colour slowly cycles."""
    from av import VideoFrame

    frame = VideoFrame(width=width, height=height, format="yuv420p")
    bar_w = max(8, width // 8)
    x0 = (n * 4) % (width + bar_w) - bar_w
    phase = 2 * math.pi * (n % 180) / 180
    u = int(128 + 90 * math.cos(phase))
    v = int(128 + 90 * math.sin(phase))
    for index, plane in enumerate(frame.planes):
        rows = plane.buffer_size // plane.line_size
        if index == 0:
            row = bytearray([40]) * plane.line_size
            lo, hi = max(0, x0), min(width, x0 + bar_w)
            if hi > lo:
                row[lo:hi] = bytes([220]) * (hi - lo)
            plane.update(bytes(row) * rows)
        else:
            plane.update(bytes([u if index == 1 else v]) * plane.buffer_size)
    return frame


def bar_phase(frame) -> int | None:
    """Inverse of make_video_frame(): the publisher's frame number modulo the
    sweep period ((width + bar width) / 4 frames), read from where the bright
    bar is on the middle row of a decoded frame; None if no bar is seen."""
    width = frame.width
    bar_w = max(8, width // 8)
    plane = frame.planes[0]
    y = frame.height // 2
    row = bytes(plane)[y * plane.line_size:y * plane.line_size + width]
    bright = [i for i, v in enumerate(row) if v > 130]
    if not bright:
        return None
    lo, hi = bright[0], bright[-1] + 1
    if hi - lo > bar_w + 4 or len(bright) < (hi - lo) - 4:
        return None  # not one solid bar
    x0 = hi - bar_w if lo == 0 else lo
    return (x0 + bar_w) // 4


class Tone:
    """48 kHz stereo s16 440 Hz tone in 20 ms frames (one second loops)."""

    def __init__(self) -> None:
        import array
        pcm = array.array("h")
        for i in range(AUDIO_RATE):
            s = int(6000 * math.sin(2 * math.pi * TONE_HZ * i / AUDIO_RATE))
            pcm.extend((s, s))
        if sys.byteorder != "little":
            pcm.byteswap()
        self._pcm = pcm.tobytes()

    def frame(self, n: int):
        from av import AudioFrame
        import fractions

        start = (n * AUDIO_SAMPLES) % AUDIO_RATE
        data = self._pcm[start * 4:(start + AUDIO_SAMPLES) * 4]
        frame = AudioFrame(format="s16", layout="stereo", samples=AUDIO_SAMPLES)
        plane = frame.planes[0]
        plane.update(data + bytes(plane.buffer_size - len(data)))
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


def pick_h264_encoder(width: int, height: int, fps: int, wanted: str | None):
    """First H.264 encoder that opens and encodes a frame here."""
    import av
    import fractions

    tried = []
    for name, opts in H264_ENCODERS:
        if wanted and name != wanted:
            continue
        if name not in av.codecs_available:
            tried.append(f"{name}: not built in")
            continue
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
            ctx.time_base = fractions.Fraction(1, fps)
            ctx.framerate = fractions.Fraction(fps, 1)
            ctx.gop_size = GOP
            ctx.max_b_frames = 0
            ctx.options = dict(opts)
            ctx.open()
            frame = make_video_frame(0, width, height)
            frame.pts = 0
            ctx.encode(frame)
            ctx.encode(None)
            return name, opts
        except Exception as err:  # noqa: BLE001 - hw encoders fail in many ways
            tried.append(f"{name}: {type(err).__name__}: {err}")
    raise CheckFailed("no usable H.264 encoder (" + "; ".join(tried) + ")")


class MuxerLog(logging.Handler):
    """Watches the WHIP muxer's log: session URL, chosen transport, timing
    breakdown, DELETE result.  Runs synchronously inside av_log()."""

    SDP_RE = re.compile(r"transport=(\w+)://([^,\s]+?):(\d+)")
    LOC_RE = re.compile(r"location=([^,\s]+)")
    READY_RE = re.compile(r"Muxer state=\d+.*?elapsed=([^\s]+)")
    DISPOSE_RE = re.compile(r"Dispose resource (\S+) ok")

    def __init__(self) -> None:
        super().__init__(level=1)
        self.location: str | None = None
        self.transport: str | None = None
        self.breakdown: str | None = None
        self.deleted = False

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = self.SDP_RE.search(msg)
        if m and self.transport is None:
            self.transport = f"{m.group(1)}://{m.group(2)}:{m.group(3)}"
            if not is_loopback_host(m.group(2)):
                # Nothing has been sent to that address yet: stop right here.
                report("error", message=f"WHIP answer's transport {self.transport} is not "
                                        f"on loopback; refusing to send media there")
                os._exit(3)
        m = self.LOC_RE.search(msg)
        if m and self.location is None:
            self.location = m.group(1)
            report("session", location=self.location)  # lets the parent clean up
        m = self.READY_RE.search(msg)
        if m:
            self.breakdown = m.group(1)
        if self.DISPOSE_RE.search(msg):
            self.deleted = True


def _first_line_only(record: logging.LogRecord) -> bool:
    """Log filter: FFmpeg's errors may carry a whole SDP; keep the first line."""
    msg = record.getMessage()
    if "\n" in msg:
        record.msg, record.args = msg.splitlines()[0] + " [...]", ()
    return True


def run_publisher(args) -> int:
    """Child process: publish until SIGTERM/SIGINT or the deadline."""
    _die_with_parent()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + args.timeout + CLEANUP_GRACE

    import av
    import fractions

    # FFmpeg -> PyAV -> Python logging.  Keep the muxer's own messages (DEBUG
    # carries the session URL); the rest only with --verbose.
    logging.basicConfig(level=1 if args.verbose else logging.INFO, stream=sys.stderr,
                        format=f"[{PROG}/publisher] %(name)s %(levelname)s: %(message)s")
    logging.getLogger("libav").setLevel(1 if args.verbose else logging.WARNING)
    logging.getLogger("libav.WHIP muxer").setLevel(1)
    muxlog = MuxerLog()
    logging.getLogger("libav.WHIP muxer").addHandler(muxlog)
    for h in logging.getLogger().handlers:
        h.setLevel(1 if args.verbose else logging.INFO)
        if not args.verbose:
            h.addFilter(_first_line_only)
    av.logging.set_level(av.logging.DEBUG)

    width, height = args.width, args.height
    fps = args.fps
    try:
        vname, vopts = pick_h264_encoder(width, height, fps, args.encoder)
    except CheckFailed as err:
        report("error", message=str(err))
        return 1
    aname = None
    if not args.no_audio:
        aname = next((n for n in ("libopus", "opus") if n in av.codecs_available), None)
        if aname is None:
            plog("no Opus encoder built in; publishing video only")
    report("encoder", video=vname, audio=aname)

    options = {} if args.ffmpeg_cert else {"cert_file": args.cert_file, "key_file": args.key_file}
    options.update({
        # Bounds ICE (and DTLS, when FFmpeg honours it) — the parent enforces
        # the real limit by killing this process.
        "handshake_timeout": str(max(1000, int(args.timeout * 1000))),
    })
    if args.dtls_active:
        options["whip_flags"] = "dtls_active"
    token = os.environ.get(TOKEN_ENV)
    if token:
        options["authorization"] = token
    shown = {k: ("<token>" if k == "authorization" else v) for k, v in options.items()}
    plog(f"muxer options: {shown}")

    try:
        container = av.open(args.url, mode="w", format="whip", options=options)
    except Exception as err:  # noqa: BLE001
        report("error", message=f"cannot create the whip muxer: {short(err)}")
        return 1
    closed = False
    try:
        vs = container.add_stream(vname, rate=fps, options=dict(vopts))
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.codec_context.gop_size = GOP
        vs.codec_context.max_b_frames = 0
        vs.bit_rate = 800_000 if width * height > 320 * 240 else 400_000
        as_ = None
        if aname:
            as_ = container.add_stream(aname, rate=AUDIO_RATE)
            as_.layout = "stereo"
            as_.format = "s16"
            as_.bit_rate = 64_000
            if aname == "opus":
                as_.codec_context.options = {"strict": "experimental"}

        t_open = time.monotonic()
        try:
            container.start_encoding()  # POST offer, ICE, DTLS, SRTP (GIL held!)
        except Exception as err:  # noqa: BLE001
            report("error", message=f"WHIP muxer failed to connect after "
                                    f"{time.monotonic() - t_open:.2f}s: {short(err)}",
               location=muxlog.location)
            return 1
        setup = time.monotonic() - t_open
        report("connected", setup_ms=round(setup * 1000), location=muxlog.location,
               transport=muxlog.transport, breakdown=muxlog.breakdown)

        tone = Tone() if as_ is not None else None
        vtb = fractions.Fraction(1, fps)
        t0 = time.monotonic()
        vi = ai = 0
        while not stop.is_set() and time.monotonic() < deadline:
            next_v = vi / fps
            next_a = ai * AUDIO_SAMPLES / AUDIO_RATE if tone else math.inf
            due = min(next_v, next_a)
            wait = t0 + due - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            if next_v <= next_a:
                frame = make_video_frame(vi, width, height)
                frame.pts, frame.time_base = vi, vtb
                container.mux(vs.encode(frame))
                vi += 1
            else:
                container.mux(as_.encode(tone.frame(ai)))
                ai += 1
        plog(f"stopping after {vi} video / {ai} audio frames")
        for stream in (vs, as_):
            if stream is not None:
                container.mux(stream.encode(None))  # drain the encoder
        try:
            container.close()  # write trailer: FFmpeg DELETEs the session
        finally:
            closed = True
        report("stopped", video_frames=vi, audio_frames=ai, deleted=muxlog.deleted,
               location=muxlog.location)
        return 0
    except Exception as err:  # noqa: BLE001
        report("error", message=f"publisher: {type(err).__name__}: {short(err)}",
               location=muxlog.location)
        return 1
    finally:
        if not closed:
            try:
                container.close()
            except Exception:  # noqa: BLE001
                pass


def _die_with_parent() -> None:
    """Linux: SIGKILL this process if the parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:
            os._exit(1)
    except Exception:  # noqa: BLE001 - best effort, other platforms
        pass


# ---------------------------------------------------------------------------
# Parent: start the publisher, view over WHEP, decode
# ---------------------------------------------------------------------------

class Publisher:
    """The publisher child process and the events it reports."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.events: dict[str, dict] = {}
        self.connected: asyncio.Future | None = None
        self.failed: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None

    async def start(self, args, whip_url: str, cert: str, key: str) -> None:
        loop = asyncio.get_running_loop()
        self.connected = loop.create_future()
        self.failed = loop.create_future()
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env["no_proxy"] = "*"
        env.pop(TOKEN_ENV, None)
        if args.token:
            env[TOKEN_ENV] = args.token
        cmd = [sys.executable, os.path.abspath(__file__), "--role", "publisher",
               "--url", whip_url, "--cert-file", cert, "--key-file", key,
               "--timeout", str(args.timeout), "--size", f"{args.width}x{args.height}",
               "--fps", str(args.fps)]
        if args.no_audio:
            cmd.append("--no-audio")
        if args.encoder:
            cmd += ["--encoder", args.encoder]
        if args.verbose:
            cmd.append("--verbose")
        if args.ffmpeg_cert:
            cmd.append("--ffmpeg-cert")
        if args.dtls_active:
            cmd.append("--dtls-active")
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=None, env=env)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                log(f"publisher said: {line.decode(errors='replace').rstrip()}")
                continue
            name = ev.pop("event", "?")
            self.events[name] = ev
            if name == "connected" and not self.connected.done():
                self.connected.set_result(ev)
            elif name == "error" and not self.failed.done():
                self.failed.set_result(ev.get("message", "unknown error"))
        rc = await self.proc.wait()
        if not self.failed.done():
            self.failed.set_result(f"publisher process exited with status {rc}"
                                   + ("" if "stopped" in self.events else " before stopping"))
        if not self.connected.done():
            self.connected.set_result(None)  # race() reports self.failed first

    @property
    def location(self) -> str | None:
        for name in ("stopped", "connected", "error", "session"):
            loc = self.events.get(name, {}).get("location")
            if loc:
                return loc
        return None

    async def stop(self, grace: float) -> None:
        """SIGTERM (the child closes the container, FFmpeg DELETEs), then SIGKILL.
        Before it connected the child sits in avformat_write_header() holding
        the GIL, where no signal handler runs: kill it right away."""
        if not self.proc or self.proc.returncode is not None:
            if self._reader:
                await asyncio.wait({self._reader}, timeout=1)
            return
        if not (self.connected.done() and self.connected.result()):
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await asyncio.wait({self._reader}, timeout=2)
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), grace)
        except asyncio.TimeoutError:
            log(f"publisher did not stop within {grace:.0f}s; killing it")
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await asyncio.wait({self._reader}, timeout=2)


async def fail_when(fut: asyncio.Future, who: str):
    msg = await fut
    raise CheckFailed(f"{who}: {msg}")


async def race(dl: Deadline, what: str, aw, pub: Publisher):
    """Await `aw` within the deadline, failing early if the publisher fails."""
    if isinstance(aw, asyncio.Future):
        aw = asyncio.shield(aw)  # cancelling our wait must not cancel the future
    main = asyncio.ensure_future(aw)
    guard = asyncio.ensure_future(fail_when(asyncio.shield(pub.failed), "publisher"))
    try:
        done, _ = await asyncio.wait({main, guard}, timeout=max(0.0, dl.left()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if guard in done:
            guard.result()  # raises
        if main in done:
            return main.result()
        raise CheckFailed(f"timed out while: {what}")
    finally:
        for t in (main, guard):
            if not t.done():
                t.cancel()


async def wait_publisher(dl: Deadline, pub: Publisher) -> dict:
    try:
        return await race(dl, "publisher: WHIP POST + ICE + DTLS", pub.connected, pub)
    except CheckFailed as err:
        if "session" in pub.events:  # the muxer logs the session URL once ICE is done
            raise CheckFailed(f"{err} (WHIP POST and ICE succeeded, the DTLS handshake did "
                              f"not complete; str0m rejects FFmpeg's own P-224 certificate, "
                              f"see the SFU's debug log)") from None
        raise


async def run_check(args) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError

    dl = Deadline(args.timeout)
    t_start = time.monotonic()
    room = urllib.parse.quote(args.room, safe="")
    base = args.base.rstrip("/")
    whip_url = f"{base}/whip/{room}"
    whep_url = f"{base}/whep/{room}"

    tmp = tempfile.TemporaryDirectory(prefix="ffmpeg-whip-")
    pub = Publisher()
    view = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    view_url: str | None = None
    ok = False
    try:
        cert, key = write_p256_cert(tmp.name)
        await pub.start(args, whip_url, cert, key)
        if not args.viewer_first:
            conn = await wait_publisher(dl, pub)
            log(f"publisher: connected in {conn['setup_ms']} ms "
                f"(FFmpeg: {conn.get('breakdown')}), session {conn.get('location')}")

        track_fut: asyncio.Future = asyncio.get_running_loop().create_future()

        @view.on("track")
        def on_track(track):
            if track.kind == "video" and not track_fut.done():
                track_fut.set_result(track)

        view.addTransceiver("video", direction="recvonly")
        view.addTransceiver("audio", direction="recvonly")
        t_view = time.monotonic()
        view_url = await race(dl, "viewer: WHEP negotiation",
                              whip_whep.negotiate(view, "viewer", whep_url, args.token, dl), pub)
        remote_video = await race(dl, "viewer: waiting for the remote video track", track_fut, pub)
        await race(dl, "viewer: waiting for ICE/DTLS to connect",
                   whip_whep.wait_connected(view, "viewer"), pub)
        log("viewer: connected, decoding video")
        if args.viewer_first:
            conn = await wait_publisher(dl, pub)
            log(f"publisher: connected in {conn['setup_ms']} ms "
                f"(FFmpeg: {conn.get('breakdown')}), session {conn.get('location')}")

        decoded, width, height = 0, 0, 0
        phases: list[int | None] = []
        first_frame_ms = None

        async def receive_frames():
            nonlocal decoded, width, height, first_frame_ms
            while decoded < args.frames:
                try:
                    frame = await remote_video.recv()
                except MediaStreamError:
                    raise CheckFailed(
                        f"viewer: remote video track ended after {decoded} decoded frame(s)"
                    ) from None
                if decoded == 0:
                    first_frame_ms = round((time.monotonic() - t_view) * 1000)
                phases.append(bar_phase(frame))
                decoded += 1
                width, height = frame.width, frame.height

        try:
            await race(dl, f"viewer: decoding {args.frames} video frames", receive_frames(), pub)
        except CheckFailed as err:
            raise CheckFailed(f"{err} (decoded {decoded} of {args.frames} frame(s); "
                              f"viewer connection {view.connectionState})") from None

        enc = pub.events.get("encoder", {})
        result = {
            "decoded_frames": decoded,
            "width": width,
            "height": height,
            "encoder": enc.get("video"),
            "audio_encoder": enc.get("audio"),
            "publisher_setup_ms": conn["setup_ms"],
            "first_frame_ms": first_frame_ms,
            "total_ms": round((time.monotonic() - t_start) * 1000),
        }
        if (width, height) != (args.width, args.height):
            raise CheckFailed(f"viewer decoded {width}x{height}, publisher sent "
                              f"{args.width}x{args.height}")
        # The decoded pictures must show the published moving bar, advancing.
        seen = [ph for ph in phases if ph is not None]
        period = (args.width + max(8, args.width // 8)) // 4
        advancing = sum(1 for a, b in zip(seen, seen[1:]) if 1 <= (b - a) % period <= 3)
        result["pattern_frames"] = len(seen)
        result["first_frame_index"] = seen[0] if seen else None  # modulo `period`
        if len(seen) < 0.9 * decoded - 1 or advancing < 0.9 * (len(seen) - 1) - 1:
            raise CheckFailed(f"decoded pictures do not show the published pattern: bar found "
                              f"in {len(seen)} of {decoded} frame(s), advancing in {advancing}")
        print(json.dumps(result), flush=True)

        # ---- teardown: closing the muxer must DELETE the WHIP session
        await pub.stop(CLEANUP_GRACE / 2)
        stopped = pub.events.get("stopped")
        if stopped is None:
            raise CheckFailed(f"publisher did not stop cleanly: "
                              f"{pub.failed.result() if pub.failed.done() else 'no report'}")
        log(f"publisher: stopped after {stopped['video_frames']} video / "
            f"{stopped['audio_frames']} audio frames; FFmpeg DELETE "
            f"{'ok' if stopped['deleted'] else 'not reported'}")
        loc = pub.location
        if loc:
            status, _, body = await http("DELETE", loc, args.token, CLEANUP_GRACE / 5)
            if status != 404:
                raise CheckFailed(f"publisher: DELETE {loc} after FFmpeg closed: expected 404 "
                                  f"(FFmpeg already ended it), got {status}; "
                                  f"body: {whip_whep._body_text(body)!r}")
            log("publisher: session gone after close (second DELETE -> 404)")
        else:
            log("publisher: session URL unknown (muxer log not seen); DELETE not verified")
        url, view_url = view_url, None
        status, _, body = await http("DELETE", url, args.token, CLEANUP_GRACE / 5)
        if status not in (200, 204):
            raise CheckFailed(f"viewer: DELETE {url}: expected 200 or 204, got {status}; "
                              f"body: {whip_whep._body_text(body)!r}")
        log(f"viewer: DELETE -> {status}")
        ok = True
        return result
    finally:
        await pub.stop(CLEANUP_GRACE / 2)
        if not ok:
            loc = pub.location
            if loc and not pub.events.get("stopped", {}).get("deleted"):
                try:
                    status, _, _ = await http("DELETE", loc, args.token, 2.0)
                    log(f"publisher: cleanup DELETE -> {status}")
                except CheckFailed as err:
                    log(f"publisher: cleanup DELETE failed: {err}")
            if view_url:
                try:
                    status, _, _ = await http("DELETE", view_url, args.token, 2.0)
                    log(f"viewer: cleanup DELETE -> {status}")
                except CheckFailed as err:
                    log(f"viewer: cleanup DELETE failed: {err}")
        try:
            await asyncio.wait_for(view.close(), 5)
        except Exception:  # noqa: BLE001
            pass
        tmp.cleanup()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if w < 16 or h < 16 or w % 2 or h % 2 or w > 1920 or h > 1080:
        raise argparse.ArgumentTypeError("size must be even, between 16x16 and 1920x1080")
    return w, h


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="ffmpeg_whip.py",
        description="Publish with FFmpeg's WHIP muxer (PyAV), view over WHEP with aiortc.",
    )
    p.add_argument("--base", help="SFU base URL, e.g. http://127.0.0.1:7880 (must be loopback)")
    p.add_argument("--room", help="room name")
    p.add_argument("--token", default=None,
                   help="JWT for WHIP (muxer option 'authorization') and WHEP "
                        "('Authorization: Bearer'); omitted if not given")
    p.add_argument("--frames", type=int, default=30,
                   help="video frames the viewer must decode (default: 30)")
    p.add_argument("--timeout", type=float, default=40.0,
                   help="seconds allowed for publish + view + decode (default: 40)")
    p.add_argument("--size", type=parse_size, default=(320, 240),
                   help="video size WIDTHxHEIGHT (default: 320x240)")
    p.add_argument("--fps", type=int, default=30, help="video frame rate (default: 30)")
    p.add_argument("--encoder", default=None,
                   choices=[name for name, _ in H264_ENCODERS],
                   help="H.264 encoder (default: first that works, libx264 first)")
    p.add_argument("--no-audio", action="store_true", help="publish video only (no Opus)")
    p.add_argument("--viewer-first", action="store_true",
                   help="start the WHEP viewer without waiting for the publisher to connect")
    p.add_argument("--verbose", action="store_true",
                   help="FFmpeg debug log, aiortc/aioice debug logging")
    p.add_argument("--dtls-active", action="store_true",
                   help="muxer option whip_flags=dtls_active: FFmpeg offers setup:active "
                        "and is the DTLS client (default: FFmpeg is the DTLS server)")
    p.add_argument("--ffmpeg-cert", action="store_true",
                   help="diagnosis: don't pass the P-256 certificate, let FFmpeg self-sign "
                        "its own (P-224; str0m rejects it, so this is expected to fail)")
    # Internal: the publisher child process.
    p.add_argument("--role", choices=["check", "publisher"], default="check",
                   help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--cert-file", help=argparse.SUPPRESS)
    p.add_argument("--key-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.width, args.height = args.size
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    if not 1 <= args.fps <= 60:
        p.error("--fps must be 1..60")
    if args.role == "publisher":
        if not (args.url and args.cert_file and args.key_file):
            p.error("--role publisher needs --url, --cert-file and --key-file")
        return args
    if not args.base or not args.room:
        p.error("--base and --room are required")
    if args.frames < 1:
        p.error("--frames must be >= 1")
    parts = urllib.parse.urlsplit(args.base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        p.error(f"--base must be an http(s) URL, got {args.base!r}")
    if not is_loopback_host(parts.hostname):
        p.error(f"--base host {parts.hostname!r} is not a loopback address")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args)

    def watchdog() -> None:
        log(f"FAIL: watchdog: still running {args.timeout + 2 * CLEANUP_GRACE:.0f}s after "
            f"start, aborting")
        sys.stderr.flush()
        os._exit(1)  # the publisher child gets SIGKILL (PR_SET_PDEATHSIG)

    timer = threading.Timer(args.timeout + 2 * CLEANUP_GRACE, watchdog)
    timer.daemon = True
    timer.start()

    if args.verbose:
        logging.basicConfig(level=logging.DEBUG)

    try:
        whip_whep.patch_aioice_loopback()
        asyncio.run(asyncio.wait_for(run_check(args), args.timeout + CLEANUP_GRACE))
    except CheckFailed as err:
        log(f"FAIL: {err}")
        return 1
    except asyncio.TimeoutError:
        log(f"FAIL: did not finish within {args.timeout + CLEANUP_GRACE:.0f}s")
        return 1
    except KeyboardInterrupt:
        log("FAIL: interrupted")
        return 1
    except Exception as err:  # noqa: BLE001
        log(f"FAIL: unexpected {type(err).__name__}: {err}")
        return 1
    finally:
        timer.cancel()
    log("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
