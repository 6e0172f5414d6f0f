#!/usr/bin/env bash
# An arm64 Node.js for qemu-user, from Debian's own packages: nodejs and what it depends on,
# downloaded with a private apt state (arm64 package lists in DIR, the machine's apt setup is not
# touched) and unpacked into DIR/root. Run it as:
#
#   qemu-aarch64 -L DIR/root DIR/root/usr/bin/node ...
#
# Needs apt-get and dpkg-deb (Debian/Ubuntu) and the machine's package mirror.
#   test/package/arm64-node.sh DIR
set -euo pipefail
dir=${1:?usage: arm64-node.sh DIR}
mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs" "$dir/root"
apt=(-q -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o "Dir::State::Lists=$dir/lists"
  -o "Dir::Cache=$dir/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update >/dev/null
# nodejs's dependency closure (libnode, its libraries, and the builtins Debian keeps in node-* packages)
mapfile -t pkgs < <(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances nodejs | grep -E '^[a-z0-9]' | sed 's/:arm64$//' | sort -u)
(cd "$dir/debs" && apt-get "${apt[@]}" download "${pkgs[@]}" >/dev/null)
for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
test -x "$dir/root/usr/bin/node"
