#!/usr/bin/env bash
# Installs what pathformer needs to build, run and test, when any of it is missing: Debian packages
# (compiler, libraries, Open MPI for data-parallel training and its tests, PyTorch for the parity test,
# Node.js for the report's plotting libraries, Chromium for the report's browser test, clang with
# libFuzzer for the fuzz targets; on x86-64 the
# ARM64 cross compiler, qemu-user and the ARM64 libraries through multiarch, for the ARM64 build of
# scripts/variant_tests.sh and its run on an emulated AVX2-only CPU), then the npm packages pinned in package-lock.json.
# Needs root (or sudo) only when a Debian package has to be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(gcc make libc6-dev libcjson-dev libcmocka-dev libopenblas-dev python3-torch python3-numpy chromium clang
          libclang-rt-14-dev libopenmpi-dev openmpi-bin)
cross=0
if [ "$(dpkg --print-architecture)" = amd64 ]; then
    packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libcjson-dev:arm64 libcmocka-dev:arm64 libgomp1:arm64)
    dpkg --print-foreign-architectures | grep -qx arm64 || cross=1
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from elsewhere than Debian (e.g. with its own npm): only the commands matter.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: need root to apt-get install ${missing[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    [ $cross -eq 0 ] || $sudo dpkg --add-architecture arm64  # the ARM64 libraries (multiarch)
    $sudo apt-get update -q
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The report's libraries, at the versions of package-lock.json (again whenever the lock changes).
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi
