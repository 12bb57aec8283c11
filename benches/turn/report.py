#!/usr/bin/env python3
"""Figures of benches/turn/compare.sh: one row per uclient run, the markdown
section of benches/RESULTS.md, and writing that section into the file.

  report.py row --server S --load L ... >> runs.tsv
  report.py section --runs runs.tsv --rss rss.tsv --meta meta.env > section.md
  report.py write --section section.md --results benches/RESULTS.md

Definitions (the same for both servers):

* relayed datagram: one datagram forwarded by the server in one direction,
  client -> peer or peer -> client. A uclient message that made the round
  trip was relayed twice, so the count used for CPU per relayed datagram is
  2 x messages received. With no loss that is exact; with loss, the CPU the
  server spent on messages that were lost counts against it. For our server
  the run also reads its own counters (turn_relayed_packets_total), which
  count every datagram it forwarded; the section shows that figure too.
* server CPU: change of utime + stime (fields 14 + 15 of /proc/PID/stat,
  all threads) across the uclient run, in 1/CLK_TCK s.
"""

import argparse
import re
import shlex
import statistics
import sys
from pathlib import Path

BEGIN = "<!-- benches/turn/compare.sh: generated, begin -->"
END = "<!-- benches/turn/compare.sh: generated, end -->"
HEADING = "## TURN relay vs coturn (issue: TURN relay)"

COLUMNS = [
    "server", "load", "rep", "flags", "rc", "sent", "recv", "lost", "transmit_s",
    "active_s", "wall_s", "srv_utime", "srv_stime", "other_srv_ticks", "peer_ticks",
    "gen_ticks", "busy_ticks", "idle_ticks", "to_peer", "to_client",
    "drop_srv_client", "drop_srv_relay", "drop_peer", "drop_uclient",
]

DROP_KINDS = ("srv_client", "srv_relay", "peer", "uclient")


def parse_uclient(text):
    """sent, recv, lost, transmit seconds, active seconds from a uclient log."""
    sent = recv = lost = transmit = None
    for m in re.finditer(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", text):
        sent, recv = int(m.group(1)), int(m.group(2))
    m = re.search(r"Total lost packets (\d+)", text)
    if m:
        lost = int(m.group(1))
    m = re.search(r"Total transmit time is (\d+)", text)
    if m:
        transmit = int(m.group(1))
    # Progress lines, one per second of uclient's clock:
    #   "7: : start_mclient: msz=40, tot_send_msgs=93314, tot_recv_msgs=89092, ..."
    # Active time: from the last second nothing had been sent yet to the
    # first second the received count reached its final value.
    prog = [(int(a), int(b), int(c)) for a, b, c in re.findall(
        r"^(\d+): : start_mclient: msz=\d+, tot_send_msgs=(\d+), tot_recv_msgs=(\d+)",
        text, re.M)]
    active = None
    if prog and recv:
        start = max([t for t, s, _ in prog if s == 0], default=0)
        ends = [t for t, _, r in prog if r >= recv]
        if not ends:
            # The summary line comes in the second the last message arrived.
            m = re.search(r"^(\d+): : start_mclient: tot_send_msgs=", text, re.M)
            ends = [int(m.group(1))] if m else []
        if ends:
            active = max(1, ends[0] - start)
    if sent is not None and recv is not None and lost is None:
        lost = sent - recv
    return sent, recv, lost, transmit, active


def parse_times(path, clk):
    """Children's user+system time from bash `times` output, in ticks."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "NA"
    if len(lines) < 2:
        return "NA"
    total = 0.0
    for tok in lines[1].split():
        m = re.fullmatch(r"(\d+)m([\d.]+)s", tok)
        if m:
            total += int(m.group(1)) * 60 + float(m.group(2))
    return str(round(total * clk))


def cmd_row(a):
    text = Path(a.log).read_text(errors="replace") if Path(a.log).exists() else ""
    sent, recv, lost, transmit, active = parse_uclient(text)
    s0, s1 = [int(x) for x in a.srv0.split()], [int(x) for x in a.srv1.split()]
    p0, p1 = sum(map(int, a.peer0.split())), sum(map(int, a.peer1.split()))
    o0, o1 = sum(map(int, a.other0.split())), sum(map(int, a.other1.split()))
    m0, m1 = a.metrics0.split(), a.metrics1.split()

    def delta(i):
        try:
            return str(int(float(m1[i])) - int(float(m0[i])))
        except (ValueError, IndexError):
            return "NA"

    na = lambda v: "NA" if v is None else str(v)  # noqa: E731
    row = [
        a.server, a.load, a.rep, a.flags.strip(), a.rc, na(sent), na(recv), na(lost),
        na(transmit), na(active), f"{float(a.t1) - float(a.t0):.2f}",
        str(s1[0] - s0[0]), str(s1[1] - s0[1]), str(o1 - o0), str(p1 - p0),
        parse_times(a.times, a.clk),
        str(int(a.busy1.split()[0]) - int(a.busy0.split()[0])),
        str(int(a.busy1.split()[1]) - int(a.busy0.split()[1])), delta(0), delta(1),
    ]
    drops = {}
    try:
        for tok in Path(a.drops).read_text().split():
            k, v = tok.split("=")
            drops[k] = v
    except (OSError, ValueError):
        pass
    row += [drops.get(k, "NA") for k in DROP_KINDS]
    print("\t".join(row))


def read_tsv(path):
    lines = Path(path).read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"))) for line in lines[1:] if line.strip()]


def read_meta(path):
    meta = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            parts = shlex.split(v)
            meta[k] = parts[0] if parts else ""
    return meta


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(x, digits=2):
    if x is None:
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}".replace(",", " ")
    return f"{x:.{digits}f}"


def ratio(a, b, digits=2):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.{digits}f}×"


class Load:
    """The runs of one server under one load."""

    def __init__(self, runs, clk):
        self.runs = [r for r in runs if num(r["recv"])]
        self.failed = [r for r in runs if not num(r["recv"])]
        self.clk = clk

    def ok(self):
        return bool(self.runs)

    def per_run(self, fn):
        return [fn(r) for r in self.runs]

    def cpu_us(self, r, part=("srv_utime", "srv_stime")):
        ticks = sum(int(r[p]) for p in part)
        relayed = 2 * int(r["recv"])
        return ticks * 1e6 / self.clk / relayed if relayed else None

    def cpu_exact(self, r):
        n = num(r["to_peer"]), num(r["to_client"])
        if None in n or sum(n) == 0:
            return None
        return (int(r["srv_utime"]) + int(r["srv_stime"])) * 1e6 / self.clk / sum(n)

    def msgs_transmit(self, r):
        t = num(r["transmit_s"])
        return int(r["recv"]) / t if t else None

    def msgs_active(self, r):
        t = num(r["active_s"])
        return int(r["recv"]) / t if t else None

    def loss(self):
        sent = sum(int(r["sent"]) for r in self.runs)
        lost = sum(int(r["lost"]) for r in self.runs)
        return lost, sent

    def others_cores(self, r, ncpu):
        """Cores used by everything but the servers, peer and uclient: all
        CPUs' time not idle (wall x CPUs - idle - iowait from /proc/stat),
        minus what those used."""
        parts = [num(r.get(k)) for k in ("idle_ticks", "srv_utime", "srv_stime",
                                         "other_srv_ticks", "peer_ticks", "gen_ticks")]
        wall = num(r["wall_s"])
        if None in parts or not wall:
            return None
        idle, u, s, o, p, g = parts
        busy = wall * self.clk * ncpu - idle
        return max(0.0, (busy - u - s - o - p - g) / self.clk / wall)


def loss_text(lost, sent):
    if not sent:
        return "—"
    return f"{lost} of {sent} ({100.0 * lost / sent:.2f} %)"


def cmd_section(a):
    runs = read_tsv(a.runs)
    rss = read_tsv(a.rss) if Path(a.rss).exists() else []
    meta = read_meta(a.meta)
    clk = int(meta.get("clk_tck", "100"))
    cflag = meta.get("cflag", "")
    fallback = meta.get("cflag_fallback") == "1"
    ours_tcp = meta.get("ours_tcp_ok", "1") == "1"
    out = []
    w = out.append

    w(HEADING)
    w("")
    w(BEGIN)
    w("")
    w(f"Measured {meta.get('date', '?')} by `benches/turn/compare.sh` (one run, both servers; "
      f"turn-server at `{meta.get('git_rev', '?')}`"
      + (" plus uncommitted changes in `turn-server/`" if meta.get("git_dirty", "0") not in ("", "0") else "")
      + f", {meta.get('coturn_version', 'coturn')} from Debian).")
    w("")
    w("### Machine and load")
    w("")
    w(f"- `nproc`: {meta.get('nproc')}; CPU model (`/proc/cpuinfo`): \"{meta.get('cpu_model')}\", "
      f"{meta.get('cpu_mhz')} MHz; Linux {meta.get('kernel')}; {meta.get('rustc')}.")
    ncpu = int(meta.get("nproc", "1"))
    others = [Load([r], clk).others_cores(r, ncpu) for r in runs if num(r["recv"])]
    others = [x for x in others if x is not None]
    if others:
        w(f"- Other processes (other engineers' builds and tests) used {f(min(others))}–"
          f"{f(max(others))} of a core during the load runs (median {f(med(others))}): "
          "all CPUs' non-idle time (wall time × CPUs − idle and iowait from `/proc/stat`) "
          "minus the servers, the peers and uclient. "
          f"Load average {meta.get('loadavg_start')} at the start, {meta.get('loadavg_end')} at the end.")
    if meta.get("pin") == "1":
        w("- Pinned with `taskset`: the server under test on CPU 0, `turnutils_uclient` and "
          "`turnutils_peer` on CPU 1.")
    else:
        w("- Not pinned (`taskset` missing or fewer than 2 CPUs).")
    w("")
    w("### Command")
    w("")
    w("From the workspace root:")
    w("")
    w("```")
    w("benches/turn/compare.sh            # --no-write: print the section only")
    w("```")
    w("")
    w("It builds `turn-server` (release, shared target dir) and the allocation holder "
      "`benches/turn/holder`, then runs everything on loopback with a watchdog "
      "(`MAX_SECONDS`, default 900; this run took about "
      f"{meta.get('elapsed_min', '?')} min after the build). Raw figures and every log: "
      "`target/turn-compare/` (`runs.tsv`, `rss.tsv`, `uclient-*.log`).")
    w("")
    cr = meta.get("coturn_relay", "61000-63199").split("-")
    orr = meta.get("ours_relay", "63200-65399").split("-")
    w("- coturn: `turnserver -n --listening-ip=127.0.0.1 --relay-ip=127.0.0.1 "
      f"--listening-port={meta.get('coturn_port')} --min-port={cr[0]} --max-port={cr[1]} --lt-cred-mech "
      "--user=test:test123 --realm=bench.local --no-tls --no-dtls --no-cli "
      "--allow-loopback-peers --relay-threads=2` (plus `--log-file`/`--simple-log` "
      f"into the output directory), UDP and TCP on {meta.get('coturn_port')}; `--no-tcp` "
      "for the UDP loads and the memory runs, because coturn's TCP listener (no "
      "SO_REUSEADDR) cannot be bound again while the previous instance's connections "
      "linger in TIME_WAIT.")
    w("- turn-server: `workers = 2`, realm `bench.local`, user `test`/`test123`, UDP and "
      f"TCP on {meta.get('ours_port')}, relay 127.0.0.1:{orr[0]}–{orr[1]}, "
      "`[policy] allow = [\"127.0.0.1/32\"]`, `bandwidth_bytes_per_s = 0`, unauthenticated "
      "rate limit and `max_allocations_per_user` raised out of the way, metrics on "
      f"{meta.get('ours_metrics_port')} (config: `target/turn-compare/ours-load.toml`).")
    w("- Relay ports above the kernel's ephemeral range (32768–60999), so no client socket "
      "can hold one, and away from 40000–49999, which other local tests use.")
    w(f"- Each server has its own `turnutils_peer` ({meta.get('coturn_peer_port')} for coturn, "
      f"{meta.get('ours_peer_port')} for ours), started once at the beginning and "
      "pinned with the load generator. Every uclient run gets a freshly started server "
      "(one allocation made through it first), the only server running: uclient closes its "
      "sockets without deallocating, and allocations left from an earlier run would let a new "
      "client socket land on an old 5-tuple. The runs alternate which server goes first.")
    w(f"- Load, identical for both: `turnutils_uclient {cflag + ' ' if cflag else ''}-z 1 -m "
      f"{meta.get('clients')} -n {meta.get('steady_n')} -l 1200 -e 127.0.0.1 -r PEER_PORT -u test "
      f"-w test123 -p PORT 127.0.0.1` (steady), the same with `-t` (TCP to the server, UDP to "
      f"the peer), and `-z 0 -n {meta.get('flood_n')}` (flood). "
      f"{meta.get('repeat')} runs of each load per server; the tables give the median.")
    if fallback:
        w("- **`-c` for both servers**: our server failed the steady load with RTP/RTCP pairs "
          "(EVEN-PORT reservations, which don't yet work across workers), so every run of "
          "both servers used `-c` (no RTCP allocation). The failed run's log is "
          "`uclient-ours-steady-1-without-c.log`.")
    elif not cflag:
        w("- Without `-c`: uclient allocates RTP/RTCP pairs (EVEN-PORT with the R bit, then "
          "RESERVATION-TOKEN) on both servers.")
    w("- **Relayed datagram** = one datagram forwarded in one direction (client→peer or "
      "peer→client). A message that makes the round trip is 2 relayed datagrams, so "
      "CPU per relayed datagram = Δ(utime+stime) of the server process (fields 14+15 of "
      "`/proc/PID/stat`, all threads, from just before uclient starts to its exit, "
      "setup and teardown included) ÷ (2 × messages received). With no loss this is "
      "exact; with loss the CPU spent on lost messages counts against the server. For "
      "our server the row \"by its own counters\" divides by the datagrams it counted "
      "as forwarded (`turn_relayed_packets_total`), lost or not.")
    w("- **Messages/s**: messages received ÷ uclient's \"Total transmit time\" (whole seconds; "
      "it runs until the last client gives up waiting for lost messages, so it includes a "
      "tail), and ÷ the \"active\" seconds from uclient's per-second progress lines (first "
      "second with messages sent to the first second with all messages received; ±1 s). "
      f"With `-z 1` and {meta.get('clients')} clients uclient offers at most "
      f"{int(meta.get('clients', '40')) * 1000} messages/s.")
    w("- **Receive-buffer drops**: the `drops` column of `/proc/net/udp` (datagrams refused "
      "because a socket's receive buffer was full), sampled every 100 ms during each run and "
      "told apart by port: the server's client-facing socket(s), its relay sockets, the "
      "peer's and uclient's sockets. It says where lost messages were lost (TCP runs lose "
      "nothing on the client side by construction).")
    w("")

    loads = [
        ("steady", f"Steady: `{(cflag + ' ') if cflag else ''}-z 1 -m {meta.get('clients')} -n {meta.get('steady_n')} -l 1200` (UDP)"),
        ("tcp", f"TCP: `{(cflag + ' ') if cflag else ''}-t -z 1 -m {meta.get('clients')} -n {meta.get('steady_n')} -l 1200`"),
        ("flood", f"Flood: `{(cflag + ' ') if cflag else ''}-z 0 -m {meta.get('clients')} -n {meta.get('flood_n')} -l 1200` (UDP)"),
    ]
    summary = {}
    for key, title in loads:
        ours = Load([r for r in runs if r["server"] == "ours" and r["load"] == key], clk)
        cot = Load([r for r in runs if r["server"] == "coturn" and r["load"] == key], clk)
        w(f"### {title}")
        w("")
        if key == "tcp" and not ours_tcp:
            w("turn-server: **not measured** (its TCP listener did not carry the load in this build).")
            w("")
        w("| | turn-server (ours) | coturn | ours / coturn |")
        w("|---|---:|---:|---:|")

        def line(label, fo, fc, digits=2, show_ratio=True):
            w(f"| {label} | {f(fo, digits)} | {f(fc, digits)} | {ratio(fo, fc) if show_ratio else ''} |")

        co = med(ours.per_run(ours.cpu_us)) if ours.ok() else None
        cc = med(cot.per_run(cot.cpu_us)) if cot.ok() else None
        line("server CPU µs per relayed datagram (median)", co, cc)
        runs_o = " / ".join(f(x) for x in ours.per_run(ours.cpu_us)) or "—"
        runs_c = " / ".join(f(x) for x in cot.per_run(cot.cpu_us)) or "—"
        w(f"| … each run | {runs_o} | {runs_c} | |")
        ce = med(ours.per_run(ours.cpu_exact)) if ours.ok() else None
        w(f"| … ours by its own counters (every datagram it forwarded) | {f(ce)} | n/a | |")
        mt_o = med(ours.per_run(ours.msgs_transmit)) if ours.ok() else None
        mt_c = med(cot.per_run(cot.msgs_transmit)) if cot.ok() else None
        line("messages/s (÷ uclient Total transmit time, median)", mt_o, mt_c, 0)
        ma_o = med(ours.per_run(ours.msgs_active)) if ours.ok() else None
        ma_c = med(cot.per_run(cot.msgs_active)) if cot.ok() else None
        line("messages/s (÷ active seconds, median)", ma_o, ma_c, 0)
        lo, so = ours.loss() if ours.ok() else (0, 0)
        lc, sc = cot.loss() if cot.ok() else (0, 0)
        w(f"| messages lost, all runs | {loss_text(lo, so)} | {loss_text(lc, sc)} | |")
        per_o = " / ".join(r["lost"] for r in ours.runs) or "—"
        per_c = " / ".join(r["lost"] for r in cot.runs) or "—"
        w(f"| … each run | {per_o} | {per_c} | |")
        def drops(load):
            tot = {}
            for r in load.runs:
                for k in DROP_KINDS:
                    v = num(r.get("drop_" + k))
                    if v is not None:
                        tot[k] = tot.get(k, 0) + int(v)
            if not tot:
                return "—"
            return " / ".join(str(tot.get(k, "—")) for k in DROP_KINDS)

        w(f"| receive-buffer drops, all runs: server client-side / server relay / peer / uclient "
          f"sockets | {drops(ours)} | {drops(cot)} | |")
        wall_o = med(ours.per_run(lambda r: num(r["wall_s"]))) if ours.ok() else None
        wall_c = med(cot.per_run(lambda r: num(r["wall_s"]))) if cot.ok() else None
        line("uclient wall time, s (median)", wall_o, wall_c, 1)
        if ours.failed or cot.failed:
            w(f"| runs without a uclient summary | {len(ours.failed)} | {len(cot.failed)} | |")
        w("")
        summary[key] = dict(co=co, cc=cc, lo=lo, so=so, lc=lc, sc=sc, ours_ok=ours.ok(),
                            cot_ok=cot.ok())

    # Memory.
    w("### Memory: RSS per allocation")
    w("")
    w("Fresh servers, one warm-up allocation, then `benches/turn/holder` opens N allocations "
      "(each its own client socket on 127.0.1.x: 401, authenticated Allocate, ChannelBind to "
      "a peer, i.e. one allocation with one permission and one channel) and holds them; "
      "RSS per allocation = (VmRSS while held − VmRSS before) ÷ N, 1 KB = 1024 bytes. "
      "Relay addresses 127.0.2.x (ours) and 127.0.3.x (coturn), ports 61000–65535 on each. "
      "Kernel memory of the relay sockets is not in RSS; it is the same for both (one UDP "
      "socket, one file descriptor, per allocation), and the hard limit on descriptors "
      f"({meta.get('nofile_hard')} here) caps N.")
    w("")
    w("| N allocations | | turn-server (ours) | coturn | ours / coturn |")
    w("|---:|---|---:|---:|---:|")
    rss_by = {}
    for r in rss:
        rss_by[(r["server"], r["tag"])] = r

    def per_alloc(r):
        held = num(r["held"]) if r else None
        if not r or not held:
            return None
        return (int(r["rss1_kb"]) - int(r["rss0_kb"])) / held  # KB

    def holder_rate(r):
        if not r:
            return None
        m = re.search(r"rate=(\d+)", r["holder"])
        return float(m.group(1)) if m else None

    best_ours_kb = None
    for tag in ("small", "big"):
        o, c = rss_by.get(("ours", tag)), rss_by.get(("coturn", tag))
        if not o and not c:
            continue
        n = (o or c)["n"]
        po, pc = per_alloc(o), per_alloc(c)
        if tag == "small":
            best_ours_kb = po
        w(f"| {n} | RSS per allocation, KB | {f(po)} | {f(pc)} | {ratio(po, pc)} |")
        w(f"| | VmRSS before → while held, MB | "
          f"{f(int(o['rss0_kb']) / 1024, 1) if o else '—'} → {f(int(o['rss1_kb']) / 1024, 1) if o else '—'} | "
          f"{f(int(c['rss0_kb']) / 1024, 1) if c else '—'} → {f(int(c['rss1_kb']) / 1024, 1) if c else '—'} | |")
        w(f"| | allocations held (ours: `turn_allocations` gauge) | "
          f"{o['held'] if o else '—'} ({o['allocations_metric'] if o else '—'}) | {c['held'] if c else '—'} | |")
        w(f"| | allocations/s while opening (one holder thread) | {f(holder_rate(o), 0)} | {f(holder_rate(c), 0)} | {ratio(holder_rate(o), holder_rate(c))} |")
    mx = rss_by.get(("ours", "max"))
    w("")
    if mx:
        w(f"Ours alone with N = {mx['n']}: "
          f"{mx['held']} held ({mx['allocations_metric']} by its gauge), VmRSS "
          f"{f(int(mx['rss0_kb']) / 1024, 1)} → {f(int(mx['rss1_kb']) / 1024, 1)} MB, "
          f"{f(per_alloc(mx))} KB per allocation; {mx['holder']}.")
        w("")

    # Targets.
    w("### Targets (issue) and where we are")
    w("")
    w("| target | this run | met? |")
    w("|---|---|---|")
    for key, name in (("steady", "steady"), ("tcp", "TCP"), ("flood", "flood")):
        s = summary[key]
        if not s["ours_ok"]:
            w(f"| CPU per relayed datagram ≤ 0.6× coturn ({name}) | not measured | — |")
            continue
        r = s["co"] / s["cc"] if s["co"] and s["cc"] else None
        w(f"| CPU per relayed datagram ≤ 0.6× coturn ({name}) | {f(s['co'])} vs {f(s['cc'])} µs = "
          f"{ratio(s['co'], s['cc'])} | {'yes' if r is not None and r <= 0.6 else 'no'} |")
    for key, name in (("steady", "steady"), ("tcp", "TCP")):
        s = summary[key]
        if not s["ours_ok"]:
            w(f"| 0 loss where coturn has 0 ({name}) | not measured | — |")
            continue
        if s["lc"] == 0:
            met = "yes" if s["lo"] == 0 else "no"
        else:
            met = f"n/a (coturn lost {s['lc']})" + ("; ours lost 0" if s["lo"] == 0 else "")
        w(f"| 0 loss where coturn has 0 ({name}) | ours {s['lo']}, coturn {s['lc']} lost | {met} |")
    s = summary["flood"]
    if s["ours_ok"] and s["cot_ok"]:
        po = s["lo"] / s["so"] if s["so"] else None
        pc = s["lc"] / s["sc"] if s["sc"] else None
        met = "yes" if po is not None and pc is not None and (po < pc or po == pc == 0) else "no"
        w(f"| less loss than coturn under flood | ours {100 * po:.2f} %, coturn {100 * pc:.2f} % | {met} |")
    if best_ours_kb is not None:
        w(f"| ≤ 4 KB RSS per allocation | {f(best_ours_kb)} KB at N = {rss_by[('ours', 'small')]['n']}"
          + (f", {f(per_alloc(rss_by[('ours', 'big')]))} KB at N = {rss_by[('ours', 'big')]['n']}" if ("ours", "big") in rss_by else "")
          + f" | {'yes' if best_ours_kb <= 4 else 'no'} |")
    held_max = max((int(r["held"]) for r in rss if r["server"] == "ours" and num(r["held"])), default=0)
    if held_max >= 100000:
        w(f"| 100,000 allocations held | {held_max} held | yes |")
    else:
        w(f"| 100,000 allocations held | {held_max} in one process here (descriptor hard limit "
          f"{meta.get('nofile_hard')}, one relay socket per allocation); over several processes: "
          f"`benches/turn/hold.sh`, below | see below |")
    w("")
    w(END)
    print("\n".join(out))


def cmd_drops(a):
    """Samples the `drops` column of /proc/net/udp (datagrams a socket's
    full receive buffer refused) until SIGTERM, and writes how many were
    dropped since the start at the server's client-facing sockets, its
    relay sockets, the peer's and uclient's sockets (uclient's are the
    ones connected to the server port). Sockets are told apart by port;
    a socket's count is read at most `interval` before it closes."""
    import signal
    import time

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def kind(local, remote):
        if local == a.server_port:
            return "srv_client"
        if a.relay_lo <= local <= a.relay_hi:
            return "srv_relay"
        if local in (a.peer_port, a.peer_port + 1):
            return "peer"
        if remote == a.server_port:
            return "uclient"
        return None

    base, top = {}, {}
    first = True
    while True:
        for path in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                lines = Path(path).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                f = line.split()
                try:
                    local = int(f[1].rsplit(":", 1)[1], 16)
                    remote = int(f[2].rsplit(":", 1)[1], 16)
                    inode, drops = f[9], int(f[-1])
                except (IndexError, ValueError):
                    continue
                k = kind(local, remote)
                if k is None:
                    continue
                if first:
                    base[inode] = drops
                top[inode] = (k, max(drops, top.get(inode, (k, 0))[1]))
        first = False
        if stop:
            break
        time.sleep(a.interval)
    sums = dict.fromkeys(DROP_KINDS, 0)
    for inode, (k, drops) in top.items():
        sums[k] += drops - base.get(inode, 0)
    Path(a.out).write_text(" ".join(f"{k}={v}" for k, v in sums.items()) + "\n")


def cmd_write(a):
    section = Path(a.section).read_text().rstrip("\n") + "\n"
    path = Path(a.results)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        # Replace only the generated block; hand-written notes after it stay.
        gen = section[section.index(BEGIN):section.index(END) + len(END)]
        start = text.index(BEGIN)
        end = text.index(END) + len(END)
        text = text[:start] + gen + text[end:]
    elif HEADING in text:
        sys.exit(f"{path} has the heading but no generated markers; not touching it")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("row")
    for k in ("server", "load", "rep", "flags", "rc", "log", "times", "t0", "t1", "srv0", "srv1",
              "peer0", "peer1", "other0", "other1", "busy0", "busy1", "metrics0", "metrics1",
              "drops"):
        r.add_argument("--" + k, required=True)
    r.add_argument("--clk", type=int, default=100)
    s = sub.add_parser("section")
    s.add_argument("--runs", required=True)
    s.add_argument("--rss", required=True)
    s.add_argument("--meta", required=True)
    d = sub.add_parser("drops")
    for k in ("server_port", "relay_lo", "relay_hi", "peer_port"):
        d.add_argument("--" + k.replace("_", "-"), dest=k, type=int, required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--interval", type=float, default=0.1)
    wr = sub.add_parser("write")
    wr.add_argument("--section", required=True)
    wr.add_argument("--results", required=True)
    a = p.parse_args()
    {"row": cmd_row, "section": cmd_section, "write": cmd_write, "drops": cmd_drops}[a.cmd](a)


if __name__ == "__main__":
    main()
