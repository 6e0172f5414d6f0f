#!/usr/bin/env bash
# What the namespace tests, the demo and the benchmarks need of a Debian 12 machine, by command
# and package: iproute2 (ip netns, bridges), iputils-ping, ethtool (tx checksum offload off on the
# kernel side in interop tests), tcpdump (wire captures), iperf3 and socat (benchmarks), etcd and
# etcdctl (the etcd control plane's tests start their own), nft and iptables-legacy (netfilter
# rules that hold tunnel GSO back in its auto mode), python3 (an application sending UDP
# GSO through the overlay: Node's dgram cannot), the aarch64 cross-compiler and qemu-user (the
# package test builds the linux-arm64 prebuild and runs it on an arm64 Node); with --toolchain
# also what node-gyp needs to build the TAP addon (g++, make; python3 too).
#
#   scripts/test-deps.sh              name what is missing, with the apt-get command
#   scripts/test-deps.sh --install    install it when run as root with apt-get (npm test does this)
set -euo pipefail
install=0
toolchain=0
for a in "$@"; do
  case "$a" in
    --install) install=1 ;;
    --toolchain) toolchain=1 ;;
    *) echo "test-deps: unknown option $a (accepted: --install, --toolchain)" >&2; exit 2 ;;
  esac
done
pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need ip iproute2
need ping iputils-ping
need ethtool ethtool
need tcpdump tcpdump
need iperf3 iperf3
need socat socat
need etcd etcd-server
need etcdctl etcd-client
need aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
need qemu-aarch64 qemu-user
need python3 python3
need nft nftables
need iptables-legacy iptables
if [ "$toolchain" = 1 ]; then
  need make make
  need g++ g++
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0
if [ "$install" = 1 ] && [ "${EUID:-1}" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test-deps: installing ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${pkgs[@]}"
else
  echo "test-deps: the namespace tests need: apt-get install ${pkgs[*]} (as root); without them they skip, or fail under CI=true" >&2
fi
