#!/usr/bin/python3
"""Stand-ins for the Spark's services, inside the lab VM. Standard library only.

One program, one mode per unit (see the units in /etc/systemd/system):

  inference      vLLM / SGLang: GET /health is 200 at once; POST /v1/chat/completions is 503
                 during the warm-up (LAB_WARMUP_SECONDS after start), then answers an
                 OpenAI-style chat completion; GET /v1/models. The `hang` fault makes
                 completions hang (while /health stays 200).
  node-exporter  GET /metrics in Prometheus text format.
  prometheus     GET /api/v1/query?query=up...: value "1" while node-exporter answers /metrics.
  dispatcher     GET /health: 200 only while both inference units answer /health;
                 POST /v1/chat/completions is routed to one of them by "model".
  mcp            GET /health.
  caddy          reverse proxy: /mcp/* -> mcp-server, /v1/* and /dispatcher/* -> dispatcher.
  tailscaled     a daemon that does nothing (the `tailscale` CLI asks systemd about it).

Configuration comes from the environment (the units' Environment= and /etc/lab/*.env), or
from flags on the command line (--unit, --mode, --port, --model, --warmup), which win: the
weak lab unit (embeddings.service) hard-codes its settings in ExecStart= that way.
Faults are flag files under /etc/lab/faults/ (one unit name a line) that are read at start
(unit-fails, start-limit) or at every request (hang); `lab fault clear` removes them. A hang is
a state of the process, as a wedged CUDA context is: the first process of the unit that meets
the flag claims it (/run/lab/hang.UNIT holds its pid) and hangs; a process that replaces it
(after a SIGKILL and systemd's restart) serves again.

Timing, on the guest's clock (CLOCK_REALTIME, seconds since the epoch, microseconds), for
benches/lab_bench.sh: each access line ends with `arrived=T`, when the request line was read;
the line that says a unit can answer ("listening on ...", or for inference "model ... loaded")
ends with `ready=T`, the first moment it could answer (a completion, for inference).
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAGS = {"--unit": "LAB_UNIT", "--mode": "LAB_MODE", "--port": "LAB_PORT", "--model": "LAB_MODEL",
         "--warmup": "LAB_WARMUP_SECONDS"}


def apply_flags(argv):
    """--NAME VALUE or --NAME=VALUE on the command line override the environment."""
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name not in FLAGS:
            sys.exit(f"standin.py: unknown argument {arg!r}")
        if not eq:
            if not args:
                sys.exit(f"standin.py: {name} needs a value")
            value = args.pop(0)
        os.environ[FLAGS[name]] = value


apply_flags(sys.argv[1:])

FAULT_DIR = os.environ.get("LAB_FAULT_DIR", "/etc/lab/faults")
CLAIM_DIR = os.environ.get("LAB_CLAIM_DIR", "/run/lab")
UNIT = os.environ.get("LAB_UNIT", "unknown.service")
NAME = UNIT.removesuffix(".service")
MODE = os.environ.get("LAB_MODE", "")
STARTED = time.monotonic()
STARTED_WALL = time.time()

# Exit status for the `unit-fails` fault: the units list it in RestartPreventExitStatus=, so the
# unit fails once and stays failed (Result=exit-code), as a unit with a broken config would.
EXIT_CONFIG = 78
EXIT_TEMPFAIL = 75


def log(msg, level=6):
    """One line to stderr, with a syslog priority prefix that journald understands."""
    sys.stderr.write(f"<{level}>{NAME}: {msg}\n")
    sys.stderr.flush()


def fault_active(name):
    """True when /etc/lab/faults/NAME lists this unit (one unit name a line)."""
    try:
        with open(os.path.join(FAULT_DIR, name), encoding="utf-8") as f:
            units = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    except FileNotFoundError:
        return False
    return UNIT in units or NAME in units


def hang_claimed():
    """True when this process is the hung one: the `hang` flag lists the unit and the claim
    (/run/lab/hang.UNIT) is this process's, or there is none yet and this process takes it."""
    if not fault_active("hang"):
        return False
    path = os.path.join(CLAIM_DIR, f"hang.{UNIT}")
    me = str(os.getpid())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(me + "\n")
        return True
    except FileExistsError:
        pass
    except OSError as e:
        log(f"cannot claim the hang in {path}: {e}; hanging anyway", 3)
        return True
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() == me
    except OSError:
        return False


def sd_notify(msg):
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.sendall(msg.encode())


def env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


def fetch(url, method="GET", body=None, headers=None, timeout=2.0):
    """(status, headers, body) of an HTTP request; status 0 when the server cannot be reached."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, OSError) as e:
        return 0, {}, str(e).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "lab-standin/1"
    sys_version = ""

    arrived = None

    def parse_request(self):
        self.arrived = time.time()
        return super().parse_request()

    def log_message(self, fmt, *args):
        at = f" arrived={self.arrived:.6f}" if self.arrived is not None else ""
        log(f"{self.address_string()} {fmt % args}{at}")

    def send(self, status, body, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def route(self):
        self.send(404, {"error": "not found", "path": self.path})

    def do_GET(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_HEAD(self):
        self.route()


# ---------------------------------------------------------------------------------------------
# inference (vllm-qwen36, sglang-mistral)

class Inference(Handler):
    model = os.environ.get("LAB_MODEL", "lab-model")
    warmup = env_float("LAB_WARMUP_SECONDS", 20)

    def ready(self):
        return time.monotonic() - STARTED >= self.warmup

    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health" and self.command in ("GET", "HEAD"):
            return self.send(200, b"", "text/plain")
        if path == "/v1/models" and self.command in ("GET", "HEAD"):
            return self.send(200, {"object": "list", "data": [
                {"id": self.model, "object": "model", "created": int(STARTED_WALL),
                 "owned_by": NAME, "max_model_len": 32768}]})
        if path in ("/v1/chat/completions", "/v1/completions") and self.command == "POST":
            return self.completion(path)
        return super().route()

    def completion(self, path):
        raw = self.body()
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            return self.send(400, {"object": "error", "message": "body is not JSON",
                                   "type": "BadRequestError", "code": 400})
        if not self.ready():
            left = self.warmup - (time.monotonic() - STARTED)
            return self.send(503, {"object": "error", "type": "ServiceUnavailableError", "code": 503,
                                   "message": f"model {self.model} is loading ({left:.0f}s left)"})
        if hang_claimed():
            log(f"completion request accepted; the engine is hung (fault: hang, pid {os.getpid()})", 4)
            # Hang for as long as the flag stays (the client's deadline ends it first); bounded by
            # the process's life and rechecked each second so `lab fault clear` releases it.
            while hang_claimed():
                time.sleep(1)
        prompt = ""
        for m in req.get("messages") or []:
            if isinstance(m, dict) and m.get("role") == "user":
                prompt = str(m.get("content", ""))
        text = f"Hello from {self.model} on spark-lab. You said: {prompt[:200]}".strip()
        now = int(time.time())
        usage = {"prompt_tokens": max(1, len(prompt.split())), "completion_tokens": len(text.split()),
                 "total_tokens": max(1, len(prompt.split())) + len(text.split())}
        if path == "/v1/completions":
            return self.send(200, {"id": f"cmpl-lab{now}", "object": "text_completion", "created": now,
                                   "model": self.model, "choices": [{"index": 0, "text": text,
                                   "logprobs": None, "finish_reason": "stop"}], "usage": usage})
        return self.send(200, {
            "id": f"chatcmpl-lab{now}", "object": "chat.completion", "created": now,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": usage})


def inference_start():
    warm = Inference.warmup
    log(f"loading model {Inference.model} (warm-up {warm:g}s)")
    # Completions answer once the warm-up is over (ready() uses the same start) and the server
    # listens, which it does before this is called.
    ready = max(time.time(), STARTED_WALL + warm)

    def announce():
        log(f"model {Inference.model} loaded; serving completions ready={ready:.6f}")
    t = threading.Timer(warm, announce)
    t.daemon = True
    t.start()


# ---------------------------------------------------------------------------------------------
# node-exporter, prometheus

class NodeExporter(Handler):
    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if path != "/metrics" or self.command not in ("GET", "HEAD"):
            return super().route()
        load1 = load5 = load15 = 0.0
        with open("/proc/loadavg", encoding="ascii") as f:
            load1, load5, load15 = (float(x) for x in f.read().split()[:3])
        mem = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                k, v = line.split(":", 1)
                mem[k] = int(v.split()[0]) * 1024
        with open("/proc/uptime", encoding="ascii") as f:
            up = float(f.read().split()[0])
        boot = time.time() - up
        text = (
            "# HELP node_boot_time_seconds Node boot time, in unixtime.\n"
            "# TYPE node_boot_time_seconds gauge\n"
            f"node_boot_time_seconds {boot:.0f}\n"
            "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\n"
            f"node_load1 {load1}\n"
            "# HELP node_load5 5m load average.\n# TYPE node_load5 gauge\n"
            f"node_load5 {load5}\n"
            "# HELP node_load15 15m load average.\n# TYPE node_load15 gauge\n"
            f"node_load15 {load15}\n"
            "# HELP node_memory_MemTotal_bytes Memory information field MemTotal_bytes.\n"
            "# TYPE node_memory_MemTotal_bytes gauge\n"
            f"node_memory_MemTotal_bytes {mem.get('MemTotal', 0):.6e}\n"
            "# HELP node_memory_MemAvailable_bytes Memory information field MemAvailable_bytes.\n"
            "# TYPE node_memory_MemAvailable_bytes gauge\n"
            f"node_memory_MemAvailable_bytes {mem.get('MemAvailable', 0):.6e}\n"
            "# HELP node_exporter_build_info A metric with a constant '1' value.\n"
            "# TYPE node_exporter_build_info gauge\n"
            'node_exporter_build_info{goversion="go1.19.8",version="1.5.0-lab"} 1\n'
        )
        return self.send(200, text, "text/plain; version=0.0.4; charset=utf-8")


class Prometheus(Handler):
    node = os.environ.get("LAB_NODE_EXPORTER_URL", "http://127.0.0.1:9100/metrics")
    instance = os.environ.get("LAB_NODE_INSTANCE", "spark-lab:9100")

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        if u.path in ("/-/healthy", "/-/ready"):
            return self.send(200, "Prometheus Server is Ready.\n", "text/plain")
        if u.path != "/api/v1/query" or self.command not in ("GET", "POST"):
            return super().route()
        q = urllib.parse.parse_qs(u.query)
        if self.command == "POST":
            q.update(urllib.parse.parse_qs(self.body().decode(errors="replace")))
        query = (q.get("query") or [""])[0]
        if not query:
            return self.send(400, {"status": "error", "errorType": "bad_data",
                                   "error": "invalid parameter \"query\": empty query"})
        result = []
        if query.strip().startswith("up"):
            status, _, body = fetch(self.node, timeout=2.0)
            up = "1" if status == 200 and b"node_" in body else "0"
            result = [{"metric": {"__name__": "up", "instance": self.instance, "job": "node"},
                       "value": [round(time.time(), 3), up]}]
        return self.send(200, {"status": "success",
                               "data": {"resultType": "vector", "result": result}})


# ---------------------------------------------------------------------------------------------
# dispatcher, mcp-server, caddy

def proxy(handler, base, path):
    body = handler.body() if handler.command == "POST" else None
    headers = {"Content-Type": handler.headers.get("Content-Type", "application/json")}
    status, hdrs, out = fetch(base + path, handler.command, body, headers, timeout=600.0)
    if status == 0:
        return handler.send(502, {"error": "upstream unreachable", "upstream": base,
                                  "detail": out.decode(errors="replace")})
    return handler.send(status, out, hdrs.get("Content-Type", "application/octet-stream"))


class Dispatcher(Handler):
    primary = os.environ.get("LAB_PRIMARY_URL", "http://127.0.0.1:8000")
    secondary = os.environ.get("LAB_SECONDARY_URL", "http://127.0.0.1:30000")

    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health" and self.command in ("GET", "HEAD"):
            checks = {}
            for name, base in (("primary", self.primary), ("secondary", self.secondary)):
                checks[name] = fetch(base + "/health", timeout=2.0)[0]
            ok = all(s == 200 for s in checks.values())
            return self.send(200 if ok else 503, {"status": "ok" if ok else "degraded",
                                                  "upstreams": checks})
        if path.startswith("/v1/") and self.command == "POST":
            raw = self.body()
            try:
                model = str(json.loads(raw or b"{}").get("model", ""))
            except (ValueError, AttributeError):
                model = ""
            base = self.secondary if "mistral" in model.lower() else self.primary
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            status, hdrs, out = fetch(base + path, "POST", raw, headers, timeout=600.0)
            if status == 0:
                return self.send(502, {"error": "upstream unreachable", "upstream": base})
            return self.send(status, out, hdrs.get("Content-Type", "application/json"))
        if path == "/v1/models" and self.command == "GET":
            return proxy(self, self.primary, path)
        return super().route()


class Mcp(Handler):
    def route(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health" and self.command in ("GET", "HEAD"):
            return self.send(200, {"status": "ok", "server": "spark-lab-mcp", "tools": 3})
        return super().route()


class Caddy(Handler):
    mcp = os.environ.get("LAB_MCP_URL", "http://127.0.0.1:8200")
    dispatcher = os.environ.get("LAB_DISPATCHER_URL", "http://127.0.0.1:8100")

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        rest = u.path + ("?" + u.query if u.query else "")
        if u.path == "/" and self.command in ("GET", "HEAD"):
            return self.send(200, "spark-lab\n", "text/plain")
        if u.path.startswith("/mcp/"):
            return proxy(self, self.mcp, rest[len("/mcp"):])
        if u.path.startswith("/dispatcher/"):
            return proxy(self, self.dispatcher, rest[len("/dispatcher"):])
        if u.path.startswith("/v1/"):
            return proxy(self, self.dispatcher, rest)
        return super().route()


# ---------------------------------------------------------------------------------------------

MODES = {"inference": Inference, "node-exporter": NodeExporter, "prometheus": Prometheus,
         "dispatcher": Dispatcher, "mcp": Mcp, "caddy": Caddy}


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if fault_active("unit-fails"):
        log(f"fatal: cannot load /etc/lab/{NAME}.conf: invalid configuration (fault: unit-fails)", 3)
        sys.exit(EXIT_CONFIG)
    if fault_active("crash-loop"):
        log("error: failed to initialise: address family not supported (fault: crash-loop)", 3)
        sys.exit(1)
    if fault_active("start-limit"):
        # Up, then gone at once with EX_TEMPFAIL: the units declare 75 both a success
        # (SuccessExitStatus=) and a reason to restart (RestartForceExitStatus=), so the unit loops
        # until its start limit and ends with Result=start-limit-hit. (A plain exit 1 loop, the
        # crash-loop fault, ends with Result=exit-code on systemd 252: the first failure's result
        # sticks, systemd issue #32203.)
        sd_notify("READY=1")
        log("error: lost the GPU context, exiting for a restart (fault: start-limit)", 3)
        sys.exit(EXIT_TEMPFAIL)
    if MODE == "tailscaled":
        log(f"tailscaled: backend state Running, self spark-lab (stand-in) ready={time.time():.6f}")
        sd_notify("READY=1\nSTATUS=Running")
        while True:
            time.sleep(3600)
    cls = MODES.get(MODE)
    if cls is None:
        log(f"unknown LAB_MODE {MODE!r}", 3)
        sys.exit(2)
    port = int(os.environ.get("LAB_PORT", "0"))
    bind = os.environ.get("LAB_BIND", "0.0.0.0")
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer((bind, port), cls)
    if MODE == "inference":
        inference_start()
    # Listening since the constructor: a request now is queued and answered by serve_forever.
    log(f"listening on {bind}:{port} (mode {MODE}) ready={time.time():.6f}")
    sd_notify(f"READY=1\nSTATUS=listening on {bind}:{port}")
    srv.serve_forever()


if __name__ == "__main__":
    main()
