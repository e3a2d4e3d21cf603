#!/usr/bin/env bash
# Builds the Debian package of s3lead with dpkg-deb alone (no cargo-deb needed):
#
#   scripts/build-deb.sh            cargo build --release --locked, then the package
#   S3LEAD_BIN=path scripts/build-deb.sh    package that binary instead of building one
#
# The package installs what an operator expects where Debian puts it:
#   /usr/bin/s3lead
#   /usr/share/man/man1/s3lead.1.gz, s3lead-run.1.gz, s3lead-status.1.gz, s3lead-check.1.gz
#   /usr/share/bash-completion/completions/s3lead
#   /usr/share/zsh/vendor-completions/_s3lead
#   /usr/share/fish/vendor_completions.d/s3lead.fish
#   /usr/share/doc/s3lead/ (README.md, copyright, examples/)
# and prints the path of the .deb it wrote, under $CARGO_TARGET_DIR (or target)/debian/.
# The man pages and completions are the committed ones (man/, completions/), which the
# binary's generated_docs test keeps equal to the clap definitions.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

for tool in dpkg-deb dpkg gzip; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is missing: apt-get install dpkg gzip" >&2; exit 1; }
done

target=${CARGO_TARGET_DIR:-target}
bin=${S3LEAD_BIN:-}
if [[ -z $bin ]]; then
  cargo build --release --locked --bin s3lead >&2
  bin=$target/release/s3lead
fi
[[ -x $bin ]] || { echo "build-deb.sh: no executable at $bin" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
out=$target/debian
stage=$out/s3lead_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/share/man/man1" \
  "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d" "$stage/usr/share/doc/s3lead"

install -m 0755 "$bin" "$stage/usr/bin/s3lead"
for page in man/*.1; do
  gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 completions/s3lead.bash "$stage/usr/share/bash-completion/completions/s3lead"
install -m 0644 completions/_s3lead "$stage/usr/share/zsh/vendor-completions/_s3lead"
install -m 0644 completions/s3lead.fish "$stage/usr/share/fish/vendor_completions.d/s3lead.fish"
install -m 0644 README.md "$stage/usr/share/doc/s3lead/README.md"
cp -r examples "$stage/usr/share/doc/s3lead/examples"
find "$stage/usr/share/doc/s3lead/examples" -type f -exec chmod 0644 {} +
cat >"$stage/usr/share/doc/s3lead/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: s3lead
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

# The shared libraries the binary links (ldd: libc, libm, libgcc_s), as packages.
depends=$(ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
  dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true
done | cut -d: -f1 | sort -u | paste -sd, - | sed 's/,/, /g')
size=$(du -sk "$stage/usr" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: s3lead
Version: $version
Architecture: $arch
Maintainer: s3lead maintainers <s3lead@localhost>
Installed-Size: $size
Depends: ${depends:-libc6}
Section: admin
Priority: optional
Description: run a command only while holding a lease kept in one S3 object
 s3lead campaigns for a lock kept in one S3 object (or a local file) and runs the
 command only while it holds the lease, with a fencing term that grows with every
 new leader: two copies of the command never run at once. For cron jobs that must
 run once across a fleet and singleton workers under systemd or Kubernetes.
CONTROL

deb=$out/s3lead_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
echo "$deb"
