#!/usr/bin/env bash
# Stops a server started by start-s3-server.sh and waits until all of it is gone.
#
#   scripts/stop-s3-server.sh PID      (PID: the S3LEAD_TEST_SERVER_PID it printed)
#
# SIGTERM to the wrapper, which stops the server's processes in order (RGW's monitor
# last) and removes its temp dir; after 60 s, SIGKILL to its whole process group (the
# wrapper is a session leader, so the group is exactly the server). It refuses a PID
# that is not such a wrapper, so a stale number never kills an unrelated process.
# Already stopped is success.
set -euo pipefail

pid=${1:?usage: stop-s3-server.sh S3LEAD_TEST_SERVER_PID}
[[ $pid =~ ^[0-9]+$ ]] || { echo "stop-s3-server.sh: not a pid: $pid" >&2; exit 2; }

is_wrapper() {
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *start-s3-server.sh\ __serve\ * ]]
}

is_wrapper || exit 0
kill -TERM "$pid" 2>/dev/null || true
for _ in $(seq 1 600); do
  is_wrapper || exit 0
  sleep 0.1
done
echo "stop-s3-server.sh: $pid did not stop within 60 s; killing its process group" >&2
kill -KILL -- "-$pid" 2>/dev/null || true
