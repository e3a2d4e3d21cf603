#!/usr/bin/env bash
# Runs the whole test suite, on a fresh machine too: installs the S3 test servers, builds,
# then runs one pass per server:
#
#   localstack  every test (cargo test --release --all-targets, then the doc tests) with
#               LocalStack 4.13.1, the S3 server most faithful to AWS, shared by all
#               test binaries through the exported S3LEAD_TEST_* variables;
#   rgw         the S3 tests again (`on_s3` in the test name, the project's convention)
#               against Ceph RGW, a production store with quirks the protocol must survive;
#   moto        (only when asked for) the S3 tests against moto: fast, but its conditional
#               writes are not atomic, so race tests may fail there.
#
#   ./test.sh                                   localstack and rgw
#   S3LEAD_TEST_SERVERS=localstack ./test.sh    choose the passes (any of localstack rgw moto)
#   ./test.sh -- --nocapture                    extra arguments go to the test binaries
#
# Every pass runs even if an earlier one failed, and every test binary even if an earlier
# one failed (--no-fail-fast); the exit status is non-zero if anything failed.
# Servers are stopped at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

servers=${S3LEAD_TEST_SERVERS:-localstack rgw}
test_args=()
if [[ ${1:-} == -- ]]; then
  shift
  test_args=("$@")
fi

install_args=()
for kind in $servers; do
  case "$kind" in
    localstack) ;;
    rgw) install_args+=(--rgw) ;;
    moto) install_args+=(--moto) ;;
    *) echo "test.sh: unknown server '$kind' in S3LEAD_TEST_SERVERS (localstack, rgw, moto)" >&2; exit 2 ;;
  esac
done

# A server exported by the caller's shell must not leak into a pass: each pass exports
# its own.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^S3LEAD_TEST_' || true)

started=()  # wrapper pids of running servers, stopped by the trap whatever happens
stop_servers() {
  local pid
  for pid in "${started[@]}"; do scripts/stop-s3-server.sh "$pid" || true; done
  started=()
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { echo; echo "==== test.sh: $* ($(date +%T))"; }

section "installing test servers"
scripts/install-test-servers.sh "${install_args[@]}"

section "building"
cargo test --release --all-targets --no-run
# The example programs as users run them (`--all-targets` builds them as test harnesses
# only): tests/examples.rs runs these.
cargo build --release --examples

# run_pass KIND: start KIND, run its tests with the server's variables, stop it.
run_pass() {
  local kind=$1 line pid status=0
  section "$kind pass: starting $kind"
  local t0=$SECONDS
  line=$(scripts/start-s3-server.sh "$kind") || return 1
  pid=$(sed -n 's/.*S3LEAD_TEST_SERVER_PID=\([0-9]*\).*/\1/p' <<<"$line")
  started+=("$pid")
  echo "$line"
  echo "($kind ready in $((SECONDS - t0)) s)"
  # The simulation and chaos tests write their one-line verdicts here; stale ones from
  # an earlier run must not be shown as this pass's.
  rm -f target/simulation-summary.txt target/chaos-summary.txt
  # The line is `NAME=value ...` without spaces in values: env takes it as it is.
  # shellcheck disable=SC2086
  if [[ $kind == localstack ]]; then
    section "$kind pass: cargo test --release --all-targets"
    env $line cargo test --release --all-targets --no-fail-fast -- "${test_args[@]}" || status=1
    section "$kind pass: cargo test --release --doc"
    env $line cargo test --release --doc -- "${test_args[@]}" || status=1
  else
    section "$kind pass: cargo test --release --tests -- on_s3"
    env $line cargo test --release --tests --no-fail-fast -- on_s3 "${test_args[@]}" || status=1
  fi
  stop_servers
  local summary
  for summary in target/simulation-summary.txt target/chaos-summary.txt; do
    if [[ -s $summary ]]; then
      results+=("$kind: $(cat "$summary")")
    fi
  done
  return "$status"
}

results=()
failed=0
for kind in $servers; do
  t0=$SECONDS
  if run_pass "$kind"; then
    results+=("$kind: ok ($((SECONDS - t0)) s)")
  else
    results+=("$kind: FAILED ($((SECONDS - t0)) s)")
    failed=1
  fi
done

section "summary"
printf '  %s\n' "${results[@]}"
exit "$failed"
