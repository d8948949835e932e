#!/usr/bin/env bash
# Installs the Debian packages pathformer needs to build, run and test, when any is missing.
# Needs root (or sudo) only when something has to be installed.
set -euo pipefail
packages=(gcc make libc6-dev libcjson-dev libcmocka-dev libopenblas-dev python3-torch python3-numpy)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
