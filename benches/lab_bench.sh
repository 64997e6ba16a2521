#!/usr/bin/env bash
# recover's overhead and gate detection latency, measured on the lab VM (tests/lab) with the
# box's own clock beside recover's (issue 15, item 4).
#
#   benches/lab_bench.sh          # as root, from anywhere in the repository; ~2 min an iteration
#
# Run on demand; not part of `cargo test`. What is measured and why: benches/README.md.
#
# It boots its OWN lab (lab dir and host ports below, so it does not disturb another lab on the
# machine), then N times: power cut, boot (waiting for SSH), clock offset, `recover run
# runbooks/lab.yaml --yes --json` (retargeted to these ports), clock offset, the guest's journal
# of the seven units; then per-gate and per-run figures as a Markdown table. `lab down` at exit.
#
# Knobs (environment):
#   RECOVER_LAB_BENCH_RUNS=5        iterations
#   RECOVER_LAB_BENCH_WARMUP=       "VLLM SGLANG" warm-up seconds (default: the image's, 20 and 10)
#   RECOVER_LAB_BENCH_NO_BUILD=1    use the existing target/release/recover
#   RECOVER_LAB_BENCH_BIN=PATH      use this recover binary (no build)
#   RECOVER_LAB_BENCH_KEEP=1        keep the work directory (journals, guest logs)
#   LAB_BOOT_TIMEOUT=600            seconds a boot may take to answer SSH
#   RECOVER_LAB_DIR=/var/tmp/recover-lab-bench, LAB_SSH_PORT=2622, LAB_VLLM_PORT=18600,
#   LAB_SGLANG_PORT=18601, LAB_DISPATCHER_PORT=18602, LAB_MCP_PORT=18603, LAB_CADDY_PORT=18680,
#   LAB_NODE_EXPORTER_PORT=19600, LAB_PROMETHEUS_PORT=19690, LAB_PUBLIC_PORT=18643
#                                   the bench lab's dir and ports
#
# Needs: root (the lab builds its image with debootstrap and chroot), what scripts/setup installs
# for the lab (qemu-system-x86, qemu-utils, debootstrap, e2fsprogs, openssh-client), python3.
# Network: 127.0.0.1 only (a first image build downloads Debian packages).

set -euo pipefail

RUNS=${RECOVER_LAB_BENCH_RUNS:-5}
export RECOVER_LAB_DIR=${RECOVER_LAB_DIR:-/var/tmp/recover-lab-bench}
export LAB_SSH_PORT=${LAB_SSH_PORT:-2622}
export LAB_VLLM_PORT=${LAB_VLLM_PORT:-18600} LAB_SGLANG_PORT=${LAB_SGLANG_PORT:-18601}
export LAB_DISPATCHER_PORT=${LAB_DISPATCHER_PORT:-18602} LAB_MCP_PORT=${LAB_MCP_PORT:-18603}
export LAB_CADDY_PORT=${LAB_CADDY_PORT:-18680} LAB_NODE_EXPORTER_PORT=${LAB_NODE_EXPORTER_PORT:-19600}
export LAB_PROMETHEUS_PORT=${LAB_PROMETHEUS_PORT:-19690} LAB_PUBLIC_PORT=${LAB_PUBLIC_PORT:-18643}
# A loaded host boots the TCG guest slowly (over 180 s at load 17): wait longer than lab's default.
export LAB_BOOT_TIMEOUT=${LAB_BOOT_TIMEOUT:-600}

cd "$(dirname "$0")/.."
ROOT=$(pwd)
LAB=$ROOT/tests/lab/lab
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
LIB=$ROOT/benches/lab_bench.py
UNITS="tailscale.service prometheus-node-exporter.service vllm-qwen36.service sglang-mistral.service dispatcher.service mcp-server.service caddy.service"

die() {
    echo "lab_bench.sh: $*" >&2
    exit 1
}
say() { echo "-- $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

[ "$(id -u)" = 0 ] || die "run as root: the lab needs it (tests/lab/README.md)"
[ "$RUNS" -ge 1 ] || die "RECOVER_LAB_BENCH_RUNS must be at least 1"

BIN=${RECOVER_LAB_BENCH_BIN:-}
if [ -z "$BIN" ]; then
    if [ "${RECOVER_LAB_BENCH_NO_BUILD:-0}" != 1 ]; then
        say "cargo build --release"
        cargo build --release --locked --quiet
    fi
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/recover
fi
[ -x "$BIN" ] || die "$BIN is missing: cargo build --release"

W=$(mktemp -d /tmp/recover-lab-bench.XXXXXX)
HOOK_PID=
cleanup() {
    local rc=$?
    if [ -n "$HOOK_PID" ]; then
        kill "$HOOK_PID" 2>/dev/null || true
        wait "$HOOK_PID" 2>/dev/null || true
    fi
    say "lab down ($RECOVER_LAB_DIR)"
    "$LAB" down >"$W/lab-down.log" 2>&1 || cat "$W/lab-down.log" >&2
    if [ "${RECOVER_LAB_BENCH_KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        say "kept $W"
    else
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the lab ---------------------------------------------------------------------------------

LOAD_BEGIN=$(load)
say "lab up ($RECOVER_LAB_DIR, ssh port $LAB_SSH_PORT; load $LOAD_BEGIN)"
"$LAB" up >"$W/lab-up.log" 2>&1 || { tail -20 "$W/lab-up.log" >&2; die "lab up failed"; }
eval "$("$LAB" env)"
if [ -n "${RECOVER_LAB_BENCH_WARMUP:-}" ]; then
    # shellcheck disable=SC2086
    "$LAB" warmup $RECOVER_LAB_BENCH_WARMUP >/dev/null
fi
"$PY" "$LIB" retarget runbooks/lab.yaml "$W/lab.yaml"
"$BIN" check "$W/lab.yaml" >"$W/check.out" 2>&1 || { cat "$W/check.out" >&2; die "the retargeted runbook does not check"; }

HOOK_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PY" "$LIB" webhook "$HOOK_PORT" &
HOOK_PID=$!

PROM=http://127.0.0.1:$LAB_PROMETHEUS_PORT
: >"$W/results.jsonl"
for i in $(seq 1 "$RUNS"); do
    D=$W/run-$i
    mkdir -p "$D"
    # A power cut and a boot before every run (the first too: `lab up` may have found the lab
    # running): every run is the recovery of a box that lost power (units inactive, caches
    # cold, journald replaying). The boot is not timed: recover starts once SSH answers, so the
    # recovery's wall time excludes it.
    "$LAB" powercut >"$D/lab-power.log" 2>&1 || { cat "$D/lab-power.log" >&2; die "powercut failed"; }
    "$LAB" boot >>"$D/lab-power.log" 2>&1 || { tail -20 "$D/lab-power.log" >&2; die "boot failed"; }
    # Prometheus (enabled at boot) stamps its answers with the guest's clock.
    for _ in $(seq 1 60); do # 60 x 0.5 s
        curl -s -m 2 -o /dev/null "$PROM/-/healthy" && break
        sleep 0.5
    done
    "$PY" "$LIB" offset "$PROM" >"$D/offset-before.json"
    LOAD_RUN=$(load)
    rc=$(RECOVER_WEBHOOK="http://127.0.0.1:$HOOK_PORT/" XDG_STATE_HOME="$W/state" NO_COLOR=1 \
        "$PY" "$LIB" run "$D" env -u SSH_AUTH_SOCK "$BIN" run "$W/lab.yaml" --yes --json --journal "$D/journal.jsonl")
    "$PY" "$LIB" offset "$PROM" >"$D/offset-after.json"
    # shellcheck disable=SC2086
    "$LAB" ssh journalctl -b 0 -o json --no-pager $(printf -- '-u %s ' $UNITS) >"$D/guest-journal.json"
    if [ "$rc" != 0 ]; then
        tail -5 "$D/recover.stderr" >&2
        say "run $i: exit $rc (kept in the figures as a failed run, not in the statistics)"
    fi
    "$PY" "$LIB" analyse "$D" >>"$W/results.jsonl"
    say "run $i: exit $rc, $("$PY" "$LIB" brief "$W/results.jsonl") (load before the run $LOAD_RUN, now $(load))"
done
LOAD_END=$(load)

REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
echo
echo "# recover on the lab VM ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $REV)"
echo
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(uname -sr); load (1/5/15 min) $LOAD_BEGIN at the start, $LOAD_END at the end"
echo "binary: $BIN ($("$BIN" --version 2>/dev/null || echo '?'))"
echo "command: benches/lab_bench.sh ($RUNS runs of runbooks/lab.yaml, power cut + boot between runs; warm-ups: $("$LAB" ssh cat /etc/lab/vllm-qwen36.env /etc/lab/sglang-mistral.env | grep -o '^LAB_WARMUP_SECONDS=.*' | cut -d= -f2 | paste -sd/) s)"
echo
"$PY" "$LIB" report "$W/results.jsonl"
