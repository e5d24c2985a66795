#!/usr/bin/env bash
# deps.sh - install what caravan needs to build and test, on Debian/Ubuntu.
# Idempotent: does nothing when everything is already there. Sourced or run.
set -euo pipefail
PKGS="build-essential cmake pkg-config libopenmpi-dev openmpi-bin libprotobuf-c-dev
      protobuf-c-compiler libevent-dev libnghttp2-dev libjansson-dev python3 python3-pip
      python3-venv python3-regex clang curl"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "caravan: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The CUDA toolkit is optional; put nvcc on PATH when it is installed in the usual place.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
