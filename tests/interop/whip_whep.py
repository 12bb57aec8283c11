#!/usr/bin/env python3
"""WHIP/WHEP interop check with a third-party WebRTC stack (aiortc).

A publisher sends synthetic video (320x240 @ 30 fps, moving bar) and audio
(440 Hz tone) to the SFU via WHIP; a viewer pulls the room via WHEP and
decodes video frames.  Success means the viewer decoded at least --frames
video frames within --timeout seconds.  Then both sessions are DELETEd and a
second DELETE of the publisher session must answer 404.

Usage (from the repo root, after scripts/test-deps.sh):

    .venv/bin/python tests/interop/whip_whep.py --base http://127.0.0.1:8080 \
        --room demo [--token JWT] [--frames 30] [--timeout 30]

On success prints one JSON line on stdout, e.g.
    {"decoded_frames": 30, "width": 320, "height": 240}
and exits 0.  On failure prints the reason on stderr and exits 1.

All traffic stays on loopback: aioice normally skips 127.0.0.1 when gathering
host candidates, so it is patched to gather 127.0.0.1 only, and candidates in
the server's answers that are not loopback addresses are dropped.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import fractions
import ipaddress
import json
import math
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PROG = "whip_whep"

VIDEO_WIDTH = 320
VIDEO_HEIGHT = 240
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020  # 20 ms
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
TONE_HZ = 440

# Seconds allowed for cleanup (DELETEs, closing peers) on top of --timeout,
# after which a watchdog terminates the process no matter what.
CLEANUP_GRACE = 10.0


class CheckFailed(Exception):
    """A failed interop expectation; the message is printed to stderr."""


def log(msg: str) -> None:
    print(f"[{PROG}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Loopback-only ICE
# ---------------------------------------------------------------------------

def patch_aioice_loopback() -> None:
    """Make aioice gather a single host candidate on 127.0.0.1.

    aioice.ice.get_host_addresses() enumerates interfaces and deliberately
    leaves out 127.0.0.1; Connection.gather_candidates() looks the function up
    as a module global at call time, so replacing the module attribute is
    enough.
    """
    import aioice.ice

    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise CheckFailed(
            "installed aioice has no aioice.ice.get_host_addresses(); "
            "the loopback gathering patch needs updating for this aioice version"
        )

    def loopback_host_addresses(use_ipv4: bool = True, use_ipv6: bool = False) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_host_addresses


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def keep_loopback_candidates(sdp: str, who: str) -> str:
    """Drop a=candidate lines whose address is not a loopback IP."""
    kept, dropped, total = [], 0, 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            total += 1
            parts = line.split()
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
            if len(parts) < 6 or not is_loopback_host(parts[4]):
                dropped += 1
                continue
        kept.append(line)
    if dropped:
        log(f"{who}: ignored {dropped} non-loopback candidate(s) in the answer")
    if total and total == dropped:
        raise CheckFailed(f"{who}: answer has {total} ICE candidate(s) but none on loopback")
    return "\r\n".join(kept) + "\r\n"


# ---------------------------------------------------------------------------
# Synthetic media
# ---------------------------------------------------------------------------

def make_tracks():
    """Create the synthetic (video, audio) tracks. Imports aiortc lazily so
    --help works without it."""
    from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack
    from av import AudioFrame, VideoFrame

    class MovingBarVideoTrack(VideoStreamTrack):
        """320x240 yuv420p frames at 30 fps: a bright vertical bar sweeping
        across a dark background whose colour slowly cycles."""

        def __init__(self) -> None:
            super().__init__()
            self._n = 0

        async def recv(self):
            pts, time_base = await self.next_timestamp()  # paces at 30 fps
            frame = VideoFrame(width=VIDEO_WIDTH, height=VIDEO_HEIGHT, format="yuv420p")
            bar_w = 40
            x0 = (self._n * 4) % (VIDEO_WIDTH + bar_w) - bar_w
            phase = 2 * math.pi * (self._n % 180) / 180
            u = int(128 + 90 * math.cos(phase))
            v = int(128 + 90 * math.sin(phase))
            for index, plane in enumerate(frame.planes):
                rows = plane.buffer_size // plane.line_size
                if index == 0:
                    row = bytearray([40]) * plane.line_size
                    lo, hi = max(0, x0), min(VIDEO_WIDTH, x0 + bar_w)
                    if hi > lo:
                        row[lo:hi] = bytes([220]) * (hi - lo)
                    data = bytes(row) * rows
                else:
                    data = bytes([u if index == 1 else v]) * (plane.line_size * rows)
                plane.update(data)
            frame.pts = pts
            frame.time_base = time_base
            self._n += 1
            return frame

    class ToneAudioTrack(MediaStreamTrack):
        """48 kHz mono s16 440 Hz tone in 20 ms frames, paced in real time."""

        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            # One second holds a whole number of 440 Hz periods: loop it.
            self._pcm = array.array(
                "h",
                (int(8000 * math.sin(2 * math.pi * TONE_HZ * i / AUDIO_RATE))
                 for i in range(AUDIO_RATE)),
            )
            if sys.byteorder != "little":
                self._pcm.byteswap()
            self._start: float | None = None
            self._timestamp = 0

        async def recv(self):
            if self.readyState != "live":
                from aiortc.mediastreams import MediaStreamError
                raise MediaStreamError
            if self._start is None:
                self._start = time.time()
                self._timestamp = 0
            else:
                self._timestamp += AUDIO_SAMPLES
                wait = self._start + self._timestamp / AUDIO_RATE - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            offset = self._timestamp % AUDIO_RATE
            chunk = self._pcm[offset:offset + AUDIO_SAMPLES]
            frame = AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
            data = chunk.tobytes()
            plane = frame.planes[0]
            plane.update(data + bytes(plane.buffer_size - len(data)))
            frame.pts = self._timestamp
            frame.sample_rate = AUDIO_RATE
            frame.time_base = fractions.Fraction(1, AUDIO_RATE)
            return frame

    return MovingBarVideoTrack(), ToneAudioTrack()


# ---------------------------------------------------------------------------
# HTTP (stdlib, never through a proxy)
# ---------------------------------------------------------------------------

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surface 3xx as-is; WHIP/WHEP expect 201 exactly


_OPENER.add_handler(_NoRedirect())


def _http_blocking(method: str, url: str, headers: dict, body: bytes | None, timeout: float):
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        try:
            data = err.read()
        except Exception:  # noqa: BLE001
            data = b""
        return err.code, err.headers, data


async def http(method: str, url: str, token: str | None, timeout: float,
               body: bytes | None = None, content_type: str | None = None):
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    timeout = max(0.5, timeout)
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_http_blocking, method, url, headers, body, timeout),
            timeout + 1,
        )
    except asyncio.TimeoutError:
        raise CheckFailed(f"{method} {url}: no response within {timeout:.1f}s") from None
    except (urllib.error.URLError, OSError) as err:
        raise CheckFailed(f"{method} {url}: request failed: {err}") from None


def _body_text(body: bytes, limit: int = 2000) -> str:
    text = body.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


# ---------------------------------------------------------------------------
# The check
# ---------------------------------------------------------------------------

class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    async def run(self, what: str, aw):
        left = self.left()
        if left <= 0:
            raise CheckFailed(f"timed out before: {what}")
        try:
            return await asyncio.wait_for(aw, left)
        except asyncio.TimeoutError:
            raise CheckFailed(f"timed out while: {what}") from None


async def wait_gathering_complete(pc) -> None:
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)


async def wait_connected(pc, who: str) -> None:
    while True:
        state = pc.connectionState
        if state == "connected":
            return
        if state in ("failed", "closed"):
            raise CheckFailed(f"{who}: peer connection {state} (ICE {pc.iceConnectionState})")
        await asyncio.sleep(0.05)


async def negotiate(pc, who: str, url: str, token: str | None, dl: Deadline) -> str:
    """Offer -> POST url -> expect 201 + SDP answer + Location. Returns the
    absolute session URL."""
    from aiortc import RTCSessionDescription

    offer = await pc.createOffer()
    await dl.run(f"{who}: gathering ICE candidates", pc.setLocalDescription(offer))
    await dl.run(f"{who}: waiting for ICE gathering to complete", wait_gathering_complete(pc))
    if "a=candidate:" not in pc.localDescription.sdp:
        raise CheckFailed(f"{who}: local offer has no ICE candidates (127.0.0.1 patch ineffective?)")

    status, headers, body = await http(
        "POST", url, token, dl.left(),
        body=pc.localDescription.sdp.encode(), content_type="application/sdp",
    )
    if status != 201:
        raise CheckFailed(f"{who}: POST {url}: expected 201 Created, got {status}; body: {_body_text(body)!r}")
    location = headers.get("Location")
    if not location:
        raise CheckFailed(f"{who}: POST {url}: 201 without a Location header")
    ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        log(f"{who}: warning: answer Content-Type is {headers.get('Content-Type')!r}, expected application/sdp")
    answer = body.decode("utf-8", "replace")
    if not answer.lstrip().startswith("v=0"):
        raise CheckFailed(f"{who}: POST {url}: 201 body is not an SDP answer: {_body_text(body)!r}")

    # Location is resolved against the request URL (identical to resolving
    # against --base for the usual absolute-path form "/whip/room/id").
    session_url = urllib.parse.urljoin(url, location)
    if not is_loopback_host(urllib.parse.urlsplit(session_url).hostname or ""):
        raise CheckFailed(f"{who}: session URL {session_url!r} is not on loopback")

    answer = keep_loopback_candidates(answer, who)
    try:
        await dl.run(f"{who}: applying answer",
                     pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer")))
    except CheckFailed:
        raise
    except Exception as err:  # noqa: BLE001 - aiortc raises various types
        raise CheckFailed(f"{who}: answer rejected by aiortc: {type(err).__name__}: {err}") from None
    log(f"{who}: session {session_url}")
    return session_url


async def run_check(args) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError

    dl = Deadline(args.timeout)
    room = urllib.parse.quote(args.room, safe="")
    base = args.base.rstrip("/")
    whip_url = f"{base}/whip/{room}"
    whep_url = f"{(args.view_base or base).rstrip('/')}/whep/{room}"

    pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    view = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sessions: dict[str, str] = {}
    result: dict = {}
    ok = False
    try:
        # ---- publisher (WHIP)
        video, audio = make_tracks()
        pub.addTransceiver(video, direction="sendonly")
        pub.addTransceiver(audio, direction="sendonly")
        sessions["publisher"] = await negotiate(pub, "publisher", whip_url, args.token, dl)
        await dl.run("publisher: waiting for ICE/DTLS to connect", wait_connected(pub, "publisher"))
        log("publisher: connected")

        # ---- viewer (WHEP)
        track_fut: asyncio.Future = asyncio.get_running_loop().create_future()

        @view.on("track")
        def on_track(track):
            if track.kind == "video" and not track_fut.done():
                track_fut.set_result(track)

        view.addTransceiver("video", direction="recvonly")
        view.addTransceiver("audio", direction="recvonly")
        sessions["viewer"] = await negotiate(view, "viewer", whep_url, args.token, dl)
        remote_video = await dl.run("viewer: waiting for the remote video track", track_fut)
        await dl.run("viewer: waiting for ICE/DTLS to connect", wait_connected(view, "viewer"))
        log("viewer: connected, decoding video")

        decoded, width, height = 0, 0, 0

        async def receive_frames():
            nonlocal decoded, width, height
            while decoded < args.frames:
                try:
                    frame = await remote_video.recv()
                except MediaStreamError:
                    raise CheckFailed(
                        f"viewer: remote video track ended after {decoded} decoded frame(s)"
                    ) from None
                decoded += 1
                width, height = frame.width, frame.height

        try:
            await dl.run(f"viewer: decoding {args.frames} video frames", receive_frames())
        except CheckFailed as err:
            raise CheckFailed(f"{err} (decoded {decoded} of {args.frames} frame(s); "
                              f"viewer connection {view.connectionState})") from None

        result = {"decoded_frames": decoded, "width": width, "height": height}
        print(json.dumps(result), flush=True)

        # ---- teardown checks
        # DELETEs run after the media deadline; together they fit in CLEANUP_GRACE.
        cleanup_timeout = CLEANUP_GRACE / 5
        pub_url = sessions["publisher"]
        for who in ("publisher", "viewer"):
            url = sessions.pop(who)
            status, _, body = await http("DELETE", url, args.token, cleanup_timeout)
            if status not in (200, 204):
                raise CheckFailed(f"{who}: DELETE {url}: expected 200 or 204, got {status}; "
                                  f"body: {_body_text(body)!r}")
            log(f"{who}: DELETE -> {status}")
        status, _, body = await http("DELETE", pub_url, args.token, cleanup_timeout)
        if status != 404:
            raise CheckFailed(f"publisher: second DELETE {pub_url}: expected 404 (session gone), "
                              f"got {status}; body: {_body_text(body)!r}")
        log("publisher: second DELETE -> 404")
        ok = True
        return result
    finally:
        # Best effort: release server sessions left behind by a failure.
        if not ok:
            for who, url in sessions.items():
                try:
                    status, _, _ = await http("DELETE", url, args.token, 2.0)
                    log(f"{who}: cleanup DELETE -> {status}")
                except CheckFailed as err:
                    log(f"{who}: cleanup DELETE failed: {err}")
        for pc in (view, pub):
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception:  # noqa: BLE001
                pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="whip_whep.py",
        description="WHIP publish + WHEP view interop check against the SFU using aiortc.",
    )
    p.add_argument("--base", required=True,
                   help="SFU base URL, e.g. http://127.0.0.1:8080 (must be loopback)")
    p.add_argument("--view-base", default=None,
                   help="SFU base URL the viewer uses (default: --base); another node "
                        "of a cluster views a room published on --base")
    p.add_argument("--room", required=True, help="room name")
    p.add_argument("--token", default=None,
                   help="JWT sent as 'Authorization: Bearer TOKEN' (omitted if not given)")
    p.add_argument("--frames", type=int, default=30,
                   help="video frames the viewer must decode (default: 30)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds allowed for publish + view + decode (default: 30)")
    p.add_argument("--verbose", action="store_true", help="enable aiortc/aioice debug logging")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be >= 1")
    if args.timeout <= 0:
        p.error("--timeout must be > 0")
    for name, url in (("--base", args.base), ("--view-base", args.view_base)):
        if url is None:
            continue
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            p.error(f"{name} must be an http(s) URL, got {url!r}")
        if not is_loopback_host(parts.hostname):
            p.error(f"{name} host {parts.hostname!r} is not a loopback address")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    # Hard stop: whatever hangs (threads in codecs, a stuck close), the
    # process ends shortly after --timeout plus the cleanup grace.
    def watchdog() -> None:
        log(f"FAIL: watchdog: still running {args.timeout + 2 * CLEANUP_GRACE:.0f}s after start, aborting")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(args.timeout + 2 * CLEANUP_GRACE, watchdog)
    timer.daemon = True
    timer.start()

    if args.verbose:
        import logging
        logging.basicConfig(level=logging.DEBUG)

    try:
        patch_aioice_loopback()
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
