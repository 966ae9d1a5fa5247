#!/usr/bin/env bash
# The HTML report test renders pages in headless Chromium: Debian's chromium package,
# installed here when it is missing (about 50 s; needs root or sudo and Debian's mirrors).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
echo "consentgate: installing Debian's chromium for the HTML report test" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
