#!/usr/bin/env bash
# Makes the built-in test clip that `shoal-sim demo` plays out as an endless live stream:
# 12 s of test pattern with a running clock and a 440 Hz tone, H.264 + AAC in MPEG-TS,
# six 2 s segments, small enough to commit (sim/assets/clip/).
#
# Only needed to change the clip; the committed files are what the demo uses.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=sim/assets/clip
rm -f "$OUT"/*.ts "$OUT"/clip.m3u8
ffmpeg -nostdin -hide_banner -loglevel error \
  -f lavfi -i "testsrc2=size=480x270:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=44100" \
  -t 12 -c:v libx264 -preset veryslow -crf 32 -pix_fmt yuv420p -g 50 -keyint_min 50 \
  -sc_threshold 0 -c:a aac -b:a 48k -ac 1 \
  -f hls -hls_time 2 -hls_list_size 0 -hls_segment_filename "$OUT/seg%d.ts" "$OUT/clip.m3u8"
ls -l "$OUT"
