#!/usr/bin/env bash
# End to end with real clients: three `shoal` processes joined through a bootstrap
# address, a live ffmpeg stream pushed into node A, and node C's stream checked with
# ffprobe, decoded for 20 s by ffmpeg, and played by hls.js in headless Chromium through
# C's /watch page; then C's status must show the segments came from peers over the data
# plane. Done for MPEG-TS and for fMP4/CMAF.
#
# Needs: ffmpeg, chromium, python3, curl, and hls.js in scripts/player/node_modules
# (`npm ci --prefix scripts/player`). SHOAL_BIN overrides the binary (default: a debug
# build). Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

BASE_PORT=${BASE_PORT:-18400}
KEY=e2e-key
WORK=$(mktemp -d -t shoal-e2e.XXXXXX)
PIDS=()
FAILED=0

log() { printf '[e2e %s] %s\n' "$(date +%T)" "$*"; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
fail() {
  log "FAILED: $*"
  for n in a b c; do
    echo "---- last lines of node $n's log ($WORK/$n.log)"
    tail -n 25 "$WORK/$n.log" 2>/dev/null || true
  done
  exit 1
}

for tool in ffmpeg ffprobe chromium python3 curl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
HLS_DIR=$ROOT/scripts/player/node_modules/hls.js/dist
[ -f "$HLS_DIR/hls.min.js" ] || fail "hls.js missing: run npm ci --prefix scripts/player"
if [ -z "${SHOAL_BIN:-}" ]; then
  cargo build -q -p shoal-node
  SHOAL_BIN=$ROOT/target/debug/shoal
fi

COLLECTOR=$((BASE_PORT + 90))
REPORTS=$WORK/reports.jsonl
python3 scripts/e2e_collector.py "$COLLECTOR" "$HLS_DIR" "$REPORTS" &
PIDS+=($!)

http_port() { echo $((BASE_PORT + $1)); }
start_node() { # name index [bootstrap]
  local name=$1 i=$2 boot=${3:-}
  local args=(run --data-dir "$WORK/$name" --http "127.0.0.1:$(http_port "$i")"
    --p2p "/ip4/127.0.0.1/udp/$((BASE_PORT + 10 + i))/quic-v1"
    --data "127.0.0.1:$((BASE_PORT + 20 + i))" --ingest-key "$KEY"
    --hls-js-url "http://127.0.0.1:$COLLECTOR/hls.min.js")
  [ -n "$boot" ] && args+=(--bootstrap "$boot")
  RUST_LOG=${RUST_LOG:-info,libp2p=warn} "$SHOAL_BIN" "${args[@]}" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
}
wait_until() { # seconds description command...
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

log "starting three nodes in $WORK"
A_ID=$("$SHOAL_BIN" id --data-dir "$WORK/a")
C_ID=$("$SHOAL_BIN" id --data-dir "$WORK/c")
BOOT="/ip4/127.0.0.1/udp/$((BASE_PORT + 10))/quic-v1/p2p/$A_ID"
start_node a 0
wait_until 20 "node A" curl -fsS "http://127.0.0.1:$(http_port 0)/healthz"
start_node b 1 "$BOOT"
start_node c 2 "$BOOT"
A=127.0.0.1:$(http_port 0)
C=127.0.0.1:$(http_port 2)
c_knows_both() { [ "$(curl -fsS "http://$C/api/status" | json "len(d['peers'])")" = 2 ]; }
wait_until 30 "node C to know both peers" c_knows_both
log "mesh formed: C knows A and B"

check_stream() { # stream packaging-args...
  local stream=$1; shift
  local url="http://$C/live/$stream/index.m3u8"
  log "[$stream] pushing ffmpeg ($*) into node A"
  ffmpeg -nostdin -hide_banner -loglevel error -re \
    -f lavfi -i "testsrc2=size=640x360:rate=25" -f lavfi -i "sine=frequency=440" \
    -c:v libx264 -preset ultrafast -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac \
    -f hls -hls_time 2 -hls_list_size 6 "$@" -method PUT \
    -headers "Authorization: Bearer $KEY" "http://$A/ingest/$stream/index.m3u8" \
    >"$WORK/ffmpeg-$stream.log" 2>&1 &
  local encoder=$!
  PIDS+=($encoder)
  three_on_c() { [ "$(curl -fsS "$url" | grep -c '^[0-9]')" -ge 3 ]; }
  wait_until 40 "[$stream] three segments on node C" three_on_c

  log "[$stream] ffprobe on node C"
  local kinds
  kinds=$(timeout 30 ffprobe -v error -show_entries stream=codec_type -of csv=p=0 "$url" | grep -v "^$" | sort -u | tr '\n' ' ')
  [ "$kinds" = "audio video " ] || fail "[$stream] ffprobe saw '$kinds', expected audio and video"

  log "[$stream] ffmpeg decoding 20 s from node C, hls.js in Chromium playing node C"
  timeout 60 ffmpeg -nostdin -hide_banner -loglevel error -i "$url" -t 20 -c copy -f null - \
    -progress "$WORK/progress-$stream.txt" >"$WORK/reader-$stream.log" 2>&1 &
  local reader=$!
  PIDS+=($reader)
  local profile
  profile=$(mktemp -d -p "$WORK" chromium.XXXX)
  timeout 45 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --autoplay-policy=no-user-gesture-required --user-data-dir="$profile" \
    "http://$C/watch/$stream?report=http://127.0.0.1:$COLLECTOR/report/$stream" \
    >"$WORK/chromium-$stream.log" 2>&1 &
  local browser=$!
  PIDS+=($browser)
  local reader_status=0
  wait "$reader" || reader_status=$?
  [ $reader_status -eq 0 ] || fail "[$stream] ffmpeg reader exited with $reader_status: $(tail -3 "$WORK/reader-$stream.log")"
  if [ -s "$WORK/reader-$stream.log" ]; then
    fail "[$stream] ffmpeg reader printed errors: $(head -5 "$WORK/reader-$stream.log")"
  fi
  local read_us
  read_us=$(grep '^out_time_us=' "$WORK/progress-$stream.txt" | tail -1 | cut -d= -f2)
  [ "${read_us:-0}" -ge 19000000 ] || fail "[$stream] ffmpeg read only ${read_us:-0} us"
  # Let the browser play for the rest of its time, then read its last report.
  local played=""
  local deadline=$((SECONDS + 40))
  while [ $SECONDS -lt $deadline ]; do
    played=$(grep "\"name\": \"$stream\"" "$REPORTS" 2>/dev/null | tail -1 || true)
    if [ -n "$played" ] && echo "$played" | json "1 if d['currentTime'] >= 12 else 0" | grep -q 1; then break; fi
    sleep 1
  done
  kill "$browser" 2>/dev/null || true
  [ -n "$played" ] || fail "[$stream] the player page never reported (see $WORK/chromium-$stream.log)"
  local verdict
  verdict=$(echo "$played" | json "'ok' if d['currentTime'] >= 10 and d['decodedFrames'] > 0 and not d['fatal'] else 'bad'")
  [ "$verdict" = ok ] || fail "[$stream] browser playback: $played"
  kill "$encoder" 2>/dev/null || true

  local figures
  figures=$(curl -fsS "http://$C/api/status" | python3 -c "
import json, sys, collections
d = json.load(sys.stdin)
s = next(x for x in d['streams'] if x['name'] == '$stream')
held = [x for x in s['segments'] if x['held']]
vias = collections.Counter(x['via'] for x in held)
srcs = collections.Counter(x['source'][-8:] for x in held)
ok = held and all(x['via'] == 'data-plane' for x in held) and not s['ingest']
print(('ok' if ok else 'bad') + ' held=%d via=%s from=%s' % (len(held), dict(vias), dict(srcs)))
")
  [ "${figures%% *}" = ok ] || fail "[$stream] node C's segments: $figures"
  log "[$stream] PASS: ffprobe saw audio+video; ffmpeg read $((read_us / 1000000)) s without errors;" \
    "browser $(echo "$played" | json "'%s currentTime=%.1f s, frames decoded=%d dropped=%d, %dx%d, fatal=%s' % (d['player'], d['currentTime'], d['decodedFrames'], d['droppedFrames'], d['videoWidth'], d['videoHeight'], d['fatal'])");" \
    "node C segments: ${figures#ok }"
}

check_stream e2e-ts
check_stream e2e-cmaf -hls_segment_type fmp4
log "node C is ${C_ID}; A is ${A_ID}"
log "all end-to-end checks passed"
echo "e2e: 2 passed, 0 failed"
