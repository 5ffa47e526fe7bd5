#!/usr/bin/env bash
# Shoal's test suite: unit tests (protocol, sans-io core, ingest, HLS) and integration
# tests that start real multi-node meshes on 127.0.0.1 and push real ffmpeg streams.
# Needs ffmpeg on PATH (apt-get install -y ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ffmpeg >/dev/null || { echo "ffmpeg is needed: apt-get install -y ffmpeg" >&2; exit 1; }
cargo test --workspace --all-targets
