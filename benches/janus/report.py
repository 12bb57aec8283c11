#!/usr/bin/env python3
"""Summary of benches/janus/compare.sh: per viewer count, both servers' CPU µs
per forwarded packet and the Janus/ours ratio, as a Markdown table on stdout
and JSON in --out.

    python3 benches/janus/report.py --meta meta.json --out results.json run-*.json
"""

from __future__ import annotations

import argparse
import json
import sys


def fmt(v, spec: str = "") -> str:
    return "–" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="report.py")
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("runs", nargs="+")
    args = p.parse_args(argv)
    with open(args.meta) as f:
        meta = json.load(f)
    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f))
    by_n: dict[int, dict[str, dict]] = {}
    for r in runs:
        by_n.setdefault(int(r["viewers"]), {})[r["server"]] = r
    rows = []
    for n in sorted(by_n):
        ours, janus = by_n[n].get("ours"), by_n[n].get("janus")
        ratio = None
        if ours and janus and ours.get("us_per_forwarded_packet") and janus.get("us_per_forwarded_packet"):
            ratio = round(janus["us_per_forwarded_packet"] / ours["us_per_forwarded_packet"], 2)
        rows.append({"viewers": n, "ours": ours, "janus": janus, "janus_over_ours": ratio})

    print(f"clip {meta['clip'].get('width')}x{meta['clip'].get('height')} VP8 "
          f"{meta['clip'].get('packets_per_s')} packets/s; window {meta['window_s']} s; "
          f"Janus {meta.get('janus')}; ours {meta.get('git_rev')}; {meta.get('cpu_model')}")
    print()
    print("| N | server | published pkt/s | forwarded pkt/s | delivered | server CPU | "
          "µs/forwarded pkt | RSS MB | our counter pkt/s | client CPU | Janus/ours |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        for srv in ("ours", "janus"):
            r = row[srv]
            if not r:
                continue
            ratio = fmt(row["janus_over_ours"], ".2f") + "×" if srv == "janus" else ""
            print(f"| {row['viewers']} | {srv} | {fmt(r['published_pps'])} | {fmt(r['forwarded_pps'])} | "
                  f"{fmt(r['delivered_ratio'], '.1%')} | {fmt(r['server_cpu_pct'])} % | "
                  f"{fmt(r['us_per_forwarded_packet'])} | {r['server_rss_kb'] / 1024:.1f} | "
                  f"{fmt(r['forwarded_counter_pps'])} | {fmt(r['client_cpu_pct'])} % | {ratio} |")
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
