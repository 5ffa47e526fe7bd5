#!/usr/bin/env bash
# Shoal's test suite:
#  1. unit tests (protocol, sans-io core, ingest, HLS) and integration tests that start
#     real multi-node meshes on 127.0.0.1 and push real ffmpeg streams;
#  2. scripts/e2e.sh: three `shoal` processes, ffmpeg in, ffprobe + ffmpeg + hls.js in
#     headless Chromium out (skipped with SHOAL_SKIP_E2E=1).
# Needs ffmpeg; the e2e part also chromium, python3 and `npm ci --prefix scripts/player`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ffmpeg >/dev/null || { echo "ffmpeg is needed: apt-get install -y ffmpeg" >&2; exit 1; }
# The failover tests run real `shoal` processes: build the binaries first (cargo test
# does not put them in target/debug by itself).
cargo build --workspace --bins
cargo test --workspace --all-targets
if [ "${SHOAL_SKIP_E2E:-0}" != 1 ]; then
  [ -d scripts/player/node_modules/hls.js ] || npm ci --prefix scripts/player --no-audit --no-fund --loglevel=error
  scripts/e2e.sh
fi
