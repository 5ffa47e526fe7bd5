#!/usr/bin/env bash
# Shoal's benchmarks, each as a ratio against a reference measured in the same run
# (shared, noisy machines: absolute figures from different runs do not compare).
#
#  1. HTTP egress: a Shoal node serving a cached 1 MB segment, a 200 KB segment and its
#     playlist, against nginx (sendfile on, access_log off) serving byte-identical files,
#     both on 127.0.0.1, loaded by wrk with the same settings, A B A B. Then 2,000
#     concurrent keep-alive connections on the 200 KB segment: errors and p99 latency.
#  2. Relay: `shoal-sim bench relay` (Shoal pull path against plain quinn).
#  3. Propagation: `shoal-sim bench propagation` at 3, 10 and 25 nodes.
#  4. First byte: `shoal-sim bench first-byte` (cold pull against held).
#  5. Memory: resident memory of an idle node, of one holding 10 streams, and with 1,000
#     viewer connections; bytes per connection.
#
# Writes scripts/bench-results.json and BENCHMARKS.md. Not part of the test run.
# Environment: DURATION (seconds per wrk run, default 10), BASE_PORT (default 19300).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10}
BASE_PORT=${BASE_PORT:-19300}
WORK=$(mktemp -d -t shoal-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
PIDS=()
KEY=bench-key

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

for tool in nginx wrk; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
  fi
done
command -v nginx >/dev/null || PATH=$PATH:/usr/sbin
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "building release binaries"
cargo build --release -q -p shoal-node -p shoal-sim
SHOAL=$ROOT/target/release/shoal
SIM=$ROOT/target/release/shoal-sim

# ---- 1. HTTP egress against nginx ---------------------------------------------------
# The stream is ingested once and then only served, with pauses while nginx runs: it must
# not be forgotten as an idle stream in between (--ingest-forget).
SHOAL_HTTP=127.0.0.1:$BASE_PORT
NGINX_HTTP=127.0.0.1:$((BASE_PORT + 1))
"$SHOAL" run --data-dir "$WORK/node" --http "$SHOAL_HTTP" \
  --p2p "/ip4/127.0.0.1/udp/$((BASE_PORT + 2))/quic-v1" --data "127.0.0.1:$((BASE_PORT + 3))" \
  --ingest-key "$KEY" --ingest-forget 86400 >"$WORK/node.log" 2>&1 &
SHOAL_PID=$!
PIDS+=($SHOAL_PID)
for _ in $(seq 1 100); do curl -fsS "http://$SHOAL_HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
head -c 1000000 /dev/urandom >"$WORK/big.ts"
head -c 200000 /dev/urandom >"$WORK/small.ts"
put() { curl -fsS -X PUT -H "Authorization: Bearer $KEY" --data-binary "@$2" "http://$SHOAL_HTTP/ingest/bench/$1" >/dev/null; }
put big.ts "$WORK/big.ts"
put small.ts "$WORK/small.ts"
printf '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nbig.ts\n#EXTINF:2.0,\nsmall.ts\n' >"$WORK/enc.m3u8"
put index.m3u8 "$WORK/enc.m3u8"
# nginx serves exactly what Shoal serves. Shoal's playlist carries the viewer's session
# id in its segment URLs: the copy is taken with an id as long as the ones Shoal mints.
SID=benchbenchbenchbench
mkdir -p "$WORK/www/live/bench"
for f in 0.ts 1.ts index.m3u8; do
  curl -fsS "http://$SHOAL_HTTP/live/bench/$f?sid=$SID" -o "$WORK/www/live/bench/$f"
done
cmp -s "$WORK/www/live/bench/0.ts" "$WORK/big.ts" || { log "segment 0 differs from what was ingested"; exit 1; }
# nginx's workers run as www-data: let them read the files.
chmod -R a+rX "$WORK"
cat >"$WORK/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 16384; }
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 1000000;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server { listen $NGINX_HTTP; root $WORK/www; }
}
NGINX
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for _ in $(seq 1 50); do curl -fsS "http://$NGINX_HTTP/live/bench/index.m3u8" >/dev/null 2>&1 && break; sleep 0.1; done
for f in 0.ts 1.ts index.m3u8; do
  curl -fsS "http://$NGINX_HTTP/live/bench/$f" | cmp -s - "$WORK/www/live/bench/$f" \
    || { log "nginx does not serve $f byte for byte (see $WORK/nginx-error.log)"; exit 1; }
  curl -fsS "http://$SHOAL_HTTP/live/bench/$f?sid=$SID" | cmp -s - "$WORK/www/live/bench/$f" \
    || { log "shoal does not serve $f byte for byte"; exit 1; }
done

# wrk_run NAME SERVER CONNECTIONS URL [BENCH] -> one JSON line
wrk_run() {
  local name=$1 server=$2 conns=$3 url=$4 bench=${5:-egress}
  local out
  out=$(wrk -t2 -c"$conns" -d"${DURATION}s" --latency "$url" 2>&1)
  WRK_OUT=$out python3 - "$name" "$server" "$conns" "$bench" <<'PY' >>"$RESULTS"
import json, os, re, sys
out = os.environ["WRK_OUT"]
name, server, conns, bench = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def unit(v, u):
    return float(v) * {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "B": 1}[u]
def lat(v, u):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
bps = unit(m.group(1), m.group(2))
p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(json.dumps({"bench": bench, "target": name, "server": server, "connections": conns,
  "requests_per_s": rps, "bytes_per_s": bps, "p99_ms": lat(p99.group(1), p99.group(2)) if p99 else None,
  "socket_errors": sum(map(int, errors.groups())) if errors else 0,
  "non_2xx": int(non2xx.group(1)) if non2xx else 0}))
PY
  # A server that answered anything but 200 is not measured at all: say what it said.
  if grep -q "Non-2xx" <<<"$out"; then
    log "$name on $server: $(grep "Non-2xx" <<<"$out"); now it answers:"
    curl -s -i "$url" | head -c 600 | tr -d '\0' | grep -av '^[^[:print:]]' | head -12 >&2 || true
    local base=${url#http://}; base=${base%%/*}
    curl -s "http://$base/api/status" | python3 -c 'import json,sys; s=json.load(sys.stdin); print({k: v for k, v in s["counters"].items() if "viewer" in k}, s.get("load"))' >&2 || true
  fi
}
for target in "segment-1MB 0.ts" "segment-200KB 1.ts" "playlist index.m3u8"; do
  set -- $target
  # A B, then B A: whichever runs first after a pause is not favoured.
  log "egress $1: shoal, then nginx (round 1 of 2, ${DURATION}s each)"
  wrk_run "$1" shoal 64 "http://$SHOAL_HTTP/live/bench/$2"
  wrk_run "$1" nginx 64 "http://$NGINX_HTTP/live/bench/$2"
  log "egress $1: nginx, then shoal (round 2 of 2, ${DURATION}s each)"
  wrk_run "$1" nginx 64 "http://$NGINX_HTTP/live/bench/$2"
  wrk_run "$1" shoal 64 "http://$SHOAL_HTTP/live/bench/$2"
done
log "2,000 keep-alive connections on the 200 KB segment: shoal, then nginx"
wrk_run viewers-2000 shoal 2000 "http://$SHOAL_HTTP/live/bench/1.ts"
wrk_run viewers-2000 nginx 2000 "http://$NGINX_HTTP/live/bench/1.ts"

# ---- 1b. viewer tokens: what checking one costs per request ---------------------------
# A second node, the same binary, with --viewer-key; every request carries a token it
# verifies (EdDSA signature, expiry, stream). Against the first node without tokens.
TOKEN_HTTP=127.0.0.1:$((BASE_PORT + 4))
VIEWER_KEY=$("$SHOAL" keygen "$WORK/viewer.pem" | tail -1)
"$SHOAL" run --data-dir "$WORK/node-tokens" --http "$TOKEN_HTTP" \
  --p2p "/ip4/127.0.0.1/udp/$((BASE_PORT + 5))/quic-v1" --data "127.0.0.1:$((BASE_PORT + 6))" \
  --ingest-key "$KEY" --viewer-key "$VIEWER_KEY" --ingest-forget 86400 \
  >"$WORK/node-tokens.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fsS "http://$TOKEN_HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
SHOAL_HTTP_PLAIN=$SHOAL_HTTP SHOAL_HTTP=$TOKEN_HTTP
put big.ts "$WORK/big.ts"; put small.ts "$WORK/small.ts"; put index.m3u8 "$WORK/enc.m3u8"
SHOAL_HTTP=$SHOAL_HTTP_PLAIN
TOKEN=$("$SHOAL" token --key "$WORK/viewer.pem" --stream bench --ttl 1h)
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$TOKEN_HTTP/live/bench/1.ts?sid=$SID")" = 401 ] \
  || { log "the token node serves without a token"; exit 1; }
curl -fsS "http://$TOKEN_HTTP/live/bench/1.ts?sid=$SID&token=$TOKEN" | cmp -s - "$WORK/small.ts" \
  || { log "the token node does not serve the segment with a token"; exit 1; }
for target in "playlist index.m3u8" "segment-200KB 1.ts"; do
  set -- $target
  log "viewer tokens, $1: with, then without; without, then with (${DURATION}s each)"
  wrk_run "$1" tokens 64 "http://$TOKEN_HTTP/live/bench/$2?sid=$SID&token=$TOKEN" tokens
  wrk_run "$1" plain 64 "http://$SHOAL_HTTP/live/bench/$2?sid=$SID" tokens
  wrk_run "$1" plain 64 "http://$SHOAL_HTTP/live/bench/$2?sid=$SID" tokens
  wrk_run "$1" tokens 64 "http://$TOKEN_HTTP/live/bench/$2?sid=$SID&token=$TOKEN" tokens
done

# ---- 5. memory ------------------------------------------------------------------------
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
"$SHOAL" run --data-dir "$WORK/mem" --http "127.0.0.1:$((BASE_PORT + 10))" \
  --p2p "/ip4/127.0.0.1/udp/$((BASE_PORT + 11))/quic-v1" --data "127.0.0.1:$((BASE_PORT + 12))" \
  --ingest-key "$KEY" >"$WORK/mem.log" 2>&1 &
MEM_PID=$!
PIDS+=($MEM_PID)
MEM_HTTP=127.0.0.1:$((BASE_PORT + 10))
for _ in $(seq 1 100); do curl -fsS "http://$MEM_HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 2
IDLE=$(rss_kb $MEM_PID)
log "memory: idle node ${IDLE} kB; ingesting 10 streams x 8 segments x 200 KB"
for s in $(seq 0 9); do
  for q in $(seq 0 7); do
    curl -fsS -X PUT -H "Authorization: Bearer $KEY" --data-binary "@$WORK/small.ts" \
      "http://$MEM_HTTP/ingest/mem$s/s$q.ts" >/dev/null
    printf '#EXTM3U\n#EXTINF:2.0,\ns%d.ts\n' "$q" | curl -fsS -X PUT -H "Authorization: Bearer $KEY" \
      --data-binary @- "http://$MEM_HTTP/ingest/mem$s/index.m3u8" >/dev/null
  done
done
sleep 1
STREAMS=$(rss_kb $MEM_PID)
log "memory: 10 streams ${STREAMS} kB; 1,000 viewer connections"
wrk -t2 -c1000 -d8s "http://$MEM_HTTP/live/mem0/index.m3u8" >"$WORK/wrk-mem.txt" 2>&1 &
WRK=$!
PEAK=$STREAMS
for _ in $(seq 1 14); do
  sleep 0.5
  now=$(rss_kb $MEM_PID); [ "$now" -gt "$PEAK" ] && PEAK=$now
done
wait $WRK || true
echo "{\"bench\": \"memory\", \"idle_kb\": $IDLE, \"streams10_kb\": $STREAMS, \"viewers1000_kb\": $PEAK, \"stream_bytes_held\": $((10 * 8 * 200000)), \"bytes_per_viewer_connection\": $(((PEAK - STREAMS) * 1024 / 1000))}" >>"$RESULTS"

# ---- 2-4. in-process benchmarks ---------------------------------------------------------
log "relay: Shoal pull path against plain quinn"
"$SIM" bench relay >>"$RESULTS"
for n in 3 10 25; do
  log "propagation: $n nodes"
  "$SIM" bench propagation --nodes "$n" >>"$RESULTS"
done
log "first byte: cold against held"
"$SIM" bench first-byte >>"$RESULTS"

cleanup
python3 scripts/bench_report.py "$RESULTS" scripts/bench-results.json BENCHMARKS.md
log "wrote scripts/bench-results.json and BENCHMARKS.md"
