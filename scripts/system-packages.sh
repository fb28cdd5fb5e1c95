#!/usr/bin/env bash
# System packages: a headless Chromium, in which the node's status page is rendered by its test
# (rakis-node/tests/status_page.rs). Installs it with apt on Debian/Ubuntu when missing;
# elsewhere, install Chromium (set RAKIS_CHROMIUM to its binary) with your package manager.
# The build itself needs no system library (the VRF is pure Rust since it left OpenSSL).
set -euo pipefail
missing=()
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
  echo "missing: ${missing[*]} (a headless Chromium for the status page test)" >&2
  exit 1
fi
