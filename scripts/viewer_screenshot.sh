#!/usr/bin/env bash
# One-time check of `physinv view` in a real browser: Debian's headless Chromium loads the viewer
# page and saves a screenshot. Not part of CI. Usage: scripts/viewer_screenshot.sh RUN OUT.png [PORT]
set -euo pipefail
run="$1"; out="$2"; port="${3:-8097}"
profile="$(mktemp -d)"
.venv/bin/physinv view "$run" --port "$port" --preview 96 & viewer=$!
trap 'kill "$viewer" 2>/dev/null || true; rm -rf "$profile"' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port" >/dev/null && break; sleep 1; done
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --enable-unsafe-swiftshader \
  --window-size=1280,800 --virtual-time-budget=60000 --screenshot="$out" "http://127.0.0.1:$port"
