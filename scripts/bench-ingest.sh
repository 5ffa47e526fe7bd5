#!/usr/bin/env bash
# Ingest benchmark (issue #14): CPU per ingested stream (RTMP and SRT) and memory per
# stream.
#
# One 1080p30 H.264 + AAC input at 6 Mbit/s (made once with ffmpeg, 30 s, a keyframe every
# 2 s), pushed over RTMP into a release `shoal` node (which parses RTMP/FLV, cuts 2 s
# MPEG-TS segments, hashes, signs, stores and announces them), against the reference
# `ffmpeg -c copy -f hls` remuxing the same file into 2 s segments. Both read at 4x real
# time (`-readrate 4`). CPU is user+system seconds per second of media, A B A B in the same
# run: Shoal's from /proc/PID/stat of the node (minus the node's idle use over the same
# wall time, measured just before), ffmpeg's from bash's `time`. The pushing ffmpeg's own
# CPU is the encoder's and is not counted. Memory: resident memory of a node ingesting 4
# such streams at real time, less an idle node, per stream; and the share of it that is
# the segment window (bytes held).
#
# Environment: SHOAL_BIN (default: cargo build --release), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d -t shoal-bench-ingest.XXXXXX)
PIDS=()
KEY=bench-key
log() { printf '[bench-ingest %s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build --release -q -p shoal-node
  SHOAL_BIN=target/release/shoal
fi
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

IN=$WORK/in.flv
log "making the input: 30 s of 1080p30 H.264 at 6 Mbit/s + AAC"
ffmpeg -nostdin -v error -f lavfi -i "testsrc2=size=1920x1080:rate=30" -f lavfi -i "sine=frequency=440" \
  -t 30 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -b:v 6M -maxrate 6M -bufsize 12M \
  -g 60 -keyint_min 60 -sc_threshold 0 -c:a aac -b:a 128k -f flv "$IN"
MEDIA_S=30

start_node() { # port-offset
  local o=$1
  "$SHOAL_BIN" run --data-dir "$WORK/node$o" --http "127.0.0.1:$((19500 + o))" \
    --p2p "/ip4/127.0.0.1/udp/$((19510 + o))/quic-v1" --data "127.0.0.1:$((19520 + o))" \
    --rtmp "127.0.0.1:$((19530 + o))" --srt "127.0.0.1:$((19540 + o))" \
    --ingest-key "$KEY" --window 64 \
    >"$WORK/node$o.log" 2>&1 &
  NODE=$!
  PIDS+=($NODE)
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$((19500 + o))/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "node did not start"; exit 1
}

shoal_round() { # round rtmp|srt -> prints CPU s per media s
  local r=$1 proto=$2
  start_node "$r"
  sleep 2
  local t0 i0 t1 i1 w0 w1
  i0=$(cpu_ticks "$NODE"); w0=$(date +%s%N)
  sleep 4
  i1=$(cpu_ticks "$NODE"); w1=$(date +%s%N)
  local idle_per_s
  idle_per_s=$(python3 -c "print(($i1 - $i0) / $HZ / (($w1 - $w0) / 1e9))")
  t0=$(cpu_ticks "$NODE"); w0=$(date +%s%N)
  if [ "$proto" = srt ]; then
    ffmpeg -nostdin -v error -readrate 4 -i "$IN" -c copy -f mpegts \
      "srt://127.0.0.1:$((19540 + r))?streamid=#!::r=bench,m=publish,s=$KEY&latency=200000"
  else
    ffmpeg -nostdin -v error -readrate 4 -i "$IN" -c copy -f flv \
      "rtmp://127.0.0.1:$((19530 + r))/live/bench?key=$KEY"
  fi
  sleep 1 # the last segment
  t1=$(cpu_ticks "$NODE"); w1=$(date +%s%N)
  local segs
  segs=$(curl -fsS "http://127.0.0.1:$((19500 + r))/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['counters']['ingest_segments_total'])")
  kill "$NODE"; wait "$NODE" 2>/dev/null || true
  python3 -c "
wall = ($w1 - $w0) / 1e9
gross = ($t1 - $t0) / $HZ
net = max(gross - $idle_per_s * wall, 0)
print('%.4f %.4f %d' % (net / $MEDIA_S, gross / $MEDIA_S, $segs))"
}

ffmpeg_round() {
  local out=$WORK/hls-$1
  mkdir -p "$out"
  local TIMEFORMAT='%U %S'
  local t
  t=$({ time ffmpeg -nostdin -v error -readrate 4 -i "$IN" -c copy -f hls -hls_time 2 \
    -hls_list_size 6 "$out/index.m3u8" >/dev/null 2>&1; } 2>&1)
  python3 -c "u, s = '$t'.split(); print('%.4f' % ((float(u) + float(s)) / $MEDIA_S))"
}

SHOAL=(); SRT=(); FFMPEG=()
for r in $(seq 1 "$ROUNDS"); do
  read -r net gross segs < <(shoal_round "$r" rtmp)
  log "round $r: shoal over RTMP $net CPU-s per media-s (gross $gross, $segs segments)"
  SHOAL+=("$net")
  read -r net gross segs < <(shoal_round "$((r + 4))" srt)
  log "round $r: shoal over SRT $net CPU-s per media-s (gross $gross, $segs segments)"
  SRT+=("$net")
  f=$(ffmpeg_round "$r")
  log "round $r: ffmpeg -c copy -f hls $f CPU-s per media-s"
  FFMPEG+=("$f")
done

log "memory: 4 streams at real time for 20 s"
start_node 9
sleep 2
IDLE_KB=$(rss_kb "$NODE")
SENDERS=()
for s in 1 2 3 4; do
  ffmpeg -nostdin -v error -re -i "$IN" -t 20 -c copy -f flv \
    "rtmp://127.0.0.1:19539/live/mem$s?key=$KEY" &
  SENDERS+=($!)
  PIDS+=($!)
done
sleep 18
BUSY_KB=$(rss_kb "$NODE")
STORE=$(curl -fsS "http://127.0.0.1:19509/api/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['store']['bytes'])")
for p in "${SENDERS[@]}"; do wait "$p" 2>/dev/null || true; done

python3 - "$IDLE_KB" "$BUSY_KB" "$STORE" "${SHOAL[*]}" "${FFMPEG[*]}" "${SRT[*]}" <<'PY'
import json, statistics, sys
idle_kb, busy_kb, store = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
shoal = [float(x) for x in sys.argv[4].split()]
ffmpeg = [float(x) for x in sys.argv[5].split()]
srt = [float(x) for x in sys.argv[6].split()]
s, f, t = statistics.median(shoal), statistics.median(ffmpeg), statistics.median(srt)
per_stream = (busy_kb - idle_kb) * 1024 / 4
out = {
    "shoal_cpu_s_per_media_s": s,
    "ffmpeg_hls_copy_cpu_s_per_media_s": f,
    "cpu_ratio_shoal_over_ffmpeg": s / f if f else None,
    "shoal_srt_cpu_s_per_media_s": t,
    "cpu_ratio_shoal_srt_over_ffmpeg": t / f if f else None,
    "rss_idle_mib": idle_kb / 1024,
    "rss_4_streams_mib": busy_kb / 1024,
    "rss_per_stream_mib": per_stream / 2**20,
    "segment_window_per_stream_mib": store / 4 / 2**20,
    "rss_per_stream_beyond_window_mib": (per_stream - store / 4) / 2**20,
}
print(json.dumps(out, indent=1))
PY
