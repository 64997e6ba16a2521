#!/usr/bin/env bash
# Performance figures for `recover`, side by side, from one run against a real OpenSSH sshd on
# 127.0.0.1 that this script starts itself (own host key, client key, known_hosts and
# ssh_config in a temporary directory) and kills at exit.
#
#   benches/bench.sh          # as root, from anywhere in the repository
#
# Run on demand; not part of `cargo test`. What is measured and why: benches/README.md.
#
# Knobs (environment):
#   RECOVER_BENCH_STEPS=200         steps in the per-step runbook (N)
#   RECOVER_BENCH_STEPS_SMALL=20    the short run subtracted to get the marginal cost per step
#   RECOVER_BENCH_REPS=5            repetitions of the recover and ssh-loop runs (median kept)
#   RECOVER_BENCH_GATE_TRIALS=10    gate-detection trials
#   RECOVER_BENCH_SLOW_SHELL_TRIALS=5   gate trials with a 0.3 s shell start-up on the target (0: none)
#   RECOVER_BENCH_SEED=42           seed of the random healthy moments
#   RECOVER_BENCH_ANSIBLE=1         0 skips ansible-playbook
#   RECOVER_BENCH_CACHE=/var/tmp/recover-bench   where the ansible-core virtualenv is kept
#   RECOVER_BENCH_NO_BUILD=1        use the existing target/release/recover
#   RECOVER_BENCH_KEEP=1            keep the temporary directory (journals, logs)
#
# Needs: root (it creates the unprivileged user `recover-bench` once and runs sshd), OpenSSH
# server and client, python3 (standard library; `venv` for ansible), hyperfine, GNU time, curl.
# Network: 127.0.0.1 only, except the one-time `pip install ansible-core` into the cache.

set -euo pipefail

N=${RECOVER_BENCH_STEPS:-200}
N_SMALL=${RECOVER_BENCH_STEPS_SMALL:-20}
REPS=${RECOVER_BENCH_REPS:-5}
GATE_TRIALS=${RECOVER_BENCH_GATE_TRIALS:-10}
SLOW_TRIALS=${RECOVER_BENCH_SLOW_SHELL_TRIALS:-5}
SEED=${RECOVER_BENCH_SEED:-42}
WITH_ANSIBLE=${RECOVER_BENCH_ANSIBLE:-1}
CACHE=${RECOVER_BENCH_CACHE:-/var/tmp/recover-bench}
ANSIBLE_SPEC='ansible-core==2.18.*'
BENCH_USER=recover-bench
SSHD=/usr/sbin/sshd

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BENCHLIB=$ROOT/benches/benchlib.py
# The system python: a pyenv shim on PATH would add its own start-up to every helper call.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)

die() {
    echo "bench.sh: $*" >&2
    exit 1
}
say() { echo "-- $*" >&2; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
now_ns() { date +%s%N; }
# seconds between two now_ns values
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b - a) / 1e9 }'; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }'; }
median() { "$PY" "$BENCHLIB" stats "$@" | cut -d' ' -f1; }
verdict() { awk "BEGIN { exit !($1) }" && echo PASS || echo MISS; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
jget() { "$PY" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

[ "$(id -u)" = 0 ] || die "run as root: it creates the user $BENCH_USER and runs sshd"
for t in ssh ssh-keygen hyperfine curl /usr/bin/time "$SSHD"; do
    command -v "$t" >/dev/null || die "$t is missing (scripts/setup installs openssh-server; apt-get install hyperfine time curl)"
done
[ "$N" -gt "$N_SMALL" ] || die "RECOVER_BENCH_STEPS must exceed RECOVER_BENCH_STEPS_SMALL"

# --- the binary ------------------------------------------------------------------------------

if [ "${RECOVER_BENCH_NO_BUILD:-0}" != 1 ]; then
    say "cargo build --release"
    cargo build --release --locked --quiet
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/recover
[ -x "$BIN" ] || die "$BIN is missing: cargo build --release"

# --- cleanup ---------------------------------------------------------------------------------

W=$(mktemp -d /tmp/recover-bench.XXXXXX)
# The bench user's session reads authorized_keys from here (sshd reads it as that user).
chmod 755 "$W"
SSHD_PID=
GATE_PID=
BENCH_HOME=

descendants() {
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}

# Stop the tree first (a stopped process cannot fork), then kill it: listener, per-connection
# sshd processes and the remote commands under them.
kill_tree() {
    local pids
    kill -STOP "$1" 2>/dev/null || return 0
    pids="$1 $(descendants "$1")"
    # shellcheck disable=SC2086
    kill -STOP $pids 2>/dev/null || true
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

cleanup() {
    set +e
    for cm in "$W"/cm-*; do
        [ -S "$cm" ] && ssh -F "$W/ssh_config" -o ControlPath="$cm" -O exit "$BENCH_USER" >/dev/null 2>&1
    done
    [ -n "$GATE_PID" ] && kill "$GATE_PID" 2>/dev/null && wait "$GATE_PID" 2>/dev/null
    [ -n "$SSHD_PID" ] && kill_tree "$SSHD_PID" && wait "$SSHD_PID" 2>/dev/null
    if [ -n "$BENCH_HOME" ]; then
        rm -f "$BENCH_HOME/.bench-gate-port"
        : >"$BENCH_HOME/.bashrc"
    fi
    if [ -n "$CG" ]; then
        for _ in $(seq 1 50); do # 50 x 100 ms, while the last processes exit
            rmdir "$CG/client" "$CG/target" "$CG" 2>/dev/null && break
            sleep 0.1
        done
        [ -d "$CG" ] && echo "bench.sh: could not remove the cgroup $CG" >&2
    fi
    if [ "${RECOVER_BENCH_KEEP:-0}" = 1 ]; then
        echo "kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the target user -------------------------------------------------------------------------
# root's ~/.bashrc here runs `pyenv init`, which costs ~0.3 s on every remote command for every
# client (bash sources ~/.bashrc for commands sent over ssh). All three clients log in instead
# as an unprivileged user with an empty ~/.bashrc: the same remote environment for each.

if ! id "$BENCH_USER" >/dev/null 2>&1; then
    say "creating the user $BENCH_USER (once)"
    useradd --create-home --shell /bin/bash --comment "recover benches/bench.sh" "$BENCH_USER"
fi
# Without PAM, sshd refuses a locked account (password "!..."); "*" is no password, not locked.
case "$(getent shadow "$BENCH_USER" | cut -d: -f2)" in
    '!'*) usermod -p '*' "$BENCH_USER" ;;
esac
BENCH_HOME=$(getent passwd "$BENCH_USER" | cut -d: -f6)
BENCH_GROUP=$(id -gn "$BENCH_USER")
install -d -o "$BENCH_USER" -g "$BENCH_GROUP" -m 700 "$BENCH_HOME/.ssh"
install -d -o "$BENCH_USER" -g "$BENCH_GROUP" -m 755 "$BENCH_HOME/bin"
: >"$BENCH_HOME/.bashrc"
chown "$BENCH_USER:$BENCH_GROUP" "$BENCH_HOME/.bashrc"
# There is no systemd on this host: a stand-in `systemctl`, first on the user's PATH (set by
# sshd from ~/.ssh/environment, PermitUserEnvironment yes). `start` arms the gate endpoint
# (the healthy moment is drawn from then); `show` always reports the unit active.
cat >"$BENCH_HOME/bin/systemctl" <<'EOF'
#!/bin/sh
# Stand-in systemctl for recover's benches/bench.sh: the unit state is stubbed.
case "$1" in
start)
    port=$(cat "$HOME/.bench-gate-port" 2>/dev/null)
    [ -n "$port" ] && curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/arm"
    exit 0 ;;
show) printf 'LoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n' ;;
*) exit 0 ;;
esac
EOF
chmod 755 "$BENCH_HOME/bin/systemctl"
chown "$BENCH_USER:$BENCH_GROUP" "$BENCH_HOME/bin/systemctl"
echo "PATH=$BENCH_HOME/bin:/usr/local/bin:/usr/bin:/bin" >"$BENCH_HOME/.ssh/environment"
chown "$BENCH_USER:$BENCH_GROUP" "$BENCH_HOME/.ssh/environment"

# --- CPU accounting --------------------------------------------------------------------------
# Where a step's time goes, independently of the machine's other load: CPU time of the client
# side (the client, its children and its daemonised ssh master) and of the target side (the
# sshd listener and everything under it: connection processes, sessions, remote commands),
# from two cgroup-v1 cpuacct groups made for this run and removed at exit. Skipped (n/a) where
# cgroup v1 cpuacct is not writable.

CG=
CG_ROOT=/sys/fs/cgroup/cpuacct
if [ -w "$CG_ROOT" ] && mkdir "$CG_ROOT/recover-bench-$$" 2>/dev/null; then
    CG=$CG_ROOT/recover-bench-$$
    mkdir "$CG/client" "$CG/target"
fi
# In a measuring subshell: join the client group, note both counters.
cpu_begin() {
    [ -n "$CG" ] || return 0
    echo "$BASHPID" >"$CG/client/cgroup.procs"
    read -r CPU_C0 <"$CG/client/cpuacct.usage"
    read -r CPU_T0 <"$CG/target/cpuacct.usage"
}
# "client_seconds target_seconds" of the measured span, to FILE.
cpu_end() { # FILE
    local c t
    if [ -z "$CG" ]; then
        echo "nan nan" >"$1"
        return 0
    fi
    sleep 0.2 # let the target's connection processes finish closing
    read -r c <"$CG/client/cpuacct.usage"
    read -r t <"$CG/target/cpuacct.usage"
    echo "$(calc "($c - $CPU_C0) / 1e9") $(calc "($t - $CPU_T0) / 1e9")" >"$1"
}

# --- sshd on 127.0.0.1 -----------------------------------------------------------------------

mkdir -p /run/sshd
chmod 755 /run/sshd
ssh-keygen -q -N '' -t ed25519 -C recover-bench-host -f "$W/host_key"
ssh-keygen -q -N '' -t ed25519 -C recover-bench-client -f "$W/id_ed25519"
cp "$W/id_ed25519.pub" "$W/authorized_keys"
chmod 644 "$W/authorized_keys"
PORT=$("$PY" "$BENCHLIB" freeport)

cat >"$W/sshd_config" <<EOF
# written by benches/bench.sh
ListenAddress 127.0.0.1
Port $PORT
HostKey $W/host_key
AuthorizedKeysFile $W/authorized_keys
PidFile $W/sshd.pid
AllowUsers $BENCH_USER
PermitRootLogin no
PermitUserEnvironment yes
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxSessions 100
MaxStartups 100:30:200
PrintMotd no
PrintLastLog no
X11Forwarding no
LogLevel INFO
EOF
echo "[127.0.0.1]:$PORT $(cat "$W/host_key.pub")" >"$W/known_hosts"
cat >"$W/ssh_config" <<EOF
# written by benches/bench.sh
Host $BENCH_USER 127.0.0.1
  HostName 127.0.0.1
  Port $PORT
  User $BENCH_USER
  IdentityFile $W/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $W/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  CheckHostIP no
  UpdateHostKeys no
  BatchMode yes
  ConnectTimeout 5
EOF

say "starting sshd on 127.0.0.1:$PORT"
"$SSHD" -D -e -f "$W/sshd_config" </dev/null >/dev/null 2>>"$W/sshd.log" &
SSHD_PID=$!
[ -n "$CG" ] && echo "$SSHD_PID" >"$CG/target/cgroup.procs"
ready=0
for _ in $(seq 1 200); do # 200 x 50 ms
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$W/sshd.log" >&2; die "sshd exited"; }
    if [ -e "$W/sshd.pid" ] && ssh -F "$W/ssh_config" "$BENCH_USER" true </dev/null 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.05
done
[ "$ready" = 1 ] || { cat "$W/sshd.log" >&2; die "sshd not ready after 10 s"; }
remote_path=$(ssh -F "$W/ssh_config" "$BENCH_USER" 'command -v systemctl' </dev/null)
[ "$remote_path" = "$BENCH_HOME/bin/systemctl" ] || die "the stand-in systemctl is not first on the remote PATH ($remote_path)"

target_yaml() {
    cat <<EOF
targets:
  lab:
    host: 127.0.0.1
    port: $PORT
    user: $BENCH_USER
    identity: $W/id_ed25519
    known_hosts: $W/known_hosts
    ssh_config: $W/ssh_config
EOF
}

recover_env() {
    env -u SSH_AUTH_SOCK XDG_STATE_HOME="$W/state" NO_COLOR=1 "$@"
}

# ==============================================================================================
# 1. Per-step cost
# ==============================================================================================

gen_runbook() { # N PATH
    {
        echo "name: bench"
        echo "title: recover per-step benchmark, $1 trivial remote steps"
        echo "budget: 30m"
        target_yaml
        echo "phases:"
        echo "  - name: trivial steps"
        echo "    window: 0m-30m"
        echo "    steps:"
        for i in $(seq 1 "$1"); do
            printf '      - name: step %03d\n        run: "true"\n        mutates: false\n' "$i"
        done
    } >"$2"
}

gen_playbook() { # N PATH
    {
        echo "- hosts: bench"
        echo "  gather_facts: false"
        echo "  tasks:"
        for i in $(seq 1 "$1"); do
            printf '    - name: step %03d\n      command: "true"\n' "$i"
        done
    } >"$2"
}

# Wall seconds of one `recover run` of the N-step runbook; the journal stays in $W.
run_recover() { # N REP
    local t0 t1
    cpu_begin
    t0=$(now_ns)
    recover_env "$BIN" run --yes --journal "$W/recover-$1-$2.jsonl" "$W/rb-$1.yaml" \
        </dev/null >"$W/recover-$1-$2.out" 2>&1 ||
        { tail -20 "$W/recover-$1-$2.out" >&2; die "recover run failed (N=$1)"; }
    t1=$(now_ns)
    cpu_end "$W/cpu-recover-$1-$2"
    secs "$t0" "$t1"
}

# Wall seconds of N `ssh` commands over one ControlMaster connection (the first one opens it).
# KEY ssh sends `true`; KEY sshw sends recover's exact wire line for the same step. The instant
# each command ends goes to $W/KEY-N-REP.stamps (bash's clock, no fork).
run_ssh_loop() { # N REP KEY
    local cm="$W/cm-$3-$2-$1" t0 t1 i cmd
    local -a ends=()
    cpu_begin
    t0=$(now_ns)
    for ((i = 1; i <= $1; i++)); do
        if [ "$3" = ssh ]; then
            cmd=true
        else
            cmd="$WIRE_PREFIX$i"
        fi
        ssh -F "$W/ssh_config" -o ControlMaster=auto -o ControlPath="$cm" -o ControlPersist=60 \
            "$BENCH_USER" "$cmd" </dev/null || die "ssh loop failed at $i"
        ends+=("$EPOCHREALTIME")
    done
    t1=$(now_ns)
    ssh -F "$W/ssh_config" -o ControlPath="$cm" -O exit "$BENCH_USER" >/dev/null 2>&1 || true
    cpu_end "$W/cpu-$3-$1-$2"
    printf '%s\n' "${ends[@]}" >"$W/$3-$1-$2.stamps"
    secs "$t0" "$t1"
}

WIRE_PREFIX="timeout -k 5s 60s sh -c true recover:bench:"
for n in "$N_SMALL" "$N"; do
    gen_runbook "$n" "$W/rb-$n.yaml"
    recover_env "$BIN" check "$W/rb-$n.yaml" >"$W/check-rb-$n.out" 2>&1 ||
        { cat "$W/check-rb-$n.out" >&2; die "the generated runbook does not check"; }
    # The wire line recover sends, to replay it in the wrapped ssh loop.
    if [ "$n" = "$N" ]; then
        wire=$(recover_env "$BIN" run --dry-run "$W/rb-$n.yaml" 2>/dev/null |
            grep -m1 -o '\(sudo -n \)\?timeout .* recover:bench:1$' || true)
        if [ -n "$wire" ]; then
            WIRE_PREFIX=${wire%1}
        else
            say "note: could not read the wire line from --dry-run; assuming recover's usual one"
        fi
    fi
done

declare -A WALL
LOAD_STEP_BEGIN=$(load)
say "per-step: $REPS x (recover, ssh loop, ssh loop with recover's wrapped command) at N=$N_SMALL and N=$N"
for rep in $(seq 1 "$REPS"); do
    for n in "$N_SMALL" "$N"; do
        WALL[recover,$n]+="$(run_recover "$n" "$rep") "
        WALL[ssh,$n]+="$(run_ssh_loop "$n" "$rep" ssh) "
        WALL[sshw,$n]+="$(run_ssh_loop "$n" "$rep" sshw) "
    done
    say "  rep $rep done (load $(load))"
done
LOAD_STEP_END=$(load)

declare -A MED
for k in recover ssh sshw; do
    # shellcheck disable=SC2086
    MED[$k,small]=$(median ${WALL[$k,$N_SMALL]})
    # shellcheck disable=SC2086
    MED[$k,big]=$(median ${WALL[$k,$N]})
    MED[$k,marginal]=$(calc "(${MED[$k,big]} - ${MED[$k,small]}) / ($N - $N_SMALL)")
    MED[$k,whole]=$(calc "${MED[$k,big]} / $N")
done
# Per-step cycle times (one step's end to the next's), pooled over the N-step runs: the median
# resists the stalls other work on the machine causes; the mean above does not.
declare -A CYC
CYC[recover]=$("$PY" "$BENCHLIB" cycles --journal "$W"/recover-"$N"-*.jsonl)
CYC[ssh]=$("$PY" "$BENCHLIB" cycles "$W"/ssh-"$N"-*.stamps)
CYC[sshw]=$("$PY" "$BENCHLIB" cycles "$W"/sshw-"$N"-*.stamps)

# --- ansible-playbook ------------------------------------------------------------------------

ANSIBLE_VERSION="skipped (RECOVER_BENCH_ANSIBLE=0)"
if [ "$WITH_ANSIBLE" = 1 ]; then
    VENV=$CACHE/venv
    if [ ! -x "$VENV/bin/ansible-playbook" ]; then
        say "installing $ANSIBLE_SPEC into $VENV (once)"
        mkdir -p "$CACHE"
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet "$ANSIBLE_SPEC"
    fi
    ANSIBLE_VERSION=$("$VENV/bin/ansible-playbook" --version | sed -n 1p)
    cat >"$W/inventory.ini" <<EOF
[bench]
target ansible_host=127.0.0.1 ansible_port=$PORT ansible_user=$BENCH_USER ansible_ssh_private_key_file=$W/id_ed25519 ansible_ssh_common_args='-F $W/ssh_config' ansible_python_interpreter=/usr/bin/python3
EOF
    # Default ssh_args (-C -o ControlMaster=auto -o ControlPersist=60s) are kept on purpose.
    cat >"$W/ansible.cfg" <<EOF
[defaults]
inventory = $W/inventory.ini
host_key_checking = True
retry_files_enabled = False
gathering = explicit
nocolor = True

[ssh_connection]
pipelining = True
EOF
    run_ansible() { # N
        local t0 t1 cm
        gen_playbook "$1" "$W/play-$1.yml"
        cpu_begin
        t0=$(now_ns)
        env -u SSH_AUTH_SOCK PYTHONDONTWRITEBYTECODE=1 ANSIBLE_CONFIG="$W/ansible.cfg" ANSIBLE_HOME="$W/ansible-home" \
            ANSIBLE_CALLBACK_PLUGINS="$ROOT/benches/ansible_callback" ANSIBLE_CALLBACKS_ENABLED=stamps \
            RECOVER_BENCH_STAMPS="$W/ansible-$1.stamps" \
            ANSIBLE_LOCAL_TEMP="$W/ansible-tmp" ANSIBLE_SSH_CONTROL_PATH_DIR="$W/ansible-cp-$1" \
            "$VENV/bin/ansible-playbook" "$W/play-$1.yml" </dev/null >"$W/ansible-$1.out" 2>&1 ||
            { tail -30 "$W/ansible-$1.out" >&2; die "ansible-playbook failed (N=$1)"; }
        t1=$(now_ns)
        grep -Eq "target +: ok=$1 .*unreachable=0 +failed=0" "$W/ansible-$1.out" ||
            { tail -5 "$W/ansible-$1.out" >&2; die "ansible-playbook did not run $1 tasks"; }
        # Close ansible's persistent master, as recover and the ssh loop close theirs.
        for cm in "$W/ansible-cp-$1"/*; do
            [ -S "$cm" ] && ssh -o ControlPath="$cm" -O exit 127.0.0.1 >/dev/null 2>&1
        done
        cpu_end "$W/cpu-ansible-$1-1"
        secs "$t0" "$t1"
    }
    say "per-step: ansible-playbook at N=$N_SMALL and N=$N ($ANSIBLE_VERSION)"
    LOAD_ANSIBLE_BEGIN=$(load)
    A_SMALL=$(run_ansible "$N_SMALL")
    A_BIG=$(run_ansible "$N")
    LOAD_ANSIBLE_END=$(load)
    MED[ansible,small]=$A_SMALL
    MED[ansible,big]=$A_BIG
    MED[ansible,marginal]=$(calc "($A_BIG - $A_SMALL) / ($N - $N_SMALL)")
    MED[ansible,whole]=$(calc "$A_BIG / $N")
    CYC[ansible]=$("$PY" "$BENCHLIB" cycles "$W/ansible-$N.stamps")
fi

# ==============================================================================================
# 2. Gate detection latency
# ==============================================================================================

GPORT=$("$PY" "$BENCHLIB" freeport)
echo "$GPORT" >"$BENCH_HOME/.bench-gate-port"
chown "$BENCH_USER:$BENCH_GROUP" "$BENCH_HOME/.bench-gate-port"
"$PY" "$BENCHLIB" gate-server "$GPORT" "$W/gate-server.log" "$SEED" 2 8 &
GATE_PID=$!
for _ in $(seq 1 100); do # 100 x 50 ms
    curl -s -m 1 -o /dev/null "http://127.0.0.1:$GPORT/stats" && break
    sleep 0.05
done
curl -s -m 1 -o /dev/null "http://127.0.0.1:$GPORT/stats" || die "the gate endpoint did not start"

{
    echo "name: benchgate"
    echo "title: recover gate-detection benchmark"
    echo "budget: 30m"
    target_yaml
    echo "phases:"
    echo "  - name: gate"
    echo "    window: 0m-30m"
    echo "    steps:"
    echo "      - start: bench-model.service"
    echo "        sudo: false"
    echo "        timeout: 2m"
    echo "        health:"
    echo "          http: { url: \"http://127.0.0.1:$GPORT/health\", expect: { status: 200 } }"
    echo "          every: 10s"
    echo "          timeout: 60s"
} >"$W/gate.yaml"
recover_env "$BIN" check "$W/gate.yaml" >"$W/check-gate.out" 2>&1 ||
    { cat "$W/check-gate.out" >&2; die "the gate runbook does not check"; }

# One block of gate trials: TAG, TRIALS. Sets G_MED G_P90 G_MAX P_MED P_MAX R_MED R_MAX and
# LATS PROBES_LIST (space-separated raw values).
gate_trials() {
    local tag=$1 trials=$2 i tr
    local -a lat=() probes=() rate=()
    for i in $(seq 1 "$trials"); do
        recover_env "$BIN" run --yes --journal "$W/$tag-$i.jsonl" "$W/gate.yaml" \
            </dev/null >"$W/$tag-$i.out" 2>&1 ||
            { tail -20 "$W/$tag-$i.out" >&2; die "the gate run failed ($tag, trial $i)"; }
        curl -s -m 2 "http://127.0.0.1:$GPORT/stats" >"$W/$tag-$i.stats.json"
        tr=$("$PY" "$BENCHLIB" gate-trial "$W/$tag-$i.jsonl" "$W/$tag-$i.stats.json")
        echo "$tr" >>"$W/$tag-trials.jsonl"
        lat+=("$(jget "$tr" latency)")
        probes+=("$(jget "$tr" probes)")
        rate+=("$(jget "$tr" probes_per_s)")
        say "  $tag $i: healthy $(printf '%.2f' "$(jget "$tr" healthy_after_start)") s after the step started, seen $(ms "$(jget "$tr" latency)") later, $(jget "$tr" probes) probes (load $(load))"
    done
    read -r G_MED G_P90 G_MAX <<<"$("$PY" "$BENCHLIB" stats "${lat[@]}")"
    read -r P_MED _ P_MAX <<<"$("$PY" "$BENCHLIB" stats "${probes[@]}")"
    read -r R_MED _ R_MAX <<<"$("$PY" "$BENCHLIB" stats "${rate[@]}")"
    LATS="${lat[*]}"
    PROBES_LIST="${probes[*]}"
}

say "gate: $GATE_TRIALS trials, healthy uniformly 2-8 s after \`systemctl start\` (stubbed unit state)"
LOAD_GATE_BEGIN=$(load)
gate_trials gate "$GATE_TRIALS"
LOAD_GATE_END=$(load)
GATE_ROW="| gate: healthy → step_finished, median / p90 / max of $GATE_TRIALS | $(ms "$G_MED") / $(ms "$G_P90") / $(ms "$G_MAX") | ≤ 1 s (every: 10s) | median $(verdict "$G_MED <= 1"), max $(verdict "$G_MAX <= 1") | $LOAD_GATE_BEGIN → $LOAD_GATE_END |
| gate: probes per trial, median / max (probes per second, median / max) | $(printf '%.0f / %.0f (%.2f / %.2f)' "$P_MED" "$P_MAX" "$R_MED" "$R_MAX") | not hammering | | |"
GATE_RAW="raw: gate latencies (s): $LATS
raw: gate probes per trial: $PROBES_LIST"

# The same with a slow shell on the target: every SSH command then pays 0.3 s before it runs,
# as root's `pyenv init` does here (common on ML machines). Only the gate is measured so.
if [ "$SLOW_TRIALS" -gt 0 ]; then
    say "gate, slow target shell (~/.bashrc: sleep 0.3): $SLOW_TRIALS trials"
    echo "sleep 0.3 # benches/bench.sh: a slow shell start-up, for the gate's slow-shell trials" >"$BENCH_HOME/.bashrc"
    LOAD_SLOW_BEGIN=$(load)
    gate_trials gate-slow "$SLOW_TRIALS"
    LOAD_SLOW_END=$(load)
    : >"$BENCH_HOME/.bashrc"
    GATE_ROW+="
| gate, target shell start-up +0.3 s: median / p90 / max of $SLOW_TRIALS | $(ms "$G_MED") / $(ms "$G_P90") / $(ms "$G_MAX") ($(printf '%.2f' "$R_MED") probes/s) | ≤ 1 s (every: 10s) | median $(verdict "$G_MED <= 1"), max $(verdict "$G_MAX <= 1") | $LOAD_SLOW_BEGIN → $LOAD_SLOW_END |"
    GATE_RAW+="
raw: gate latencies, slow shell (s): $LATS"
fi
kill "$GATE_PID" 2>/dev/null || true
wait "$GATE_PID" 2>/dev/null || true
GATE_PID=

# ==============================================================================================
# 3. Start-up, check, memory
# ==============================================================================================

say "hyperfine: check and --dry-run of runbooks/spark-power.yaml"
LOAD_HF_BEGIN=$(load)
XDG_STATE_HOME="$W/state" NO_COLOR=1 hyperfine -N --warmup 3 --style none \
    --export-json "$W/hyperfine.json" \
    "$BIN check runbooks/spark-power.yaml" \
    "$BIN run --dry-run runbooks/spark-power.yaml" >"$W/hyperfine.out" 2>&1 ||
    { cat "$W/hyperfine.out" >&2; die "hyperfine failed"; }
LOAD_HF_END=$(load)
{ read -r CHECK_MED; read -r DRY_MED; } <<<"$("$PY" "$BENCHLIB" hyperfine-median "$W/hyperfine.json")"

say "peak RSS of the $N-step run"
LOAD_RSS=$(load)
/usr/bin/time -v -o "$W/time-v.txt" env -u SSH_AUTH_SOCK XDG_STATE_HOME="$W/state" NO_COLOR=1 \
    "$BIN" run --yes --journal "$W/rss.jsonl" "$W/rb-$N.yaml" </dev/null >"$W/rss.out" 2>&1 ||
    die "the RSS run failed"
RSS_KB=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$W/time-v.txt")

# ==============================================================================================
# Report
# ==============================================================================================


CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
cyc() { cut -d' ' -f1 <<<"${CYC[$1]}"; } # median cycle, seconds
# Median over the N-step runs of "client_cpu target_cpu", per step.
cpu_row() { # KEY
    local c t
    # shellcheck disable=SC2046
    c=$(median $(cat "$W/cpu-$1-$N"-* | cut -d' ' -f1))
    # shellcheck disable=SC2046
    t=$(median $(cat "$W/cpu-$1-$N"-* | cut -d' ' -f2))
    if [ -z "$CG" ]; then
        echo "n/a (no cgroup v1 cpuacct)"
    else
        echo "$(ms "$(calc "$c / $N")") client + $(ms "$(calc "$t / $N")") target"
    fi
}
step_row() { # KEY LABEL LOADS
    echo "| per step, $2 | **$(ms "$(cyc "$1")")** median; mean $(ms "${MED[$1,marginal]}") (marginal); whole run / N $(ms "${MED[$1,whole]}"); CPU $(cpu_row "$1") | | | $3 |"
}
R_C=$(cyc recover)
S_C=$(cyc ssh)
STEP_LOADS="$LOAD_STEP_BEGIN → $LOAD_STEP_END"

echo
echo "# recover benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $REV)"
echo
echo "machine: $(nproc) cores, $CPU; $(uname -sr); $(ssh -V 2>&1 | cut -d, -f1); load = /proc/loadavg 1/5/15 min before → after each section"
echo "command: benches/bench.sh (N=$N; $REPS runs each of recover and the ssh loops, 1 of ansible; interleaved)"
echo "per step: median = median time from one step's end to the next's, pooled over the N-step runs (robust to stalls"
echo "  from other work on the machine); mean = (T(N) - T($N_SMALL)) / $((N - N_SMALL)) from wall times (medians of the runs);"
echo "  CPU = CPU time per step of the N-step runs (medians), client side (client, children, its ssh master) and"
echo "  target side (everything under the bench sshd), from cgroup cpuacct; connecting once is included."
echo "remote environment: all three clients log in as the unprivileged user $BENCH_USER (bash, empty ~/.bashrc,"
echo "  PATH from ~/.ssh/environment), not as root, whose ~/.bashrc runs \`pyenv init\` (~0.3 s on every command)."
echo "gate: systemctl is a stand-in on the target: \`start\` returns 0 and \`show\` reports the unit active;"
echo "  the unit state is stubbed and only the gate's probe loop is measured (the lab VM measures real systemd)."
echo
echo "| figure | value | target | result | load |"
echo "|---|---|---|---|---|"
step_row recover "\`recover run\` ($N \`run: \"true\"\` steps)" "$STEP_LOADS"
step_row ssh "ssh ControlMaster loop, \`true\`" "$STEP_LOADS"
step_row sshw "ssh ControlMaster loop, recover's wrapped line" "$STEP_LOADS"
if [ "$WITH_ANSIBLE" = 1 ]; then
    step_row ansible "ansible-playbook ($N \`command: \"true\"\` tasks)" "$LOAD_ANSIBLE_BEGIN → $LOAD_ANSIBLE_END"
fi
echo "| recover / ssh loop (\`true\`) | $(ratio "$R_C" "$S_C") median (mean $(ratio "${MED[recover,marginal]}" "${MED[ssh,marginal]}")) | ≤ 1× | $(verdict "$R_C <= $S_C") | |"
echo "| recover / ssh loop (wrapped line) | $(ratio "$R_C" "$(cyc sshw)") median (mean $(ratio "${MED[recover,marginal]}" "${MED[sshw,marginal]}")) | (information) | | |"
if [ "$WITH_ANSIBLE" = 1 ]; then
    A_C=$(cyc ansible)
    echo "| ansible / recover | $(ratio "$A_C" "$R_C") median (mean $(ratio "${MED[ansible,marginal]}" "${MED[recover,marginal]}")) | ≥ 50× | $(verdict "$A_C >= 50 * $R_C") | |"
fi
echo "$GATE_ROW"
echo "| \`recover check runbooks/spark-power.yaml\`, median | $(ms "$CHECK_MED") | < 20 ms | $(verdict "$CHECK_MED < 0.020") | $LOAD_HF_BEGIN → $LOAD_HF_END |"
echo "| \`recover run --dry-run runbooks/spark-power.yaml\`, median | $(ms "$DRY_MED") | (information) | | $LOAD_HF_BEGIN → $LOAD_HF_END |"
echo "| peak RSS, $N-step run (GNU time, recover process) | $(awk -v k="$RSS_KB" 'BEGIN { printf "%.1f MB", k / 1024 }') | < 30 MB | $(verdict "$RSS_KB < 30 * 1024") | $LOAD_RSS |"
echo
[ "$WITH_ANSIBLE" = 1 ] && echo "ansible: $ANSIBLE_VERSION (pipelining on, gather_facts: false, default ControlPersist=60s)"
echo "raw: wall seconds, recover N=$N: ${WALL[recover,$N]}| N=$N_SMALL: ${WALL[recover,$N_SMALL]}"
echo "raw: wall seconds, ssh N=$N: ${WALL[ssh,$N]}| N=$N_SMALL: ${WALL[ssh,$N_SMALL]}"
echo "raw: wall seconds, ssh wrapped N=$N: ${WALL[sshw,$N]}| N=$N_SMALL: ${WALL[sshw,$N_SMALL]}"
[ "$WITH_ANSIBLE" = 1 ] && echo "raw: wall seconds, ansible N=$N: $A_BIG | N=$N_SMALL: $A_SMALL"
for k in recover ssh sshw ansible; do
    [ -n "${CYC[$k]:-}" ] && echo "raw: cycles $k (median mean p90 count, s): ${CYC[$k]}"
done
echo "$GATE_RAW"
