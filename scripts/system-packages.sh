#!/usr/bin/env bash
# The system libraries the build links against: OpenSSL (the `vrf` crate's ECVRF on secp256k1)
# through pkg-config. Installs them with apt on Debian/Ubuntu when they are missing; elsewhere,
# install `openssl` development headers and `pkg-config` with your package manager.
set -euo pipefail
if pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  echo "== installing libssl-dev and pkg-config (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libssl-dev pkg-config
else
  echo "OpenSSL development files and pkg-config are needed (the VRF links OpenSSL)" >&2
  exit 1
fi
