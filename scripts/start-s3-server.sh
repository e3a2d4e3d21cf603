#!/usr/bin/env bash
# Starts a throw-away S3-compatible server for s3lead's tests and prints how to reach it.
#
#   scripts/start-s3-server.sh KIND [--watch-stdin]      KIND: localstack | rgw | moto
#
# The server listens on 127.0.0.1 on free ports, has a bucket named `lease`, and keeps
# running detached once this script exits. On success it prints ONE line of shell
# assignments to stdout, e.g.
#
#   S3LEAD_TEST_ENDPOINT=http://127.0.0.1:PORT S3LEAD_TEST_ACCESS_KEY=test
#   S3LEAD_TEST_SECRET_KEY=test S3LEAD_TEST_REGION=us-east-1 S3LEAD_TEST_BUCKET=lease
#   S3LEAD_TEST_SERVER_PID=PID S3LEAD_TEST_SERVER=KIND S3LEAD_TEST_SERVER_LOGS=DIR
#
# (all on one line), ready for `export $(scripts/start-s3-server.sh localstack)`.
# S3LEAD_TEST_SERVER_PID is a wrapper that owns every process of the server (RGW has
# three): `scripts/stop-s3-server.sh $S3LEAD_TEST_SERVER_PID` (or a plain `kill`) stops
# them all. The wrapper is a session leader, so `kill -KILL -- -PID` is the last resort.
#
# --watch-stdin: the wrapper also reads this script's stdin until EOF and then stops the
# server. The Rust test harness (tests/support/mod.rs) spawns the script with a pipe as
# stdin and never closes it, so when the test process exits or crashes, the kernel
# closes the pipe and the server goes with it: no test run leaves a server behind.
#
# Logs and data live in a temp dir (S3LEAD_TEST_SERVER_LOGS). It is removed when the
# server is stopped, unless S3LEAD_KEEP_SERVER_LOGS=1, or the server failed to start or
# died on its own (then the dir is kept, and a failed start prints the logs to stderr).
#
# Exit status: 0 ready; 1 failed to start (logs printed); 2 usage; 3 not installed (the
# message says what to run: scripts/install-test-servers.sh).
# Tunables: S3LEAD_TEST_START_TIMEOUT (seconds to become ready, shared by up to 3
# attempts, default 180); S3LEAD_CACHE_DIR (where install-test-servers.sh put the venvs).
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_DIR=${S3LEAD_CACHE_DIR:-~/.cache/s3lead}  # ~, not $HOME: works with HOME unset
# Keep these two in step with install-test-servers.sh.
LOCALSTACK_VENV=$CACHE_DIR/localstack-4.13.1
MOTO_VENV=$CACHE_DIR/moto-5.2.5
START_TIMEOUT=${S3LEAD_TEST_START_TIMEOUT:-180}
START_ATTEMPTS=3
BUCKET=lease
REGION=us-east-1
# How long a stopping process gets between SIGTERM and SIGKILL.
STOP_GRACE=10

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# Exits 3 with the exact install command when KIND's binaries are missing.
check_installed() {
  local kind=$1 cmd
  if ! command -v curl >/dev/null; then
    echo "start-s3-server.sh: curl (7.75 or later) signs the readiness check; run: apt-get install curl" >&2
    exit 3
  fi
  case "$kind" in
    localstack)
      [[ -f "$LOCALSTACK_VENV/.s3lead-install-complete" ]] && return 0
      cmd="scripts/install-test-servers.sh" ;;
    moto)
      [[ -f "$MOTO_VENV/.s3lead-install-complete" ]] && return 0
      cmd="scripts/install-test-servers.sh --moto" ;;
    rgw)
      local b ok=true
      for b in radosgw ceph-mon ceph-osd ceph ceph-authtool monmaptool radosgw-admin; do
        command -v "$b" >/dev/null || ok=false
      done
      $ok && return 0
      cmd="S3LEAD_TEST_SERVER=rgw scripts/install-test-servers.sh" ;;
  esac
  echo "start-s3-server.sh: the '$kind' S3 test server is not installed; run: $cmd" >&2
  exit 3
}

# N distinct free TCP ports on 127.0.0.1 (bound together, so they differ).
free_ports() {
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}

# ---------------------------------------------------------------------------------------
# The wrapper: runs detached (setsid) as `start-s3-server.sh __serve KIND DIR WATCH`, owns
# the server's processes, writes DIR/ready (the line) or DIR/failed (why), and stops
# everything when it gets SIGTERM/SIGINT/SIGHUP, when a server process exits, or (WATCH)
# when its stdin reaches EOF.
# ---------------------------------------------------------------------------------------

PIDS_LAST=()   # stopped last (RGW's monitor: the OSD and radosgw hang without it)
PIDS_FIRST=()  # stopped first
KEEP_LOGS=false  # the start failed or a server process died on its own

log() { echo "[$(date +%T)] $*"; }

# Fails the start for good: the reason goes where the starting script looks for it.
fail() {
  log "start failed: $*"
  KEEP_LOGS=true
  echo "$*" >"$DIR/failed"
  exit 1
}

# Runs a step in the background and waits for it, so that a signal (or the stdin
# watcher) interrupts `wait` at once instead of only after the step finishes.
run() {
  "$@" &
  wait "$!"
}

# Whether any of these children still runs (an exited child is a zombie until reaped,
# so kill -0 would still find it).
any_running() {
  local p stat
  for p in "$@"; do
    { read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
    stat=${stat##*) }
    [[ ${stat:0:1} == Z ]] || return 0
  done
  return 1
}

# TERM, then KILL after STOP_GRACE, and reap. Polling rather than a background killer,
# whose orphaned `sleep` would end up a zombie of init.
stop_pids() {
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_GRACE))
  while any_running "$@" && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

# Every other process of this wrapper's process group: leftovers such as the stdin
# watcher, a step that was running when a signal came, or a server's own helpers.
group_leftovers() {
  local p stat rest
  for p in /proc/[0-9]*; do
    # Not the wrapper itself, nor the subshell running this function.
    [[ ${p#/proc/} == "$$" || ${p#/proc/} == "$BASHPID" ]] && continue
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    rest=${stat##*) }
    read -r _ _ pgrp _ <<<"$rest"
    if [[ $pgrp == "$$" ]]; then echo "${p#/proc/}"; fi
  done
  return 0
}

stop_server() {
  stop_pids "${PIDS_FIRST[@]}"
  stop_pids "${PIDS_LAST[@]}"
  PIDS_FIRST=() PIDS_LAST=()
}

cleanup() {
  local status=$?
  trap '' TERM INT HUP
  log "stopping (status $status)"
  stop_server
  # Under set -e a failing command here would end the trap early: guard each one.
  local left
  left=$(group_leftovers) || true
  # shellcheck disable=SC2086 # a list of pids
  if [[ -n $left ]]; then kill -KILL $left 2>/dev/null || true; fi
  wait 2>/dev/null || true
  # A stop request (signal, stdin EOF) during the start is no failure either.
  if ! $KEEP_LOGS && [[ ${S3LEAD_KEEP_SERVER_LOGS:-0} != 1 ]]; then
    rm -rf "$DIR"
  else
    rm -rf "$DIR/data"
    log "stopped; logs kept in $DIR"
    touch "$DIR/stopped"
  fi
}

# start_KIND: sets ENDPOINT, ACCESS_KEY, SECRET_KEY and the pid lists, and returns 0 once
# the server serves S3 with the bucket made, or 1 with the reason in START_ERROR. They
# run with errexit off (called from `if`), hence the explicit `|| { ...; return 1; }`.
start_localstack() {
  local port
  port=$(free_ports 1)
  ENDPOINT=http://127.0.0.1:$port ACCESS_KEY=test SECRET_KEY=test
  mkdir -p "$DIR/data/tmp"
  # FILESYSTEM_ROOT: LocalStack clears its tmp dir at start and stop, so two instances
  # (two test binaries, or a developer's and CI's) must not share the default one.
  # DISABLE_EVENTS, SKIP_SSL_CERT_DOWNLOAD, DNS_ADDRESS=0: no network calls, no DNS
  # server on port 53.
  GATEWAY_LISTEN=127.0.0.1:$port LOCALSTACK_HOST=127.0.0.1:$port SERVICES=s3 \
    DISABLE_EVENTS=1 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 \
    FILESYSTEM_ROOT="$DIR/data/localstack" TMPDIR="$DIR/data/tmp" \
    "$LOCALSTACK_VENV/bin/python" -m localstack.runtime.main </dev/null >"$DIR/log/localstack.out" 2>&1 &
  PIDS_FIRST=($!)
  run wait_s3 "${PIDS_FIRST[@]}" || { START_ERROR="$KIND did not become ready"; return 1; }
}

start_moto() {
  local port
  port=$(free_ports 1)
  ENDPOINT=http://127.0.0.1:$port ACCESS_KEY=test SECRET_KEY=test
  "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$DIR/log/moto.out" 2>&1 &
  PIDS_FIRST=($!)
  run wait_s3 "${PIDS_FIRST[@]}" || { START_ERROR="$KIND did not become ready"; return 1; }
}

# Ceph RGW 16.2 on a cluster of its own: one monitor, one memstore OSD (data in memory),
# auth off, all on 127.0.0.1. Takes ~16 s, most of it RGW creating its pools.
start_rgw() {
  local monp rgwp c="$DIR/data/ceph.conf" d="$DIR/data" fsid osdid
  read -r monp rgwp < <(free_ports 2)
  ENDPOINT=http://127.0.0.1:$rgwp
  ACCESS_KEY=CIACCESSKEY0000000001 SECRET_KEY=cisecretkey0000000000000000000000000001
  fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
  mkdir -p "$d/run" "$d/osd.0"
  cat >"$c" <<CONF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$monp
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
run dir = $d/run
log file = $DIR/log/\$name.log
admin socket = $d/run/\$name.asok
keyring = $d/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
# The OSD's own start-up commands to the monitor (set its device class, move itself in
# the CRUSH map) are where it sometimes races the monitor and gets 'wrong fsid', then
# exits; the CLI places it in the CRUSH map below instead, before it starts.
osd class update on start = false
osd crush update on start = false
osd objectstore = memstore
memstore device bytes = 1073741824
mon data = $d/mon.\$id
osd data = $d/osd.\$id
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$rgwp
rgw enable usage log = false
CONF
  # Every ceph command is bounded: a client waits forever for a monitor that is not up.
  timeout 30 ceph-authtool --create-keyring "$d/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null \
    || { START_ERROR="ceph-authtool failed"; return 1; }
  timeout 30 monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$monp]" "$d/monmap" >/dev/null \
    || { START_ERROR="monmaptool failed"; return 1; }
  run timeout 60 ceph-mon -c "$c" --mkfs -i a --monmap "$d/monmap" --keyring "$d/keyring" \
    >"$DIR/log/mon-mkfs.out" 2>&1 || { START_ERROR="ceph-mon --mkfs failed"; return 1; }
  ceph-mon -c "$c" -i a -f </dev/null >"$DIR/log/mon.out" 2>&1 &
  PIDS_LAST=($!)
  osdid=$(timeout 60 ceph -c "$c" osd create 2>>"$DIR/log/ceph-cli.out") \
    || { START_ERROR="ceph osd create failed"; return 1; }
  run timeout 60 ceph-osd -c "$c" -i "$osdid" --mkfs >"$DIR/log/osd-mkfs.out" 2>&1 \
    || { START_ERROR="ceph-osd --mkfs failed"; return 1; }
  timeout 60 ceph -c "$c" osd crush add "osd.$osdid" 1.0 root=default >>"$DIR/log/ceph-cli.out" 2>&1 \
    || { START_ERROR="ceph osd crush add failed"; return 1; }
  # The OSD used to send its start-up commands before it knew the cluster's fsid now and
  # then ('wrong fsid', then exit); those are off (see the config above). Should a start
  # still fail, the retry in serve() starts a fresh cluster.
  ceph-osd -c "$c" -i "$osdid" -f </dev/null >"$DIR/log/osd.out" 2>&1 &
  PIDS_FIRST=($!)
  radosgw -c "$c" -n client.rgw -f </dev/null >"$DIR/log/rgw.out" 2>&1 &
  PIDS_FIRST=("$!" "${PIDS_FIRST[@]}")
  # As in the tested recipe: the user is made once radosgw listens (it has then made
  # the pools radosgw-admin needs).
  run wait_listening "${PIDS_FIRST[@]}" "${PIDS_LAST[@]}" \
    || { START_ERROR="radosgw did not start listening"; return 1; }
  run timeout 60 radosgw-admin -c "$c" user create --uid=ci --display-name=ci \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/log/user-create.out" 2>&1 \
    || { START_ERROR="radosgw-admin user create failed"; return 1; }
  run wait_s3 "${PIDS_FIRST[@]}" "${PIDS_LAST[@]}" || { START_ERROR="$KIND did not become ready"; return 1; }
}

# Seconds left of the START_TIMEOUT budget, which all attempts share.
time_left() {
  echo $((START_DEADLINE - SECONDS > 1 ? START_DEADLINE - SECONDS : 1))
}

# Readiness. Answering HTTP is not enough: Ceph RGW listens long before its pools exist,
# and creates the data pool on the first object write, which can take seconds. So
# "ready" means: CreateBucket succeeded (or the bucket is already ours), then a PUT and a
# DELETE of a probe object succeeded, all signed with the server's keys. Each step is
# retried until the start's time budget is spent, and gives up as soon as one of the
# server's processes has exited. The requests are signed by curl (--aws-sigv4, curl 7.75
# or later), so that the script runs before anything is built and needs neither the aws
# CLI nor a Python SDK.

# Whether every one of these processes still runs (an exited child is a zombie).
all_running() {
  local p stat
  for p in "$@"; do
    { read -r stat <"/proc/$p/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]] || return 1
  done
  return 0
}

# wait_listening PIDS...: until ENDPOINT's port accepts TCP connections.
wait_listening() {
  local hostport=${ENDPOINT#http://} deadline=$((SECONDS + $(time_left)))
  until (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; do
    all_running "$@" || { log "ready check: a server process exited before listening"; return 1; }
    ((SECONDS < deadline)) || { log "ready check: nothing listens on $ENDPOINT"; return 1; }
    sleep 0.2
  done
}

# s3_request METHOD PATH [BODY]: one path-style request signed with SigV4; prints the
# HTTP status (000 when nothing answered), leaves the answer's body in $DIR/log/ready.body
# and curl's complaint, if any, in $DIR/log/ready.err. The payload is declared unsigned:
# RGW refuses a SigV4 request without x-amz-content-sha256, and curl 7.88 does not add it.
s3_request() {
  local args=(-sS -o "$DIR/log/ready.body" -w '%{http_code}' --max-time 30 -X "$1"
    --aws-sigv4 "aws:amz:$REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY"
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
  if [[ -n ${3-} ]]; then args+=(--data-binary "$3"); fi
  curl "${args[@]}" "$ENDPOINT$2" 2>"$DIR/log/ready.err" || true
}

# wait_s3 PIDS...: until the steps above succeed, or returns 1 (the last failure logged).
wait_s3() {
  local probe="/$BUCKET/s3lead-start-probe-$$" deadline=$((SECONDS + $(time_left)))
  local step name method path body status last="no attempt yet"
  for step in "CreateBucket PUT /$BUCKET" "PutObject PUT $probe probe" "DeleteObject DELETE $probe"; do
    read -r name method path body <<<"$step"
    while true; do
      all_running "$@" || { log "ready check: a server process exited (last: $last)"; return 1; }
      status=$(s3_request "$method" "$path" "$body")
      case "$name $status" in
        "CreateBucket 200" | "PutObject 200" | "DeleteObject 200" | "DeleteObject 204") break ;;
        # A restarted or shared server may already have the bucket.
        "CreateBucket 409") grep -q BucketAlreadyOwnedByYou "$DIR/log/ready.body" && break ;;
      esac
      last="$name: HTTP $status $(head -c 300 "$DIR/log/ready.body" 2>/dev/null) $(cat "$DIR/log/ready.err")"
      ((SECONDS < deadline)) || { log "ready check: $KIND not ready; last: $last"; return 1; }
      sleep 0.25
    done
  done
  rm -f "$DIR/log/ready.body" "$DIR/log/ready.err"
}

serve() {
  KIND=$1 DIR=$2
  local watch=$3 t0=$SECONDS
  echo "$$" >"$DIR/wrapper.pid"
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP
  trap cleanup EXIT
  mkdir -p "$DIR/log" "$DIR/data"
  if [[ $watch == 1 ]]; then
    # Builtins only, so the watcher is one process, a child that cleanup can reap.
    # Explicit <&0: a background job's stdin would otherwise be /dev/null.
    (while IFS= read -r _; do :; done; log "stdin closed: stopping"; kill -TERM $$) <&0 &
    exec </dev/null
  fi
  # Up to START_ATTEMPTS fresh starts (new ports, new data) within the one time budget:
  # a start can lose a race (RGW's OSD, above; a free port taken before it is bound).
  START_DEADLINE=$((SECONDS + START_TIMEOUT))
  local attempt=1
  while log "starting $KIND in $DIR (attempt $attempt)"; ! "start_$KIND"; do
    log "attempt $attempt failed: $START_ERROR"
    stop_server
    if ((attempt >= START_ATTEMPTS || SECONDS >= START_DEADLINE)); then
      fail "$START_ERROR"
    fi
    # Keep the failed attempt's logs beside the new ones.
    mkdir -p "$DIR/log/attempt-$attempt"
    find "$DIR/log" -maxdepth 1 -type f -exec mv -t "$DIR/log/attempt-$attempt" {} +
    rm -rf "$DIR/data"
    mkdir -p "$DIR/data"
    attempt=$((attempt + 1))
  done
  log "$KIND ready at $ENDPOINT after $((SECONDS - t0)) s"
  echo "S3LEAD_TEST_ENDPOINT=$ENDPOINT S3LEAD_TEST_ACCESS_KEY=$ACCESS_KEY" \
    "S3LEAD_TEST_SECRET_KEY=$SECRET_KEY S3LEAD_TEST_REGION=$REGION S3LEAD_TEST_BUCKET=$BUCKET" \
    "S3LEAD_TEST_SERVER_PID=$$ S3LEAD_TEST_SERVER=$KIND S3LEAD_TEST_SERVER_LOGS=$DIR" >"$DIR/ready.tmp"
  mv "$DIR/ready.tmp" "$DIR/ready"
  # The first child to exit is either a server process (it crashed: stop the rest, keep
  # the logs) or the stdin watcher (EOF: a clean stop). Signals interrupt this wait.
  local exited=0
  wait -n -p exited || true
  if [[ " ${PIDS_FIRST[*]} ${PIDS_LAST[*]} " == *" $exited "* ]]; then
    log "server process $exited exited on its own"
    KEEP_LOGS=true
    exit 1
  fi
  exit 0
}

if [[ ${1:-} == __serve ]]; then
  shift
  serve "$@" # never returns: it exits through cleanup
fi

# ---------------------------------------------------------------------------------------
# The starting side: check, launch the wrapper, wait for ready or failed, print the line.
# ---------------------------------------------------------------------------------------

kind=
watch=0
for arg in "$@"; do
  case "$arg" in
    localstack|rgw|moto) [[ -z $kind ]] || usage; kind=$arg ;;
    --watch-stdin) watch=1 ;;
    -h|--help) usage ;;
    *) echo "start-s3-server.sh: unknown argument '$arg'" >&2; usage ;;
  esac
done
[[ -n $kind ]] || usage
check_installed "$kind"

dir=$(mktemp -d "${TMPDIR:-/tmp}/s3lead-$kind.XXXXXX")
if [[ $watch == 1 ]]; then
  setsid "$0" __serve "$kind" "$dir" 1 <&0 >"$dir/wrapper.log" 2>&1 &
else
  setsid "$0" __serve "$kind" "$dir" 0 </dev/null >"$dir/wrapper.log" 2>&1 &
fi
launched=$!
ready=false
# Interrupted or timed out before ready: take the half-started server down with us.
trap '$ready || stop_half_started' EXIT
stop_half_started() {
  local pid
  pid=$(cat "$dir/wrapper.pid" 2>/dev/null || echo "$launched")
  kill -TERM "$pid" 2>/dev/null || true
}

# Whether the wrapper is gone without a word (killed): it is our child, so a zombie.
wrapper_vanished() {
  local stat
  { read -r stat <"/proc/$launched/stat"; } 2>/dev/null || return 0
  stat=${stat##*) }
  [[ ${stat:0:1} == Z ]]
}

deadline=$((SECONDS + START_TIMEOUT + 90))
while true; do
  if [[ -f "$dir/ready" ]]; then
    ready=true
    cat "$dir/ready"
    exit 0
  fi
  # No dir: the wrapper was told to stop before it was ready, and cleaned up.
  if [[ -f "$dir/failed" || -f "$dir/stopped" || ! -d "$dir" ]] || wrapper_vanished || ((SECONDS > deadline)); then
    # Let the wrapper finish stopping so the logs are complete.
    for _ in $(seq 1 $((STOP_GRACE * 10 + 50))); do [[ -f "$dir/stopped" || ! -d "$dir" ]] && break; sleep 0.1; done
    {
      reason=$(cat "$dir/failed" 2>/dev/null) || reason="timed out, or stopped before it was ready"
      echo "start-s3-server.sh: $kind failed to start: $reason"
      for f in "$dir/wrapper.log" "$dir"/log/*; do
        [[ -f $f ]] || continue
        echo "----- $f (last 60 lines)"
        tail -n 60 "$f"
      done
      [[ -d $dir ]] && echo "----- logs kept in $dir"
    } >&2
    exit 1
  fi
  sleep 0.2
done
