#!/usr/bin/env bash
# Installs the S3-compatible servers that s3lead's integration tests run against.
#
#   scripts/install-test-servers.sh            LocalStack 4.13.1 (the default test server)
#   scripts/install-test-servers.sh --rgw      ... plus Ceph RGW (Debian's radosgw)
#   scripts/install-test-servers.sh --moto     ... plus moto 5.2.5
#   scripts/install-test-servers.sh --all      all of them
#
# Every run also installs the tools the end-to-end tests use beside the servers, when
# missing: faketime (cron windows under skewed clocks), openssl (a TLS server with an
# untrusted certificate), curl (readiness checks), systemd-analyze (the example unit),
# unshare/nsenter/setpriv (PID 1, running as nobody), PyYAML (the Kubernetes
# examples) and man (the rendered man pages).
#
# S3LEAD_TEST_SERVER=rgw (or moto) in the environment counts as --rgw (or --moto), so
# `S3LEAD_TEST_SERVER=rgw scripts/install-test-servers.sh` installs what that run needs.
#
# Idempotent and fast when everything is there: each Python venv is reused only when its
# marker file (written last, holding the exact pip line) says the install completed, so
# an interrupted install is redone instead of half-trusted. Python venvs live under
# ${S3LEAD_CACHE_DIR:-$HOME/.cache/s3lead}; RGW comes from apt (needs root).
# Why these versions: see the provider notes in the README (LocalStack 4.14+ needs
# Python 3.12; 4.13.1 runs on the machine's 3.11).
set -euo pipefail

CACHE_DIR=${S3LEAD_CACHE_DIR:-~/.cache/s3lead}  # ~, not $HOME: works with HOME unset
LOCALSTACK_VERSION=4.13.1
# Exactly the tested pin set: newer cbor2/pyopenssl/cryptography break LocalStack 4.13.1.
LOCALSTACK_PIP=("localstack-core[runtime]==$LOCALSTACK_VERSION" "cbor2<5.7" "pyopenssl==24.2.1" "cryptography==43.0.3" service_identity)
MOTO_VERSION=5.2.5
MOTO_PIP=("moto[server]==$MOTO_VERSION")
RGW_PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
# Every binary the RGW recipe in start-s3-server.sh runs.
RGW_BINARIES=(radosgw ceph-mon ceph-osd ceph ceph-authtool monmaptool radosgw-admin)

want_rgw=false
want_moto=false
case "${S3LEAD_TEST_SERVER:-}" in
  rgw) want_rgw=true ;;
  moto) want_moto=true ;;
esac
for arg in "$@"; do
  case "$arg" in
    --rgw) want_rgw=true ;;
    --moto) want_moto=true ;;
    --all) want_rgw=true; want_moto=true ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-test-servers.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "install-test-servers: $*" >&2; }

# apt-get install, running `apt-get update` only when the install fails without it (a
# fresh machine has no package lists; a warm one should not pay for refreshing them).
apt_install() {
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
  fi
}

# The tools the tests run beside the servers (see the top of this file).
install_test_tools() {
  local need=()
  command -v faketime >/dev/null || need+=(faketime)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v man >/dev/null || need+=(man-db)
  { command -v unshare && command -v nsenter && command -v setpriv; } >/dev/null || need+=(util-linux)
  local pyyaml_by_pip=false
  if ! python3 -c 'import yaml' 2>/dev/null; then
    # Debian's own python3 takes the Debian package; another python3 (pyenv) takes pip.
    if [[ $(command -v python3) == /usr/bin/python3 ]]; then need+=(python3-yaml); else pyyaml_by_pip=true; fi
  fi
  if ((${#need[@]})); then
    if [[ $(id -u) != 0 ]]; then
      log "test tools: needs root to apt-get install ${need[*]}"
      exit 1
    fi
    log "test tools: apt-get install ${need[*]}"
    apt_install "${need[@]}"
  fi
  if $pyyaml_by_pip; then
    log "test tools: pip install PyYAML for $(command -v python3)"
    python3 -m pip install -q PyYAML
  fi
}

# The machine's python3 must be able to make a venv; Debian's own python3 needs
# python3-venv for that (pyenv's and python.org's builds have it built in).
ensure_venv_support() {
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    log "python3 cannot create venvs; installing python3-venv"
    apt_install python3-venv
  fi
}

# install_venv DIR PIP-ARGS...: a venv at DIR holding exactly PIP-ARGS, unless its
# marker already records that same pip line.
install_venv() {
  local dir=$1; shift
  local marker="$dir/.s3lead-install-complete"
  local want="pip install $*"
  if [[ -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
    log "$(basename "$dir"): already installed"
    return 0
  fi
  log "$(basename "$dir"): installing into $dir (a few minutes)"
  local t0=$SECONDS
  ensure_venv_support
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
  echo "$want" > "$marker"
  log "$(basename "$dir"): installed in $((SECONDS - t0)) s"
}

install_rgw() {
  local missing=()
  for b in "${RGW_BINARIES[@]}"; do
    command -v "$b" >/dev/null || missing+=("$b")
  done
  if ((${#missing[@]} == 0)); then
    log "ceph rgw: already installed"
    return 0
  fi
  if [[ $(id -u) != 0 ]]; then
    log "ceph rgw: needs root to apt-get install ${RGW_PACKAGES[*]} (missing: ${missing[*]})"
    exit 1
  fi
  log "ceph rgw: apt-get install ${RGW_PACKAGES[*]} (about a minute)"
  local t0=$SECONDS
  apt_install "${RGW_PACKAGES[@]}"
  log "ceph rgw: installed in $((SECONDS - t0)) s"
}

mkdir -p "$CACHE_DIR"
# Two installs at once (say test.sh and a developer's shell) would otherwise rm -rf each
# other's half-built venv.
exec 9>"$CACHE_DIR/.install.lock"
flock 9

install_test_tools
install_venv "$CACHE_DIR/localstack-$LOCALSTACK_VERSION" "${LOCALSTACK_PIP[@]}"
if $want_rgw; then install_rgw; fi
if $want_moto; then install_venv "$CACHE_DIR/moto-$MOTO_VERSION" "${MOTO_PIP[@]}"; fi
