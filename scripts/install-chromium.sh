#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (the console's end-to-end tests drive headless
# Chromium from Go with chromedp) unless chromium is already on PATH. Idempotent; needs root for apt.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
	echo "chromium already installed at $(command -v chromium)"
	exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
echo "installing chromium and chromium-driver with apt-get"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver
echo "installed: $(command -v chromium) ($(dpkg-query -W -f='${Version}' chromium))"
