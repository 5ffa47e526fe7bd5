#!/usr/bin/env bash
# A local three-node Shoal mesh with a live ffmpeg test stream.
#
#   scripts/demo.sh            # build (release), start 3 nodes, push a test stream into B
#
# Node A starts alone; B and C join through A's bootstrap address, as an operator would
# on three hosts. ffmpeg pushes a test pattern (H.264 + AAC) into B over RTMP, as OBS
# would (the node cuts 2 s segments); INGEST=hls pushes HLS with HTTP PUT instead. The
# stream can be watched on any node. Ctrl-C stops everything this script started.
#
# Environment: SHOAL_BIN (use this binary instead of building), BASE_PORT (default
# 8080: HTTP ports BASE..BASE+2, UDP ports BASE_PORT+1000..., RTMP BASE_PORT+3000..., SRT
# BASE_PORT+4000...),
# STREAM (default "demo"), INGEST (rtmp or hls, default rtmp),
# KEY (ingest key, default "demo-key"), DURATION (seconds to run, default: until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_PORT=${BASE_PORT:-8080}
STREAM=${STREAM:-demo}
KEY=${KEY:-demo-key}
DURATION=${DURATION:-}
INGEST=${INGEST:-rtmp}
WORK=$(mktemp -d -t shoal-demo.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs are in $WORK"
}
trap cleanup EXIT INT TERM

command -v ffmpeg >/dev/null || { echo "ffmpeg is needed: apt-get install -y ffmpeg" >&2; exit 1; }
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build --release -q -p shoal-node
  SHOAL_BIN=target/release/shoal
fi

start_node() { # name index [bootstrap]
  local name=$1 i=$2 boot=${3:-}
  local http=$((BASE_PORT + i)) p2p=$((BASE_PORT + 1000 + i)) data=$((BASE_PORT + 2000 + i))
  local args=(run --data-dir "$WORK/$name" --http "127.0.0.1:$http"
    --p2p "/ip4/127.0.0.1/udp/$p2p/quic-v1" --data "127.0.0.1:$data" --ingest-key "$KEY"
    --rtmp "127.0.0.1:$((BASE_PORT + 3000 + i))" --srt "127.0.0.1:$((BASE_PORT + 4000 + i))")
  [ -n "$boot" ] && args+=(--bootstrap "$boot")
  "$SHOAL_BIN" "${args[@]}" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}

wait_http() { # port
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node on port $1 did not come up" >&2; return 1
}

A_ID=$("$SHOAL_BIN" id --data-dir "$WORK/a")
BOOT="/ip4/127.0.0.1/udp/$((BASE_PORT + 1000))/quic-v1/p2p/$A_ID"
start_node a 0
wait_http "$BASE_PORT"
start_node b 1 "$BOOT"
start_node c 2 "$BOOT"
wait_http $((BASE_PORT + 1)); wait_http $((BASE_PORT + 2))

RTMP_B="rtmp://127.0.0.1:$((BASE_PORT + 3001))/live"
if [ "$INGEST" = hls ]; then
  # HLS pushed with HTTP PUT, ffmpeg's own segmenter.
  INGEST_AT="http://127.0.0.1:$((BASE_PORT + 1))/ingest/$STREAM/index.m3u8"
  ffmpeg -nostdin -hide_banner -loglevel error -re \
    -f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440" \
    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -f hls -hls_time 2 -hls_list_size 6 -method PUT \
    -headers "Authorization: Bearer $KEY" "$INGEST_AT" >"$WORK/ffmpeg.log" 2>&1 &
else
  # RTMP, as OBS pushes: the node segments it.
  INGEST_AT="$RTMP_B/$STREAM?key=$KEY"
  ffmpeg -nostdin -hide_banner -loglevel error -re \
    -f lavfi -i "testsrc2=size=640x360:rate=30" -f lavfi -i "sine=frequency=440" \
    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -keyint_min 60 -sc_threshold 0 \
    -c:a aac -f flv "$INGEST_AT" >"$WORK/ffmpeg.log" 2>&1 &
fi
PIDS+=($!)

cat <<MSG

Shoal demo mesh is up (logs in $WORK).
  bootstrap:  $BOOT
  ingest:     ffmpeg -> $INGEST_AT (node B)
  OBS:        Settings > Stream > Service "Custom...", Server $RTMP_B,
              Stream Key $STREAM?key=$KEY (keyframe interval 2 s)
  SRT:        srt://127.0.0.1:$((BASE_PORT + 4001))?streamid=#!::r=$STREAM,m=publish,s=$KEY
  watch on any node (the first segment takes ~2 s):
    A  http://127.0.0.1:$BASE_PORT/live/$STREAM/index.m3u8
    B  http://127.0.0.1:$((BASE_PORT + 1))/live/$STREAM/index.m3u8
    C  http://127.0.0.1:$((BASE_PORT + 2))/live/$STREAM/index.m3u8
  e.g. ffplay http://127.0.0.1:$((BASE_PORT + 2))/live/$STREAM/index.m3u8
  status: curl http://127.0.0.1:$((BASE_PORT + 2))/api/status
Press Ctrl-C to stop.
MSG

if [ -n "$DURATION" ]; then sleep "$DURATION"; else wait; fi
