#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh), installs it with dpkg as a user
# would, and checks what an operator then uses: `s3lead` on the PATH, `man s3lead-run`
# (its synopsis as typed, its ENVIRONMENT and EXAMPLES), and the bash completion
# completing a subcommand, from where bash-completion loads it; the zsh and fish files
# in their places. Needs root (dpkg -i), as CI is; .ci/run runs it after the tests.
#
#   S3LEAD_BIN=path scripts/check-deb.sh    package that binary instead of building one
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail() { echo "check-deb.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || fail "needs root to install the package (dpkg -i)"
command -v man >/dev/null || fail "man is missing: apt-get install man-db"

deb=$(scripts/build-deb.sh)
echo "check-deb.sh: built $deb ($(du -h "$deb" | cut -f1))"
dpkg -i "$deb" >/dev/null
echo "check-deb.sh: installed: $(dpkg-query -W -f='${Package} ${Version}' s3lead)," \
  "/usr/bin/s3lead is $(du -h /usr/bin/s3lead | cut -f1)"

[[ $(command -v s3lead) == /usr/bin/s3lead ]] || fail "s3lead is not /usr/bin/s3lead on the PATH"
s3lead --version | grep -q '^s3lead ' || fail "s3lead --version: $(s3lead --version 2>&1)"

page=$(MANWIDTH=120 MANPAGER=cat man s3lead-run 2>&1) || fail "man s3lead-run: $page"
grep -A1 '^SYNOPSIS' <<<"$page" | grep -Eq '^ +s3lead +run ' || fail "man s3lead-run: the synopsis is not 's3lead run': $(grep -A1 '^SYNOPSIS' <<<"$page")"
for needle in '^ENVIRONMENT' '^EXAMPLES' '^EXIT STATUS' 'S3LEAD_TERM' 'AWS_ACCESS_KEY_ID'; do
  grep -q "$needle" <<<"$page" || fail "man s3lead-run: no $needle"
done
for sub in s3lead s3lead-status s3lead-check; do
  MANPAGER=cat man "$sub" >/dev/null 2>&1 || fail "man $sub does not render"
done

completion=/usr/share/bash-completion/completions/s3lead
[[ -f $completion ]] || fail "no bash completion at $completion"
# What bash does on `s3lead ru<TAB>`, and on `s3lead run --lease<TAB>`.
got=$(bash -c 'source "$1"
  COMP_WORDS=(s3lead ru); COMP_CWORD=1; COMP_LINE="s3lead ru"; COMP_POINT=${#COMP_LINE}
  _s3lead s3lead ru s3lead; printf "%s\n" "${COMPREPLY[@]}"' _ "$completion")
grep -qx run <<<"$got" || fail "the bash completion of 's3lead ru' is not 'run': $got"
got=$(bash -c 'source "$1"
  COMP_WORDS=(s3lead run --lease); COMP_CWORD=2; COMP_LINE="s3lead run --lease"; COMP_POINT=${#COMP_LINE}
  _s3lead s3lead --lease run; printf "%s\n" "${COMPREPLY[@]}"' _ "$completion")
grep -qx -- --lease-duration <<<"$got" || fail "the bash completion of 's3lead run --lease' is not '--lease-duration': $got"
[[ -f /usr/share/zsh/vendor-completions/_s3lead ]] || fail "no zsh completion"
[[ -f /usr/share/fish/vendor_completions.d/s3lead.fish ]] || fail "no fish completion"

echo "check-deb.sh: ok: man s3lead-run renders, 's3lead ru<TAB>' completes to run"
