#!/usr/bin/env bash
# Benchmarks s3lead against flock(1) and `etcdctl lock`, in one run, and prints one table:
#
#   bench/run.sh
#
#   1. acquire-run-release latency of `true` (median, p90), CPU per cycle, peak RSS
#   2. S3 requests per lease cycle, per minute of a leader holding and of a follower
#      waiting (counted by the test kit's HTTP proxy, tests/e2e/http_fault.rs), and what
#      they cost at AWS S3 list prices
#   3. failover: kill -9 of the leader (short timings, and 3 trials at the default 30 s
#      lease), and handover after SIGTERM to it
#   4. S3 requests per lock-hour of a leader with 1, 10 and 50 followers at default
#      timings, without and with peer mode (the leader's --peer-listen/--advertise), and
#      their monthly cost beside the seed libraries' published defaults
#   5. memory (VmRSS, Pss, RssAnon) of an idle leader and an idle follower after 60 s,
#      s3lead's two processes (s3lead and its guard) summed and the guard alone
#   6. 200 locks held at once on one host, one run each: their total VmRSS, Pss and
#      RssAnon, and their CPU per hour (file store, and S3 on LocalStack)
#
# Tunables (environment): BENCH_N (cycles per tool, default 50), BENCH_IDLE_SECS (the
# idle windows of 2, 4, 5 and 6, default 60), BENCH_FAILOVER_TRIALS (default 5),
# BENCH_FLEET (follower counts, default 1,10,50), BENCH_LOCKS (locks held at once,
# default 200; 0 skips 6), BENCH_ONLY (some of the sections latency, requests, fleet,
# failover, memory, locks, comma-separated; default all), BENCH_S3LEAD (an s3lead binary
# to measure instead of building one), BENCH_COUNT_PROXY (the harness test binary, instead
# of building it; only requests and fleet need it). With BENCH_S3LEAD set and BENCH_ONLY
# without requests and fleet, the run does not call cargo at all.
#
# It installs what it lacks (etcd-server, etcd-client and time from apt, LocalStack via
# scripts/install-test-servers.sh), builds s3lead with `cargo build --release` (into
# $CARGO_TARGET_DIR if set) and the `harness` test binary (for its counting proxy),
# starts LocalStack and a single-node etcd on free ports of 127.0.0.1, and on exit stops
# exactly those (by pid) and removes its temp dir. If etcd cannot be installed or started, its
# column says why instead of failing the run. Progress goes to stderr, the table to
# stdout. Takes about 15 minutes with the defaults, most of it in the idle windows and
# the failover trials.
#
# Why figures live here and not in tests: timings and costs depend on the machine and its
# load; a benchmark prints them next to the reference tools measured in the same run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The binaries passed in may be named relative to where this was started.
[[ -z ${BENCH_S3LEAD:-} || $BENCH_S3LEAD == /* ]] || export BENCH_S3LEAD=$PWD/$BENCH_S3LEAD
[[ -z ${BENCH_COUNT_PROXY:-} || $BENCH_COUNT_PROXY == /* ]] || export BENCH_COUNT_PROXY=$PWD/$BENCH_COUNT_PROXY
cd "$ROOT"

log() { echo "bench: $*" >&2; }

TMP=$(mktemp -d /tmp/s3lead-bench.XXXXXX)
S3_PID=""
ETCD_PID=""
BENCH_PID=""

cleanup() {
  local status=$?
  trap '' INT TERM HUP
  # bench.py stops its own processes (proxies, leaders, followers) on SIGTERM.
  if [[ -n $BENCH_PID ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  if [[ -n $ETCD_PID ]]; then
    kill -TERM "$ETCD_PID" 2>/dev/null || true
    # etcd stops in well under a second; SIGKILL if it has not after 10 s.
    for _ in $(seq 1 100); do kill -0 "$ETCD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$ETCD_PID" 2>/dev/null || true
    wait "$ETCD_PID" 2>/dev/null || true
  fi
  if [[ -n $S3_PID ]]; then scripts/stop-s3-server.sh "$S3_PID" || true; fi
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- install ---------------------------------------------------------------------------
# apt-get install, running `apt-get update` only when the install fails without it.
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  apt-get update -q >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1
}

missing_pkgs=()
command -v flock >/dev/null || missing_pkgs+=(util-linux)
[[ -x /usr/bin/time ]] || missing_pkgs+=(time)
if ((${#missing_pkgs[@]})); then
  log "apt-get install ${missing_pkgs[*]}"
  apt_install "${missing_pkgs[@]}" || { log "cannot install ${missing_pkgs[*]} (needs root and apt)"; exit 1; }
fi

# etcd is optional: without it the etcdctl column says why. (On a host booted with
# systemd, Debian's etcd-server package also starts a system etcd on 2379; this benchmark
# uses its own instance on other ports and leaves that one alone.)
ETCD_WHY=""
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  log "apt-get install etcd-server etcd-client"
  if [[ $(id -u) != 0 ]]; then
    ETCD_WHY="etcd-server/etcd-client not installed and not root to apt-get install them"
  elif ! apt_install etcd-server etcd-client; then
    ETCD_WHY="apt-get install etcd-server etcd-client failed"
  fi
fi

scripts/install-test-servers.sh

if [[ -n ${BENCH_S3LEAD:-} ]]; then
  S3LEAD=$BENCH_S3LEAD
  [[ -x $S3LEAD ]] || { log "BENCH_S3LEAD=$S3LEAD is not an executable"; exit 1; }
  log "measuring $S3LEAD (BENCH_S3LEAD), not building s3lead"
else
  log "cargo build --release"
  cargo build --release --quiet
  S3LEAD=${CARGO_TARGET_DIR:-$ROOT/target}/release/s3lead
fi
# The requests are counted by the test kit's HTTP proxy, which lives in the `harness` test
# binary (its `count_proxy` test): build it and ask cargo where it put it. Only the
# sections requests and fleet use it (an empty BENCH_ONLY is every section).
only=${BENCH_ONLY:-}
needs_proxy=false
case ,${only// /}, in ,, | *,requests,* | *,fleet,*) needs_proxy=true ;; esac
COUNT_PROXY=${BENCH_COUNT_PROXY:-}
if [[ -z $COUNT_PROXY ]] && $needs_proxy; then
  log "cargo test --release --no-run --test harness"
  COUNT_PROXY=$(cargo test --release --no-run --quiet --test harness --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "harness" and m.get("executable"):
        print(m["executable"])')
fi
if $needs_proxy && [[ ! -x $COUNT_PROXY ]]; then
  log "cannot find the harness test binary (the counting proxy): '$COUNT_PROXY'"
  exit 1
fi

# --- start the servers -------------------------------------------------------------------
# N distinct free TCP ports on 127.0.0.1 (bound together, so they differ).
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

log "starting LocalStack"
s3_line=$(scripts/start-s3-server.sh localstack)
# The line is NAME=value assignments (no spaces in values); read them without eval.
for kv in $s3_line; do
  case ${kv%%=*} in
    S3LEAD_TEST_ENDPOINT) S3_ENDPOINT=${kv#*=} ;;
    S3LEAD_TEST_ACCESS_KEY) S3_ACCESS_KEY=${kv#*=} ;;
    S3LEAD_TEST_SECRET_KEY) S3_SECRET_KEY=${kv#*=} ;;
    S3LEAD_TEST_REGION) S3_REGION=${kv#*=} ;;
    S3LEAD_TEST_BUCKET) S3_BUCKET=${kv#*=} ;;
    S3LEAD_TEST_SERVER_PID) S3_PID=${kv#*=} ;;
  esac
done

ETCD_ENDPOINT=""
if [[ -z $ETCD_WHY ]]; then
  log "starting etcd"
  read -r client_port peer_port < <(free_ports 2)
  # A fresh single-node cluster in the temp dir, client and peer URLs on 127.0.0.1 only.
  etcd --name bench --data-dir "$TMP/etcd" \
    --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "bench=http://127.0.0.1:$peer_port" --initial-cluster-state new \
    >"$TMP/etcd.log" 2>&1 &
  ETCD_PID=$!
  ETCD_WHY="etcd did not become healthy within 30 s"
  for _ in $(seq 1 60); do
    if ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$client_port" --dial-timeout=1s endpoint health >/dev/null 2>&1; then
      ETCD_ENDPOINT=127.0.0.1:$client_port ETCD_WHY=""
      break
    fi
    kill -0 "$ETCD_PID" 2>/dev/null || { ETCD_WHY="etcd exited at start: $(tail -n 1 "$TMP/etcd.log")"; break; }
    sleep 0.5
  done
  [[ -z $ETCD_WHY ]] || log "etcd: $ETCD_WHY"
fi

# --- measure -----------------------------------------------------------------------------
# In the background and waited for, so that a signal to this script runs the trap at once
# (bash defers traps while a foreground command runs); the trap passes it on as SIGTERM.
S3LEAD=$S3LEAD BENCH_COUNT_PROXY=$COUNT_PROXY BENCH_TMP=$TMP \
  BENCH_S3_ENDPOINT=$S3_ENDPOINT BENCH_S3_ACCESS_KEY=$S3_ACCESS_KEY BENCH_S3_SECRET_KEY=$S3_SECRET_KEY \
  BENCH_S3_REGION=$S3_REGION BENCH_S3_BUCKET=$S3_BUCKET \
  BENCH_ETCD_ENDPOINT=$ETCD_ENDPOINT BENCH_ETCD_UNAVAILABLE=$ETCD_WHY \
  python3 bench/bench.py &
BENCH_PID=$!
wait "$BENCH_PID"
