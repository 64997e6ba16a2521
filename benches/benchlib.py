#!/usr/bin/env python3
"""Helpers for benches/bench.sh (standard library only).

    benchlib.py freeport                       a port on 127.0.0.1 that was free a moment ago
    benchlib.py gate-server PORT LOG SEED LO HI
                                               the HTTP endpoint of the gate benchmark (runs until killed)
    benchlib.py gate-trial JOURNAL STATS       one gate trial: healthy instant -> step_finished
    benchlib.py cycles [--journal] FILE...     per-step cycle times, pooled over the files: the
                                               differences between consecutive end stamps, the
                                               first (which includes connecting) left out;
                                               prints "median mean p90 count"
    benchlib.py stats V...                     "median p90 max" of numbers
    benchlib.py hyperfine-median JSON          median seconds per command of a hyperfine export
"""

import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


class Gate:
    """State of the current trial. `/arm` (sent by the stand-in `systemctl start` on the
    target) starts a trial: the endpoint turns healthy at a uniformly random moment LO..HI
    seconds later. `/health` answers 503 before it, 200 from it on. `/stats` reports."""

    def __init__(self, log, seed, lo, hi):
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.log = log
        self.lo, self.hi = lo, hi
        self.armed_at = None
        self.healthy_at = None
        self.probes = []

    def arm(self):
        with self.lock:
            now = time.time()
            self.armed_at = now
            self.healthy_at = now + self.rng.uniform(self.lo, self.hi)
            self.probes = []
            rec = {"event": "armed", "armed_at": now, "healthy_at": self.healthy_at}
        with open(self.log, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def probe(self):
        with self.lock:
            now = time.time()
            self.probes.append(now)
            return self.healthy_at is not None and now >= self.healthy_at

    def stats(self):
        with self.lock:
            return {
                "armed_at": self.armed_at,
                "healthy_at": self.healthy_at,
                "probes": list(self.probes),
            }


def gate_server(port, log, seed, lo, hi):
    gate = Gate(log, int(seed), float(lo), float(hi))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, code, body):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = self.path.split("?")[0]
            if path == "/arm":
                gate.arm()
                self.reply(200, "armed\n")
            elif path == "/health":
                if gate.probe():
                    self.reply(200, "ok\n")
                else:
                    self.reply(503, "loading\n")
            elif path == "/stats":
                self.reply(200, json.dumps(gate.stats()))
            else:
                self.reply(404, "no\n")

        do_POST = do_GET

    srv = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


def events(journal):
    with open(journal) as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_ts(ts):
    # "2025-11-22T04:44:39.123Z" (chrono, millisecond precision, UTC)
    from datetime import datetime, timezone

    return (
        datetime.strptime(ts.rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
        .replace(tzinfo=timezone.utc)
        .timestamp()
    )


def gate_trial(journal, stats_path):
    ev = events(journal)
    st = json.load(open(stats_path))
    run_started = next(e for e in ev if e.get("event") == "run_started")
    fin = next(e for e in ev if e.get("event") == "step_finished")
    sta = next(e for e in ev if e.get("event") == "step_started")
    if fin.get("outcome") != "passed":
        raise SystemExit(f"{journal}: the gate step did not pass: {fin}")
    # Wall clock of the run's t=0: the run_started line's timestamp (ms) minus its `at`.
    t0 = parse_ts(run_started["ts"]) - run_started.get("at", 0.0)
    finished = t0 + fin["at"]
    started = t0 + sta["at"]
    healthy = st["healthy_at"]
    probes = st["probes"]
    print(
        json.dumps(
            {
                "latency": finished - healthy,
                "latency_ts": parse_ts(fin["ts"]) - healthy,
                "healthy_after_start": healthy - started,
                "probes": len(probes),
                "probes_before_healthy": sum(1 for p in probes if p < healthy),
                "probes_per_s": len(probes) / max(1e-9, (probes[-1] - st["armed_at"]))
                if probes
                else 0.0,
                "reason": fin.get("reason"),
            }
        )
    )


def stamps(path, journal):
    if journal:
        return [e["at"] for e in events(path) if e.get("event") == "step_finished"]
    with open(path) as f:
        return [float(line) for line in f if line.strip()]


def cycles(args):
    journal = args and args[0] == "--journal"
    files = args[1:] if journal else args
    pooled = []
    for path in files:
        st = stamps(path, journal)
        pooled += [b - a for a, b in zip(st, st[1:])]
    if not pooled:
        raise SystemExit(f"no cycles in {files}")
    mean = sum(pooled) / len(pooled)
    print(f"{pct(pooled, 0.5):.6f} {mean:.6f} {pct(pooled, 0.9):.6f} {len(pooled)}")


def pct(vals, p):
    vals = sorted(vals)
    if not vals:
        return float("nan")
    k = (len(vals) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (k - lo)


def stats(args):
    vals = [float(a) for a in args]
    print(f"{pct(vals, 0.5):.6f} {pct(vals, 0.9):.6f} {max(vals):.6f}")


def hyperfine_median(path):
    for r in json.load(open(path))["results"]:
        print(f"{r['median']:.6f}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "freeport":
        freeport()
    elif cmd == "gate-server":
        gate_server(*args)
    elif cmd == "gate-trial":
        gate_trial(*args)
    elif cmd == "cycles":
        cycles(args)
    elif cmd == "stats":
        stats(args)
    elif cmd == "hyperfine-median":
        hyperfine_median(*args)
    else:
        raise SystemExit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()
