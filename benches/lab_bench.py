#!/usr/bin/env python3
"""Helpers for benches/lab_bench.sh (standard library only).

    lab_bench.py retarget RUNBOOK OUT          runbooks/lab.yaml aimed at the bench lab (ports
                                               and lab dir from the LAB_* environment)
    lab_bench.py webhook PORT                  a webhook receiver on 127.0.0.1 (200 to every
                                               POST; runs until killed)
    lab_bench.py offset PROMETHEUS_URL         guest clock minus host clock, from the lab
                                               Prometheus stand-in's sample time; prints JSON
    lab_bench.py run OUT_DIR RECOVER ARGS...   runs recover once, timing it (host clock)
    lab_bench.py analyse ITER_DIR              one iteration: per gate and overhead, JSON
    lab_bench.py brief RESULTS.jsonl           one line on the last iteration, for progress
    lab_bench.py report RESULTS.jsonl          the Markdown table over all iterations

Clocks. Every moment the stand-ins log (`ready=`, `arrived=`) is the guest's CLOCK_REALTIME.
recover's events carry `ts`, the host's wall clock (milliseconds). The guest has no NTP, so the
two differ by an offset that drifts: measured before and after each run (the sample with the
shortest round trip of several, NTP-style: the guest's reading lies inside the round trip, so
the error is at most half of it) and interpolated linearly.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The gates of runbooks/lab.yaml: unit -> (the unit that receives the passing probe, its path).
# tailscale's probe is a command (`tailscale status --json`), not a request: no arrival stamp.
GATES = {
    "tailscale.service": None,
    "prometheus-node-exporter.service": ("prometheus-node-exporter.service", "/metrics"),
    "vllm-qwen36.service": ("vllm-qwen36.service", "/v1/chat/completions"),
    "sglang-mistral.service": ("sglang-mistral.service", "/v1/chat/completions"),
    "dispatcher.service": ("dispatcher.service", "/health"),
    "mcp-server.service": ("mcp-server.service", "/health"),
    "caddy.service": ("caddy.service", "/mcp/health"),
}
UNITS = list(GATES)

ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3}) .*arrived=(?P<at>\d+\.\d+)')
READY = re.compile(r"ready=(\d+\.\d+)")


def die(msg):
    sys.stderr.write(f"lab_bench.py: {msg}\n")
    sys.exit(1)


# --- setup -----------------------------------------------------------------------------------

def retarget(src, out):
    """Replace the lab dir and the host ports of runbooks/lab.yaml, checking each is found."""
    text = open(src, encoding="utf-8").read()
    lab = os.environ["LAB_DIR"]
    subs = [("/var/tmp/recover-lab/", lab.rstrip("/") + "/"), ("port: 2222", "port: " + os.environ["LAB_SSH_PORT"])]
    for var, port in (("VLLM", 18000), ("SGLANG", 18001), ("DISPATCHER", 18002), ("NODE_EXPORTER", 19100),
                      ("CADDY", 18080), ("PROMETHEUS", 19090), ("PUBLIC", 18443)):
        subs.append((f"127.0.0.1:{port}", "127.0.0.1:" + os.environ[f"LAB_{var}_PORT"]))
    for old, new in subs:
        if old not in text:
            die(f"{src}: `{old}` not found: the runbook changed, update retarget()")
        text = text.replace(old, new)
    # runbooks/lab.yaml is an overlay: the copy written elsewhere extends the same base by its
    # absolute path.
    base = re.search(r"^extends:\s*(\S+)\s*$", text, re.M)
    if base:
        path = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(src)), base.group(1)))
        text = text[: base.start(1)] + path + text[base.end(1):]
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_):
        pass


def webhook(port):
    ThreadingHTTPServer(("127.0.0.1", int(port)), Hook).serve_forever()


def offset(prom, samples=9):
    """Guest minus host, seconds: the Prometheus stand-in stamps its answer with the guest's
    time.time() (3 decimals)."""
    url = prom.rstrip("/") + "/api/v1/query?query=up"
    best = None
    for _ in range(samples):
        h0 = time.time()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
        except (OSError, ValueError):
            continue
        h1 = time.time()
        try:
            g = float(body["data"]["result"][0]["value"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        rtt = h1 - h0
        if best is None or rtt < best["rtt"]:
            best = {"host": (h0 + h1) / 2, "offset": g - (h0 + h1) / 2, "rtt": rtt}
        time.sleep(0.05)
    if best is None:
        die(f"no clock sample from {url}")
    print(json.dumps(best))


def run(out_dir, argv):
    """recover, timed on the host's clock; its stdout (--json) and stderr kept."""
    t0 = time.time()
    m0 = time.monotonic()
    with open(os.path.join(out_dir, "recover.jsonl"), "wb") as so, \
            open(os.path.join(out_dir, "recover.stderr"), "wb") as se:
        rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=so, stderr=se)
    wall = time.monotonic() - m0
    with open(os.path.join(out_dir, "run.json"), "w", encoding="utf-8") as f:
        json.dump({"start": t0, "wall": wall, "exit": rc, "argv": argv}, f)
    print(rc)


# --- analysis --------------------------------------------------------------------------------

def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


# systemd's "Started UNIT" (a start job done): the unit became active.
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"


def guest_lines(path):
    """(unit -> [message] of the unit's own processes, unit -> [moments it became active]) from
    `journalctl -o json` of this boot. "active" is journald's receive time of systemd's message,
    on the guest's clock."""
    per, active = {}, {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            unit = e.get("_SYSTEMD_UNIT")
            msg = e.get("MESSAGE")
            if isinstance(unit, str) and isinstance(msg, str):
                per.setdefault(unit, []).append(msg)
            if e.get("MESSAGE_ID") == JOB_DONE and e.get("JOB_TYPE") == "start" and e.get("JOB_RESULT") == "done":
                try:
                    active.setdefault(e.get("UNIT"), []).append(int(e["__REALTIME_TIMESTAMP"]) / 1e6)
                except (KeyError, TypeError, ValueError):
                    continue
    return per, active


def ready_moments(msgs):
    """The moments the unit could first answer, one per start (inference: a completion)."""
    inference = any("loading model" in m for m in msgs)
    out = []
    for m in msgs:
        r = READY.search(m)
        if not r:
            continue
        if inference and "serving completions" not in m:
            continue
        out.append(float(r.group(1)))
    return out


def arrivals(msgs):
    out = []
    for m in msgs:
        a = ACCESS.search(m)
        if a:
            out.append((float(a.group("at")), a.group("method"), a.group("path").split("?")[0],
                        int(a.group("status"))))
    return out


def analyse(d):
    run_info = json.load(open(os.path.join(d, "run.json"), encoding="utf-8"))
    o0 = json.load(open(os.path.join(d, "offset-before.json"), encoding="utf-8"))
    o1 = json.load(open(os.path.join(d, "offset-after.json"), encoding="utf-8"))
    span = o1["host"] - o0["host"]
    drift = (o1["offset"] - o0["offset"]) / span if span > 0 else 0.0

    # How far a host moment moved onto the guest's clock may be off: half the worse round
    # trip of the two clock samples, plus the 1 ms of the two clocks' rounding. The passing
    # probe is looked for up to that far after the step's end (the next request on the same
    # path comes at least 0.5 s later).
    slack = max(o0["rtt"], o1["rtt"]) / 2 + 0.001

    def to_guest(h):
        return h + o0["offset"] + drift * (h - o0["host"])

    events = []
    with open(os.path.join(d, "recover.jsonl"), encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    guest, active = guest_lines(os.path.join(d, "guest-journal.json"))
    started = {e["step"]: e for e in events if e.get("event") == "step_started"}
    finished = [e for e in events if e.get("event") == "step_finished"]
    end = next((e for e in events if e.get("event") == "run_finished"), None)
    if end is None:
        die(f"{d}: no run_finished in recover's output")
    kinds = {}
    gates = []
    for e in finished:
        st = started.get(e["step"], {})
        kind = st.get("kind", "?")
        kinds.setdefault(kind, 0.0)
        kinds[kind] += float(e.get("duration") or 0.0)
        if kind != "start":
            continue
        unit = next((u for u in UNITS if u in (st.get("name", "") + " " + (st.get("command") or ""))), None)
        if unit is None:
            continue
        f_guest = to_guest(ts(e["ts"]))
        s_guest = to_guest(ts(st["ts"]))
        ready = [r for r in ready_moments(guest.get(unit, [])) if s_guest - 1 <= r <= f_guest]
        g = {"unit": unit, "outcome": e.get("outcome"), "duration": e.get("duration"),
             "ready_after_start": None, "latency": None, "latency_probe": None, "probes": None,
             "reply_and_recover": None, "active_after_start": None, "first_probe_after_active": None}
        act = [a for a in active.get(unit, []) if s_guest - 1 <= a <= f_guest]
        if act:
            g["active_after_start"] = act[0] - s_guest
        if ready:
            r = ready[0]
            g["ready_after_start"] = r - s_guest
            g["latency"] = f_guest - r
            probe = GATES.get(unit)
            if probe:
                hits = [a for a in arrivals(guest.get(probe[0], []))
                        if a[2] == probe[1] and s_guest - 1 <= a[0] <= f_guest + slack]
                g["probes"] = len(hits)
                if act and hits:
                    g["first_probe_after_active"] = hits[0][0] - act[0]
                passing = [a for a in hits if a[3] == 200]
                if passing:
                    g["latency_probe"] = passing[-1][0] - r
                    g["reply_and_recover"] = f_guest - passing[-1][0]
        gates.append(g)
    steps_total = sum(kinds.values())
    wall = run_info["wall"]
    detect = sum(g["latency"] for g in gates if g["latency"] is not None)
    res = {
        "dir": d, "exit": run_info["exit"], "outcome": end.get("outcome"), "wall": wall,
        "timeline": end.get("at"), "steps": steps_total, "by_kind": kinds,
        "outside_steps": wall - steps_total, "gates": gates, "detection_total": detect,
        "clock": {"offset": o0["offset"], "drift_ppm": drift * 1e6, "rtt_ms": max(o0["rtt"], o1["rtt"]) * 1e3},
    }
    print(json.dumps(res))


def pct(xs, q):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(-(-q * len(xs) // 1)) - 1))
    return xs[k]


def fmt(xs, unit="s"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{pct(xs, 0.5):.2f} / {pct(xs, 0.9):.2f} / {max(xs):.2f} {unit}"


def report(path):
    rs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    if not rs:
        die("no iterations")
    ok = [r for r in rs if r["exit"] == 0]
    print(f"iterations: {len(rs)}, exit 0: {len(ok)}")
    print()
    print("| gate (start step) | active / ready after step start, median | detection: passing probe arrival − ready (guest clock), p50 / p90 / max | detection: step_finished − ready (offset-corrected), p50 / p90 / max | first probe − active, median | probe reply + recover, median | probes, median |")
    print("|---|---|---|---|---|---|---|")
    all_lat = []
    for u in UNITS:
        gs = [g for r in ok for g in r["gates"] if g["unit"] == u]
        lat = [g["latency"] for g in gs]
        all_lat += [x for x in lat if x is not None]
        rdy = [g["ready_after_start"] for g in gs if g["ready_after_start"] is not None]
        act = [g["active_after_start"] for g in gs if g.get("active_after_start") is not None]
        tail = [g["reply_and_recover"] for g in gs if g["reply_and_recover"] is not None]
        pr = [g["probes"] for g in gs if g["probes"] is not None]
        fp = [g["first_probe_after_active"] for g in gs if g.get("first_probe_after_active") is not None]
        print(f"| `{u}` | {pct(act, 0.5):.2f} / {pct(rdy, 0.5):.2f} s | {fmt([g['latency_probe'] for g in gs])} | {fmt(lat)} | "
              + (f"{pct(fp, 0.5):.2f} s" if fp else "n/a") + " | "
              + (f"{pct(tail, 0.5) * 1e3:.0f} ms" if tail else "n/a") + " | "
              + (f"{pct(pr, 0.5):.0f}" if pr else "n/a") + " |")
    print(f"| all gates (pooled, n={len(all_lat)}) | | | {fmt(all_lat)} | | | |")
    print()
    walls = [r["wall"] for r in ok]
    outside = [r["outside_steps"] for r in ok]
    det = [r["detection_total"] for r in ok]
    ov = [r["outside_steps"] / r["wall"] * 100 for r in ok]
    ovd = [(r["outside_steps"] + r["detection_total"]) / r["wall"] * 100 for r in ok]
    print("| per run | median | min | max |")
    print("|---|---|---|---|")
    for name, xs, unit in (("wall time of `recover run` (host)", walls, "s"),
                           ("recover's overhead: wall − Σ step durations", outside, "s"),
                           ("overhead / wall", ov, "%"),
                           ("gate detection, Σ over the 7 gates (step_finished − ready)", det, "s"),
                           ("(overhead + gate detection) / wall", ovd, "%")):
        print(f"| {name} | {pct(xs, 0.5):.2f} {unit} | {min(xs):.2f} {unit} | {max(xs):.2f} {unit} |")
    kinds = sorted({k for r in ok for k in r["by_kind"]})
    print()
    print("time by step kind, median s: " + ", ".join(
        f"{k} {pct([r['by_kind'].get(k, 0.0) for r in ok], 0.5):.2f}" for k in kinds))
    print("clock: offset guest − host " + ", ".join(f"{r['clock']['offset'] * 1e3:+.1f} ms" for r in ok)
          + "; drift " + ", ".join(f"{r['clock']['drift_ppm']:+.0f} ppm" for r in ok)
          + "; worst round trip " + ", ".join(f"{r['clock']['rtt_ms']:.1f} ms" for r in ok))
    p90 = pct(all_lat, 0.9)
    med_ov = pct(ov, 0.5)
    print()
    print(f"goal: overhead ≤ 1 % of the recovery: median {med_ov:.2f} %, max {max(ov):.2f} % -> "
          + ("PASS" if max(ov) <= 1 else "MISS"))
    print(f"goal: detection latency p90 < 0.5 s (all gates pooled, step_finished − ready): {p90:.2f} s -> "
          + ("PASS" if p90 < 0.5 else "MISS"))
    print("raw: detection latencies (s): " + " ".join(f"{x:.3f}" for x in all_lat))


def brief(path):
    lines = [line for line in open(path, encoding="utf-8") if line.strip()]
    if not lines:
        die("no iterations")
    r = json.loads(lines[-1])
    print(f"wall {r['wall']:.1f} s, outside steps {r['outside_steps']:.2f} s, "
          f"gate detection {r['detection_total']:.2f} s in all")


def main(argv):
    if len(argv) < 2:
        die("usage: see the module docstring")
    cmd, args = argv[1], argv[2:]
    if cmd == "retarget" and len(args) == 2:
        retarget(*args)
    elif cmd == "webhook" and len(args) == 1:
        webhook(args[0])
    elif cmd == "offset" and len(args) == 1:
        offset(args[0])
    elif cmd == "run" and len(args) >= 2:
        run(args[0], args[1:])
    elif cmd == "analyse" and len(args) == 1:
        analyse(args[0])
    elif cmd == "brief" and len(args) == 1:
        brief(args[0])
    elif cmd == "report" and len(args) == 1:
        report(args[0])
    else:
        die(f"bad command: {' '.join(argv[1:])}")


if __name__ == "__main__":
    main(sys.argv)
