#!/usr/bin/env python3
"""The pre-encoded VP8 clip the benchmark publisher sends (benches/janus).

Encoding happens once, before any measurement, so the publisher spends no CPU
on it during a run: `clip.py encode --out FILE` encodes a synthetic clip
(640x480, random 4x4 blocks, so the encoder really spends its bit budget) with PyAV's
libvpx at constant bitrate, keyframe every second, and picks the bitrate that
makes aiortc's VP8 packetizer emit about --pps RTP packets per second.

File format: one JSON header line (fps, size, frames, packets per second,
bitrate), then per frame a 4-byte big-endian length, one byte (1 = keyframe)
and the VP8 frame.

    .venv/bin/python benches/janus/clip.py encode --out clip.vp8 [--pps 230]
"""

from __future__ import annotations

import argparse
import fractions
import json
import random
import struct
import sys

MAGIC = "vp8clip1"
RECORD = struct.Struct(">IB")


def rtp_packets(frame: bytes) -> int:
    """RTP packets aiortc's VP8 packetizer makes of one frame (2-byte picture
    id, the case after the first 128 frames)."""
    from aiortc.codecs.vpx import Vp8Encoder

    return len(Vp8Encoder._packetize(frame, 200))


def block_noise(rng: random.Random, line: int, rows: int, block: int = 4) -> bytes:
    """Random luma in block x block squares: plenty of detail for the encoder,
    yet compressible enough for its rate control to hit the bitrate (pixel
    noise is not: libvpx then overshoots whatever the target)."""
    out = []
    for _ in range(-(-rows // block)):
        cells = rng.randbytes(-(-line // block))
        row = b"".join(bytes([c]) * block for c in cells)[:line]
        out.append(row * block)
    return b"".join(out)[: line * rows]


def encode(width: int, height: int, fps: int, seconds: int, bitrate: int) -> list[tuple[bytes, bool]]:
    import av

    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = fps
    ctx.thread_count = 1
    # minrate = maxrate = bitrate selects libvpx's CBR mode in FFmpeg.
    ctx.options = {
        # Not "realtime": its speed adapts to the CPU time available, so
        # the output (and the packet rate) would vary from run to run.
        "deadline": "good",
        "cpu-used": "5",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate),
        # FFmpeg caps the quantizer at 31 by default: too low a ceiling
        # for the rate control to reach a low target on busy content.
        "qmin": "4",
        "qmax": "63",
    }
    rng = random.Random(20261203)
    out: list[tuple[bytes, bool]] = []

    def take(packets) -> None:
        for p in packets:
            out.append((bytes(p), bool(p.is_keyframe)))

    # A noise picture scrolling sideways, with a band of fresh noise moving
    # down it: motion the encoder can predict plus detail it cannot, so it
    # has to spend its whole budget and its rate control can meet it.
    probe = av.VideoFrame(width=width, height=height, format="yuv420p")
    line, rows = probe.planes[0].line_size, probe.planes[0].buffer_size // probe.planes[0].line_size
    base = block_noise(rng, line, rows)
    band = 48
    for n in range(fps * seconds):
        frame = av.VideoFrame(width=width, height=height, format="yuv420p")
        shift = (n * 4) % line
        luma = bytearray(b"".join(base[r * line + shift:(r + 1) * line] + base[r * line:r * line + shift]
                                  for r in range(rows)))
        top = (n * 8) % max(1, rows - band)
        luma[top * line:(top + band) * line] = block_noise(rng, line, band)
        for index, plane in enumerate(frame.planes):
            if index == 0:
                plane.update(bytes(luma))
            else:
                plane.update(bytes([(n * 3 + 64 * index) % 256]) * plane.buffer_size)
        frame.pts = n
        frame.time_base = ctx.time_base
        take(ctx.encode(frame))
    take(ctx.encode(None))
    return out


def packets_per_second(frames: list[tuple[bytes, bool]], fps: int) -> float:
    return sum(rtp_packets(f) for f, _ in frames) * fps / max(1, len(frames))


def write(path: str, frames: list[tuple[bytes, bool]], header: dict) -> None:
    with open(path, "wb") as f:
        f.write((json.dumps({"format": MAGIC, **header}) + "\n").encode())
        for data, key in frames:
            f.write(RECORD.pack(len(data), 1 if key else 0))
            f.write(data)


def read(path: str) -> tuple[dict, list[tuple[bytes, bool]]]:
    """Header and frames of a clip file; ValueError if it is not one."""
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        if not isinstance(header, dict) or header.get("format") != MAGIC:
            raise ValueError(f"{path}: not a {MAGIC} clip")
        frames = []
        while len(frames) < 100_000:
            head = f.read(RECORD.size)
            if not head:
                break
            if len(head) != RECORD.size:
                raise ValueError(f"{path}: truncated record header")
            size, key = RECORD.unpack(head)
            data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{path}: truncated frame")
            frames.append((data, key == 1))
    if not frames or not frames[0][1]:
        raise ValueError(f"{path}: empty, or does not start with a keyframe")
    return header, frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="clip.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="encode the synthetic clip")
    e.add_argument("--out", required=True)
    e.add_argument("--pps", type=float, default=230.0, help="target RTP packets per second")
    e.add_argument("--fps", type=int, default=30)
    e.add_argument("--seconds", type=int, default=10)
    e.add_argument("--width", type=int, default=640)
    e.add_argument("--height", type=int, default=480)
    args = p.parse_args(argv)

    # A packet carries up to 1296 bytes of frame; half a packet per frame is
    # lost to rounding up. Start there, then correct by what came out.
    bitrate = int(max(1.0, args.pps / args.fps - 0.5) * 1296 * 8 * args.fps)
    frames: list[tuple[bytes, bool]] = []
    pps = 0.0
    for attempt in range(4):
        frames = encode(args.width, args.height, args.fps, args.seconds, bitrate)
        pps = packets_per_second(frames, args.fps)
        print(f"[clip] bitrate {bitrate} bit/s -> {pps:.1f} packets/s ({len(frames)} frames)",
              file=sys.stderr)
        if abs(pps - args.pps) <= 0.03 * args.pps:
            break
        per_frame_now = pps / args.fps - 0.5
        per_frame_want = args.pps / args.fps - 0.5
        bitrate = int(bitrate * per_frame_want / max(0.1, per_frame_now))
    write(args.out, frames, {
        "fps": args.fps, "width": args.width, "height": args.height,
        "frames": len(frames), "packets_per_s": round(pps, 1), "bitrate": bitrate,
        "keyframes": sum(1 for _, k in frames if k),
    })
    print(json.dumps({"clip": args.out, "packets_per_s": round(pps, 1), "bitrate": bitrate}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
