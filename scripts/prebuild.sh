#!/usr/bin/env bash
# The prebuilt addons `npm pack` puts in the package (prebuildify --napi: one N-API build serves
# every Node version): prebuilds/linux-arm64, cross-compiled with Debian's aarch64 toolchain
# (apt-get install g++-aarch64-linux-gnu), then prebuilds/linux-x64 for this machine. The host
# build runs last, so build/ holds this machine's addon afterwards. Each build's datapath process
# (build/Release/uvtep-datapath, src/datapath.ts) goes next to its addon, stripped.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" = x86_64 ]; then
  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1; then
    CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ PREBUILD_STRIP_BIN=aarch64-linux-gnu-strip \
      prebuildify --napi --strip --name addon --arch arm64
    install -D -m 755 build/Release/uvtep-datapath prebuilds/linux-arm64/uvtep-datapath
    aarch64-linux-gnu-strip prebuilds/linux-arm64/uvtep-datapath
  else
    echo "prebuild: the package gets no linux-arm64 addon: its cross-compiler is missing (apt-get install g++-aarch64-linux-gnu)" >&2
  fi
fi
prebuildify --napi --strip --name addon
install -D -m 755 build/Release/uvtep-datapath "prebuilds/linux-$(node -p process.arch)/uvtep-datapath"
strip "prebuilds/linux-$(node -p process.arch)/uvtep-datapath"
