#!/usr/bin/env python3
"""Summary of benches/janus/compare.sh: per viewer count and server, the
median over the rounds of every figure (µs per forwarded packet also with its
range), and the Janus/ours ratio of the medians; a Markdown table on stdout,
JSON in --out.

    python3 benches/janus/report.py --meta meta.json --out results.json run-*.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

FIGURES = [
    "published_pps", "forwarded_pps", "delivered_ratio", "server_cpu_pct",
    "us_per_forwarded_packet", "server_rss_kb", "server_counter_pps",
    "us_per_server_counted_packet", "client_cpu_pct", "client_wait_pct", "join_s",
    "server_socket_drops", "udp_rcvbuf_errors",
]


def fmt(v, spec: str = "") -> str:
    return "–" if v is None else format(v, spec)


def median(values: list, digits: int = 2) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="report.py")
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+")
    args = p.parse_args(argv)
    with open(args.meta) as f:
        meta = json.load(f)
    groups: dict[tuple[int, str], list[dict]] = {}
    for path in args.runs:
        with open(path) as f:
            r = json.load(f)
        groups.setdefault((int(r["viewers"]), r["server"]), []).append(r)

    rows = []
    for n in sorted({k[0] for k in groups}):
        row: dict = {"viewers": n}
        for srv in ("ours", "janus"):
            runs = groups.get((n, srv), [])
            if not runs:
                continue
            us = [r["us_per_forwarded_packet"] for r in runs if r.get("us_per_forwarded_packet")]
            row[srv] = {k: median([r.get(k) for r in runs], 4 if k == "delivered_ratio" else 2)
                        for k in FIGURES}
            row[srv]["runs"] = len(runs)
            row[srv]["us_per_forwarded_packet_range"] = [min(us), max(us)] if us else None
        o = (row.get("ours") or {}).get("us_per_forwarded_packet")
        j = (row.get("janus") or {}).get("us_per_forwarded_packet")
        row["janus_over_ours"] = round(j / o, 2) if o and j else None
        rows.append(row)

    # Marginal cost: the extra server CPU per extra forwarded packet between
    # the smallest and the largest N, free of the costs that do not grow
    # with viewers (receiving the publisher, timers, RTCP).
    marginal = {}
    if len(rows) >= 2:
        lo, hi = rows[0], rows[-1]
        for srv in ("ours", "janus"):
            a, b = lo.get(srv), hi.get(srv)
            if a and b and None not in (a["server_cpu_pct"], b["server_cpu_pct"],
                                        a["forwarded_pps"], b["forwarded_pps"]):
                dpps = b["forwarded_pps"] - a["forwarded_pps"]
                if dpps > 0:
                    marginal[srv] = round((b["server_cpu_pct"] - a["server_cpu_pct"]) / 100 * 1e6 / dpps, 2)
        if "ours" in marginal and "janus" in marginal and marginal["ours"] > 0:
            marginal["janus_over_ours"] = round(marginal["janus"] / marginal["ours"], 2)
        marginal["between"] = [lo["viewers"], hi["viewers"]]

    clip = meta.get("clip", {})
    print(f"Clip {clip.get('width')}x{clip.get('height')} VP8, {clip.get('packets_per_s')} packets/s; "
          f"window {meta['window_s']} s; Janus {meta.get('janus')}; ours at {meta.get('git_rev')}; "
          f"{meta.get('cpu_model')}; load average at start {meta.get('loadavg_start')}")
    print()
    print("| N | server | runs | published pkt/s | forwarded pkt/s | delivered | server CPU | "
          "µs/forwarded pkt (range) | server's own count pkt/s | RSS MB | client CPU | Janus/ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for srv in ("ours", "janus"):
            r = row.get(srv)
            if not r:
                continue
            rng = r["us_per_forwarded_packet_range"]
            rng_s = f" ({rng[0]}–{rng[1]})" if rng and r["runs"] > 1 else ""
            ratio = f"**{fmt(row['janus_over_ours'], '.2f')}×**" if srv == "janus" else ""
            rss = r["server_rss_kb"]
            print(f"| {row['viewers']} | {srv} | {r['runs']} | {fmt(r['published_pps'])} | "
                  f"{fmt(r['forwarded_pps'])} | {fmt(r['delivered_ratio'], '.1%')} | "
                  f"{fmt(r['server_cpu_pct'])} % | **{fmt(r['us_per_forwarded_packet'])}**{rng_s} | "
                  f"{fmt(r['server_counter_pps'])} | {fmt(None if rss is None else rss / 1024, '.1f')} | "
                  f"{fmt(r['client_cpu_pct'])} % | {ratio} |")
    if marginal.get("ours") is not None and marginal.get("janus") is not None:
        print()
        print(f"Marginal server CPU per extra forwarded packet, N = {marginal['between'][0]} → "
              f"{marginal['between'][1]}: ours {marginal['ours']} µs, Janus {marginal['janus']} µs"
              + (f" ({marginal['janus_over_ours']}×)" if "janus_over_ours" in marginal else ""))
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows, "marginal_us_per_packet": marginal}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
