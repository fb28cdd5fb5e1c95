#!/usr/bin/env bash
# System packages: OpenSSL (the `vrf` crate's ECVRF on secp256k1) through pkg-config, which the
# build links against, and a headless Chromium, in which the node's status page is rendered by
# its test (rakis-node/tests/status_page.rs). Installs what is missing with apt on
# Debian/Ubuntu; elsewhere, install the `openssl` development headers, `pkg-config` and Chromium
# (set RAKIS_CHROMIUM to its binary) with your package manager.
set -euo pipefail
missing=()
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config)
if [ -z "${RAKIS_CHROMIUM:-}" ] && ! command -v chromium-headless-shell >/dev/null 2>&1 \
  && ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium-headless-shell)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  echo "== installing ${missing[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "missing: ${missing[*]} (OpenSSL headers and pkg-config for the VRF; a headless Chromium for the status page test)" >&2
  exit 1
fi
