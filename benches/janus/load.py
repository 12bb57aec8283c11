#!/usr/bin/env python3
"""One measured run of benches/janus/compare.sh: the same aiortc clients
against our SFU (WHIP/WHEP) or Janus (VideoRoom over its HTTP API).

One publisher sends the pre-encoded VP8 clip of clip.py (no encoding during
the run), paced at the clip's frame rate; N viewers receive it and only count
RTP packets (aiortc's receive path is cut right after SRTP decryption: no
RTP parsing, jitter buffer, decoding or NACKs). Once every viewer has received
packets, after --warmup seconds, the server's CPU (utime + stime of
/proc/PID/stat) and the viewers' packet counts are read at the start and end
of a --window seconds window; the server's own count of forwarded packets
(our /metrics, Janus's Admin API) is read just before and after it as a
cross-check. One JSON object goes to --json and stdout.

    .venv/bin/python benches/janus/load.py --server ours --base http://127.0.0.1:17980 \\
        --server-pid PID --clip clip.vp8 --viewers 20 [--window 25] [--warmup 5]

All traffic stays on loopback: aioice gathers 127.0.0.1 only and candidates
in the servers' SDP that are not loopback addresses are dropped (the helpers
of tests/interop/whip_whep.py).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import itertools
import json
import os
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "interop"))
sys.path.insert(0, HERE)

import clip  # noqa: E402
import whip_whep as ww  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failed step; the message is printed to stderr."""


def log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Server process figures
# ---------------------------------------------------------------------------

def server_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads), in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces: count after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def server_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def udp_rcvbuf_errors() -> int:
    """Datagrams the kernel dropped for full receive buffers (machine-wide)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def socket_drops(pid: int) -> int:
    """Datagrams dropped on arrival (full receive buffer) at the UDP sockets
    of process pid: the last column of /proc/net/udp for its socket inodes."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    drops = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) >= 13 and cols[9] in inodes:
                        drops += int(cols[-1])
        except OSError:
            pass
    return drops


def loadavg_1m() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_delay_ns() -> int:
    """Nanoseconds this process's threads waited on a run queue (schedstat)."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total


async def our_forwarded_counter(base: str) -> int | None:
    """sfu_rtp_packets_forwarded_total from our /metrics, None if unreadable."""
    status, _, body = await ww.http("GET", f"{base}/metrics", None, 5.0)
    if status != 200:
        return None
    for line in body.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "sfu_rtp_packets_forwarded_total":
            try:
                return int(float(parts[1]))
            except ValueError:
                return None
    return None


async def janus_forwarded_counter(admin: str, secret: str) -> int | None:
    """RTP packets Janus has sent on all its handles' media streams (Admin
    API handle_info, stats.out.packets), None if unreadable."""
    async def ask(path: str, what: str) -> dict | None:
        body = json.dumps({"janus": what, "transaction": "bench", "admin_secret": secret}).encode()
        status, _, data = await ww.http("POST", f"{admin}{path}", None, 5.0,
                                        body=body, content_type="application/json")
        if status != 200:
            return None
        reply = json.loads(data)
        return reply if reply.get("janus") == "success" else None

    total = 0
    sessions = await ask("", "list_sessions")
    if sessions is None:
        return None
    for sid in sessions.get("sessions", [])[:1000]:
        handles = await ask(f"/{sid}", "list_handles")
        for hid in (handles or {}).get("handles", [])[:1000]:
            info = await ask(f"/{sid}/{hid}", "handle_info")
            media = (((info or {}).get("info") or {}).get("webrtc") or {}).get("media") or {}
            for m in media.values():
                total += int(((m.get("stats") or {}).get("out") or {}).get("packets", 0))
    return total


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

def install_packet_counter() -> None:
    """Viewers only count: each SRTP packet, once decrypted (so it is
    authentic), is counted per payload type on its DTLS transport and
    dropped there: no RTP parsing, routing, jitter buffer, NACKs or
    decoding, which keeps the clients' CPU per packet low."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    async def count_only(self, data: bytes, arrival_time_ms: int) -> None:  # noqa: ARG001
        counts = self.__dict__.setdefault("bench_counts", {})
        pt = data[1] & 0x7F
        entry = counts.get(pt)
        if entry is None:
            entry = counts[pt] = [0, 0]
        entry[1] += 1
        if rtp_payload_len(data) > 0:
            entry[0] += 1

    RTCDtlsTransport._handle_rtp_data = count_only


def rtp_payload_len(data: bytes) -> int:
    """Bytes of an RTP packet's payload without header, extension and
    padding (a padding-only probe has none); -1 if malformed."""
    if len(data) < 12:
        return -1
    off = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < off + 4:
            return -1
        off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
    end = len(data) - (data[-1] if data[0] & 0x20 else 0)
    return end - off


def install_big_receive_buffers() -> None:
    """4 MiB receive buffers (capped by net.core.rmem_max) on the clients' UDP
    sockets instead of aioice's 256 KiB: keyframe bursts to 40 viewers must
    not overflow them while the single client process works through its
    queue. aioice sets the size right after binding, from this constant."""
    import aioice.turn

    aioice.turn.UDP_SOCKET_BUFFER_SIZE = 4 << 20


def clip_track(frames: list[tuple[bytes, bool]], fps: int):
    """A video track whose recv() hands aiortc pre-encoded frames (aiortc
    packetizes av.Packet objects without encoding), paced at fps, looping."""
    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    packets_per_frame = [clip.rtp_packets(f) for f, _ in frames]

    class ClipTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.sent_packets = 0
            self._start: float | None = None

        async def recv(self):
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = now
            wait = self._start + self.n / fps - now
            if wait > 0:
                await asyncio.sleep(wait)
            i = self.n % len(frames)
            packet = av.Packet(frames[i][0])
            packet.pts = self.n
            packet.time_base = fractions.Fraction(1, fps)
            self.n += 1
            self.sent_packets += packets_per_frame[i]
            return packet

    return ClipTrack()


def vp8_only(transceiver) -> None:
    from aiortc.rtcrtpsender import RTCRtpSender

    caps = RTCRtpSender.getCapabilities("video")
    transceiver.setCodecPreferences([c for c in caps.codecs if c.mimeType.lower() == "video/vp8"])


class Viewer:
    def __init__(self, pc) -> None:
        self.pc = pc

    def counts(self) -> tuple[int, int]:
        """(VP8 packets with a payload, all RTP packets) received so far."""
        media, total = 0, 0
        vp8, transports = set(), {}
        for t in self.pc.getTransceivers():
            vp8 |= {c.payloadType for c in t._codecs if c.mimeType.lower() == "video/vp8"}
            transports[id(t.receiver.transport)] = t.receiver.transport  # one when bundled
        for transport in transports.values():
            for pt, (with_payload, n) in transport.__dict__.get("bench_counts", {}).items():
                total += n
                if pt in vp8:
                    media += with_payload
        return media, total


async def wait_media(viewer: Viewer, who: str) -> None:
    while viewer.counts()[0] == 0:
        if viewer.pc.connectionState in ("failed", "closed"):
            raise BenchError(f"{who}: connection {viewer.pc.connectionState} before any packet")
        await asyncio.sleep(0.05)


# ---- ours: WHIP / WHEP (the interop test's negotiation)

class Ours:
    def __init__(self, base: str, room: str) -> None:
        self.base = base
        self.room = urllib.parse.quote(room, safe="")

    async def publish(self, pc, dl) -> None:
        await ww.negotiate(pc, "publisher", f"{self.base}/whip/{self.room}", None, dl)

    async def view(self, pc, who: str, dl) -> None:
        await ww.negotiate(pc, who, f"{self.base}/whep/{self.room}", None, dl)


# ---- Janus: VideoRoom over the HTTP (REST + long poll) transport

class JanusSession:
    """One Janus session with one VideoRoom handle."""

    _tx = itertools.count(1)

    def __init__(self, base: str, who: str) -> None:
        self.base = f"{base}/janus"
        self.who = who
        self.session: int | None = None
        self.handle: int | None = None

    async def _post(self, url: str, body: dict, dl) -> dict:
        status, _, data = await ww.http("POST", url, None, min(10.0, dl.left()),
                                        body=json.dumps(body).encode(), content_type="application/json")
        if status != 200:
            raise BenchError(f"{self.who}: POST {url}: HTTP {status}: {data[:300]!r}")
        try:
            reply = json.loads(data)
        except ValueError:
            raise BenchError(f"{self.who}: POST {url}: not JSON: {data[:300]!r}") from None
        if reply.get("janus") == "error":
            raise BenchError(f"{self.who}: {body.get('janus')}: {reply.get('error')}")
        return reply

    async def open(self, dl) -> None:
        reply = await self._post(self.base, {"janus": "create", "transaction": self._txid()}, dl)
        self.session = int(reply["data"]["id"])
        reply = await self._post(f"{self.base}/{self.session}", {
            "janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": self._txid()}, dl)
        self.handle = int(reply["data"]["id"])

    def _txid(self) -> str:
        return f"t{next(self._tx)}"

    async def request(self, body: dict, dl, jsep: dict | None = None) -> tuple[dict, dict | None]:
        """Send a VideoRoom request; return (plugin data, jsep) of its
        synchronous reply or, for asynchronous requests, of the event with
        the same transaction (long-polled)."""
        tx = self._txid()
        msg = {"janus": "message", "transaction": tx, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self._post(f"{self.base}/{self.session}/{self.handle}", msg, dl)
        if reply.get("janus") == "success":
            return self._plugin_data(reply), None
        if reply.get("janus") != "ack":
            raise BenchError(f"{self.who}: {body.get('request')}: unexpected reply {reply}")
        while dl.left() > 0:
            status, _, data = await ww.http("GET", f"{self.base}/{self.session}?maxev=10", None,
                                            min(35.0, max(1.0, dl.left())))
            if status != 200:
                raise BenchError(f"{self.who}: long poll: HTTP {status}")
            events = json.loads(data)
            for ev in events if isinstance(events, list) else [events]:
                if ev.get("transaction") == tx and ev.get("janus") == "event":
                    return self._plugin_data(ev), ev.get("jsep")
        raise BenchError(f"{self.who}: {body.get('request')}: no event before the deadline")

    def _plugin_data(self, reply: dict) -> dict:
        data = (reply.get("plugindata") or {}).get("data") or {}
        if "error" in data:
            raise BenchError(f"{self.who}: VideoRoom error {data.get('error_code')}: {data['error']}")
        return data


class Janus:
    def __init__(self, base: str, room: int) -> None:
        self.base = base
        self.room = room
        self.feed: int | None = None

    async def publish(self, pc, dl) -> None:
        from aiortc import RTCSessionDescription

        s = JanusSession(self.base, "publisher")
        await s.open(dl)
        await s.request({"request": "create", "room": self.room, "publishers": 1,
                         "videocodec": "vp8", "bitrate": 0, "notify_joining": False}, dl)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        await dl.run("publisher: gathering", ww.wait_gathering_complete(pc))
        data, jsep = await s.request(
            {"request": "joinandconfigure", "room": self.room, "ptype": "publisher",
             "display": "bench", "audio": False, "video": True},
            dl, jsep={"type": "offer", "sdp": pc.localDescription.sdp})
        if not jsep or jsep.get("type") != "answer":
            raise BenchError(f"publisher: joinandconfigure gave no SDP answer: {data}")
        self.feed = int(data["id"])
        sdp = ww.keep_loopback_candidates(jsep["sdp"], "publisher")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def view(self, pc, who: str, dl) -> None:
        from aiortc import RTCSessionDescription

        s = JanusSession(self.base, who)
        await s.open(dl)
        data, jsep = await s.request({"request": "join", "room": self.room, "ptype": "subscriber",
                                      "streams": [{"feed": self.feed}]}, dl)
        if not jsep or jsep.get("type") != "offer":
            raise BenchError(f"{who}: join gave no SDP offer: {data}")
        sdp = ww.keep_loopback_candidates(jsep["sdp"], who)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        await dl.run(f"{who}: gathering", ww.wait_gathering_complete(pc))
        await s.request({"request": "start"}, dl, jsep={"type": "answer", "sdp": pc.localDescription.sdp})


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

async def run(args) -> dict:
    from aiortc import RTCConfiguration, RTCPeerConnection

    header, frames = clip.read(args.clip)
    fps = int(header["fps"])
    server = Ours(args.base, args.room) if args.server == "ours" else Janus(args.base, 4242)
    dl = ww.Deadline(args.connect_timeout)
    pcs = []
    try:
        pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pub)
        track = clip_track(frames, fps)
        vp8_only(pub.addTransceiver(track, direction="sendonly"))
        await server.publish(pub, dl)
        await dl.run("publisher: connecting", ww.wait_connected(pub, "publisher"))
        log(f"{args.server}: publisher connected")

        viewers: list[Viewer] = []
        gate = asyncio.Semaphore(4)

        async def add_viewer(i: int) -> Viewer:
            who = f"viewer{i}"
            async with gate:
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.append(pc)
                if args.server == "ours":
                    pc.addTransceiver("video", direction="recvonly")
                await server.view(pc, who, dl)
                viewer = Viewer(pc)
                await dl.run(f"{who}: connecting", ww.wait_connected(pc, who))
            await dl.run(f"{who}: first packet", wait_media(viewer, who))
            return viewer

        t_join = time.monotonic()
        viewers = list(await asyncio.gather(*(add_viewer(i) for i in range(args.viewers))))
        join_s = time.monotonic() - t_join
        log(f"{args.server}: {len(viewers)} viewers receiving after {join_s:.1f}s; warm-up {args.warmup}s")
        await asyncio.sleep(args.warmup)

        pid = args.server_pid

        async def counter() -> tuple[float, int | None]:
            """The server's own count of forwarded packets, and when."""
            if args.server == "ours":
                value = await our_forwarded_counter(args.base)
            elif args.janus_admin:
                value = await janus_forwarded_counter(args.janus_admin,
                                                      os.environ.get("BENCH_JANUS_ADMIN_SECRET", ""))
            else:
                value = None
            return time.monotonic(), value

        def snapshot() -> dict:
            per_viewer = [v.counts() for v in viewers]
            return {
                "t": time.monotonic(), "ticks": server_ticks(pid),
                "media": [c[0] for c in per_viewer], "all": [c[1] for c in per_viewer],
                "sent": track.sent_packets, "client": sum(os.times()[:2]),
                "rcvbuf_errors": udp_rcvbuf_errors(), "run_delay_ns": run_delay_ns(),
                "server_drops": socket_drops(pid),
            }

        # The servers' counters are read just outside the CPU window: asking
        # Janus costs it one Admin API request per handle.
        c0 = await counter()
        s0 = snapshot()
        await asyncio.sleep(args.window)
        s1 = snapshot()
        c1 = await counter()
        rss = server_rss_kb(pid)

        window = s1["t"] - s0["t"]
        cpu_s = (s1["ticks"] - s0["ticks"]) / CLK_TCK
        per_viewer = [b - a for a, b in zip(s0["media"], s1["media"])]
        forwarded = sum(per_viewer)
        forwarded_all = sum(b - a for a, b in zip(s0["all"], s1["all"]))
        sent = s1["sent"] - s0["sent"]
        counter_pps = None
        if c0[1] is not None and c1[1] is not None and c1[0] > c0[0]:
            counter_pps = round((c1[1] - c0[1]) / (c1[0] - c0[0]), 1)
        result = {
            "server": args.server, "viewers": args.viewers, "window_s": round(window, 2),
            "join_s": round(join_s, 2),
            "published_pps": round(sent / window, 1),
            "forwarded_pps": round(forwarded / window, 1),
            "delivered_ratio": round(forwarded / (sent * args.viewers), 4) if sent else None,
            "server_cpu_s": round(cpu_s, 2),
            "server_cpu_pct": round(100 * cpu_s / window, 1),
            "us_per_forwarded_packet": round(cpu_s * 1e6 / forwarded, 2) if forwarded else None,
            "server_rss_kb": rss,
            "client_cpu_pct": round(100 * (s1["client"] - s0["client"]) / window, 1),
            "viewer_packets_min": min(per_viewer), "viewer_packets_max": max(per_viewer),
            "rtp_packets_all": forwarded_all,
            # The server's own count (ours: sfu_rtp_packets_forwarded_total,
            # Janus: Admin API out packets), over the counter reads' interval.
            "server_counter_pps": counter_pps,
            "us_per_server_counted_packet":
                round(cpu_s * 1e6 / (counter_pps * window), 2) if counter_pps else None,
            # Datagrams the kernel dropped for full receive buffers, machine-wide
            # and at the server's own sockets (its ingress from the publisher).
            "udp_rcvbuf_errors": s1["rcvbuf_errors"] - s0["rcvbuf_errors"],
            "server_socket_drops": s1["server_drops"] - s0["server_drops"],
            # Time the client process was runnable but waited for its CPU.
            "client_wait_pct": round(100 * (s1["run_delay_ns"] - s0["run_delay_ns"]) / 1e9 / window, 1),
            # Other work on the machine during the run (the figures are the
            # server's own CPU time, but a busy machine disturbs them).
            "loadavg_1m": loadavg_1m(),
        }
        return result
    finally:
        for pc in pcs:
            try:
                await asyncio.wait_for(pc.close(), 2)
            except Exception:  # noqa: BLE001 - best effort; the server is stopped next
                pass


def prioritize() -> None:
    """As a session leader (compare.sh starts it with setsid), give this
    session's autogroup the nice value BENCH_NICE: the scheduler weighs
    autogroups, not processes, against other sessions' work."""
    nice = os.environ.get("BENCH_NICE")
    if nice and os.getsid(0) == os.getpid():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(nice)
        except OSError as err:
            log(f"could not set the autogroup nice to {nice}: {err}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=["ours", "janus"], required=True)
    p.add_argument("--base", required=True, help="server HTTP base URL (loopback)")
    p.add_argument("--server-pid", type=int, required=True, help="process whose CPU is measured")
    p.add_argument("--clip", required=True, help="clip file from clip.py encode")
    p.add_argument("--viewers", type=int, required=True)
    p.add_argument("--room", default="bench")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--window", type=float, default=25.0)
    p.add_argument("--connect-timeout", type=float, default=120.0,
                   help="seconds for the publisher and all viewers to connect and receive")
    p.add_argument("--janus-admin", help="Janus Admin API URL (loopback) for its packet count; "
                   "secret in BENCH_JANUS_ADMIN_SECRET")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    host = urllib.parse.urlsplit(args.base).hostname or ""
    if not ww.is_loopback_host(host):
        p.error(f"--base host {host!r} is not a loopback address")
    if args.janus_admin and not ww.is_loopback_host(urllib.parse.urlsplit(args.janus_admin).hostname or ""):
        p.error("--janus-admin must be a loopback URL")
    if not (1 <= args.viewers <= 500) or args.window <= 0 or args.warmup < 0:
        p.error("--viewers 1..500, --window > 0, --warmup >= 0")

    limit = args.connect_timeout + args.warmup + args.window + 30

    def watchdog() -> None:
        log(f"FAIL: watchdog: still running after {limit:.0f}s")
        os._exit(1)

    timer = threading.Timer(limit, watchdog)
    timer.daemon = True
    timer.start()
    prioritize()
    try:
        ww.patch_aioice_loopback()
        install_packet_counter()
        install_big_receive_buffers()
        result = asyncio.run(run(args))
    except (BenchError, ww.CheckFailed, OSError, ValueError, KeyError) as err:
        log(f"FAIL: {type(err).__name__}: {err}")
        return 1
    finally:
        timer.cancel()
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
