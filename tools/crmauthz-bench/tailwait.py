#!/usr/bin/env python3
"""What the slowest 1 % of a fixed-rate step wait for (BENCHMARKS.md, "Session 11").

Reads one run of `crmauthz-bench run` made with
    GODEBUG=gctrace=1 crmauthz-bench run … --requests-out DIR/req.csv \
        --sample-out DIR/samples.csv --server-logs DIR/logs 2> DIR/err
and prints, run by run, each pair's p99 ratio, and for every side the share of
its slowest 1 % (latency ≥ its p99) against the share of all its requests
that: were taken late by the generator (start − due > 1 ms), waited in the
generator before being written (sent − start > 1 ms), overlapped a garbage
collection of the side's own server (any phase; STW phases alone), of the
generator, a window of the sampler in which a kernel memory thread ran
(≥ 1 ms), in which niced processes (others' work) used 1.8 cores or more,
in which the side's server's or the generator's threads waited for a core
as long as the window (one thread waiting throughout, on average); or came
from the side's slowest slice / one connection. At the end, for each pair
(crmauthz/floor, and floor/floor-b or crmauthz/crmauthz-b) the runs beyond
2× or under 0.5, with the shares of the slow side's and the fast side's
slowest 1 % averaged over them.

usage: tailwait.py DIR [STEP]   (STEP: the step's name, default 5000/s)
"""
import bisect
import csv
import glob
import os
import re
import sys
from collections import defaultdict

GC = re.compile(r"^gc (\d+) @([\d.]+)s \d+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock")
MS = 1_000_000


def gc_intervals(lines, origin):
    """[(start, end, stw1_end, stw2_start)] in ns on CLOCK_MONOTONIC."""
    out = []
    for line in lines:
        m = GC.match(line)
        if not m:
            continue
        t0 = origin + int(float(m.group(2)) * 1e9)
        a, b, c = (float(m.group(i)) * MS for i in (3, 4, 5))
        out.append((t0, int(t0 + a + b + c), int(t0 + a), int(t0 + a + b)))
    out.sort()
    return out


def overlaps(iv, lo, hi, stw_only=False):
    """Whether [lo, hi) meets one of the sorted intervals iv."""
    starts = [x[0] for x in iv] if not hasattr(iv, "starts") else iv.starts
    i = bisect.bisect_right(starts, hi) - 1
    # The intervals of one list do not overlap (one process's collections,
    # the sampler's windows), so their ends rise with their starts.
    while i >= 0 and iv[i][1] > lo:
        s, e, s1, s2 = iv[i]
        if stw_only:
            if (s < hi and s1 > lo) or (s2 < hi and e > lo):
                return True
        elif s < hi and e > lo:
            return True
        i -= 1
    return False


class Intervals(list):
    def __init__(self, items):
        super().__init__(items)
        self.starts = [x[0] for x in self]


def main():
    d = sys.argv[1]
    step = sys.argv[2] if len(sys.argv) > 2 else "5000/s"
    # samples
    pids, starts, series = {}, {}, defaultdict(list)
    with open(os.path.join(d, "samples.csv")) as f:
        next(f)
        for line in f:
            t, s, v = line.rstrip("\n").split(",")
            t, v = int(t), int(v)
            if s.startswith("pid."):
                pids[s[4:]] = v
            elif s.startswith("start."):
                starts[s[6:]] = v
            else:
                series[s].append((t, v))
    # windows in which a kernel memory thread ran ≥ 1 ms
    kwin = []
    for s, pts in series.items():
        if s.startswith("kthread."):
            for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
                if v1 - v0 >= MS:
                    kwin.append((t0, t1, t0, t1))
    kwin = Intervals(sorted(kwin))

    def windows(name, frac):
        """The sampler's windows in which series name grew by ≥ frac of the window."""
        pts = series.get(name, [])
        return Intervals([(t0, t1, t0, t1) for (t0, v0), (t1, v1) in zip(pts, pts[1:]) if v1 - v0 >= frac * (t1 - t0)])

    # others' niced CPU ≥ 1.8 cores (ticks of 10 ms → ns), the generator's
    # and each server's threads waiting for a core as long as the window (one thread on average)
    for pts in (series.get("cpu.nice", []),):
        series["nice_ns"] = [(t, v * 10 * MS) for t, v in pts]
    nicewin = windows("nice_ns", 1.8)
    waitwin = {n: windows(n + ".wait_ns", 1.0) for n in pids}
    # collections of each server (logs/NAME-PID.log) and of the generator (err)
    gcs = {}
    for name, pid in pids.items():
        p = os.path.join(d, "logs", f"{name}-{pid}.log")
        if os.path.exists(p):
            lines = open(p).read().splitlines()
            origin = int(re.search(r"mono_ns=(\d+)", lines[0]).group(1))
            gcs[name] = Intervals(gc_intervals(lines[1:], origin))
    gcs["generator"] = Intervals(gc_intervals(open(os.path.join(d, "err")).read().splitlines(), starts["generator"]))
    # requests
    reqs = defaultdict(list)  # (run, side) -> rows
    with open(os.path.join(d, "req.csv")) as f:
        for r in csv.DictReader(f):
            if r["step"] != step or r["ok"] != "1":
                continue
            mono = int(r["mono_ns"])
            start = mono + int(r["start_us"]) * 1000
            lat = int(r["latency_us"]) * 1000
            sent = int(r["sent_us"]) if r["sent_us"] else None
            reqs[(int(r["run"]), r["side"])].append((
                lat, start, start + lat, int(r["start_us"]) - int(r["sched_us"]),
                None if sent is None else sent - int(r["start_us"]), int(r["slice"]), int(r["conn"])))
    runs = sorted({k[0] for k in reqs})
    sides = sorted({k[1] for k in reqs}, key=lambda s: ("floor" in s, s))
    p99 = {}
    for k, rows in reqs.items():
        lats = sorted(x[0] for x in rows)
        p99[k] = lats[max(0, -(-99 * len(lats) // 100) - 1)]
    feats = [
        ("late>1ms", lambda x, s: x[3] > 1000),
        ("prewrite>1ms", lambda x, s: x[4] is not None and x[4] > 1000),
        ("ownGC", lambda x, s: s in gcs and overlaps(gcs[s], x[1], x[2])),
        ("ownSTW", lambda x, s: s in gcs and overlaps(gcs[s], x[1], x[2], True)),
        ("genGC", lambda x, s: overlaps(gcs["generator"], x[1], x[2])),
        ("genSTW", lambda x, s: overlaps(gcs["generator"], x[1], x[2], True)),
        ("kthread", lambda x, s: overlaps(kwin, x[1], x[2])),
        ("niced>1.8core", lambda x, s: overlaps(nicewin, x[1], x[2])),
        ("ownWait>1thr", lambda x, s: s in waitwin and overlaps(waitwin[s], x[1], x[2])),
        ("genWait>1thr", lambda x, s: overlaps(waitwin["generator"], x[1], x[2])),
    ]
    print("run " + " ".join(f"{s}_p99" for s in sides))
    for run in runs:
        print(run, " ".join(f"{p99.get((run, s), 0) / 1000:.0f}µs" for s in sides))
    print()
    print("run side p99 | share of the top 1 % (of all): " + " ".join(n for n, _ in feats) + " worst-slice top-conn")
    shares = {}  # (run, side) -> [(top share, all share)] per feature, then the worst slice's share
    for run in runs:
        for s in sides:
            rows = reqs.get((run, s))
            if not rows:
                continue
            top = [x for x in rows if x[0] >= p99[(run, s)]]
            cells = []
            sh = []
            for name, f in feats:
                a = sum(1 for x in top if f(x, s)) / len(top)
                b = sum(1 for x in rows if f(x, s)) / len(rows)
                sh.append((a, b))
                cells.append(f"{100 * a:.0f}({100 * b:.0f})")
            bys = defaultdict(int)
            for x in top:
                bys[x[5]] += 1
            byc = defaultdict(int)
            for x in top:
                byc[x[6]] += 1
            cells.append(f"{100 * max(bys.values()) / len(top):.0f}%")
            sh.append((max(bys.values()) / len(top), 1 / (1 + max(x[5] for x in rows))))
            shares[(run, s)] = sh
            c, n = max(byc.items(), key=lambda kv: kv[1])
            allc = sum(1 for x in rows if x[6] == c)
            cells.append(f"{100 * n / len(top):.0f}%({100 * allc / len(rows):.0f})")
            print(run, s, f"{p99[(run, s)] / 1000:.0f}µs", "|", " ".join(cells))

    # The runs beyond 2× (or under 0.5) of each pair: the slow side's and
    # the fast side's slowest 1 %, the shares averaged over those runs.
    pairs = [("crmauthz", "floor")] + [(a, b) for a, b in (("floor", "floor-b"), ("crmauthz", "crmauthz-b")) if b in sides]
    names = [n for n, _ in feats] + ["worst-slice"]
    print()
    print("pair: runs beyond 2x; mean share of the slow side's top 1 % (of all) | the fast side's: " + " ".join(names))
    for a, b in pairs:
        out = [(run, a, b) if p99[(run, a)] > p99[(run, b)] else (run, b, a) for run in runs
               if (run, a) in p99 and (run, b) in p99 and not 0.5 <= p99[(run, a)] / p99[(run, b)] <= 2]
        if not out:
            print(f"{a}/{b}: none of {len(runs)}")
            continue
        def mean(side_of, i):
            t = sum(shares[(r[0], side_of(r))][i][0] for r in out) / len(out)
            u = sum(shares[(r[0], side_of(r))][i][1] for r in out) / len(out)
            return f"{100 * t:.0f}({100 * u:.0f})"
        print(f"{a}/{b}: {len(out)} of {len(runs)} (runs {' '.join(str(r[0]) for r in out)}) slow:",
              " ".join(mean(lambda r: r[1], i) for i in range(len(names))), "| fast:",
              " ".join(mean(lambda r: r[2], i) for i in range(len(names))))


if __name__ == "__main__":
    main()
