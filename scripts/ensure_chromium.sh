#!/usr/bin/env bash
# Headless Chromium for the report-page test (Debian's package); installed once if missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "chromium is missing and we are not root: install Debian's 'chromium' package" >&2
  exit 1
fi
echo "installing Debian's chromium for the report-page test"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version
