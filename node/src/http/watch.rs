//! `GET /watch/{stream}`: a player page (hls.js, or native HLS where the browser has it)
//! for people, and for the end-to-end browser test.
//!
//! The page shows playback figures as it plays. With `?report=URL` it also POSTs them as
//! JSON to URL every second (`no-cors`, so any local collector works).

use super::HttpError;
use crate::node::Shared;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shoal_protocol::stream;
use std::sync::Arc;

/// Default hls.js location: a public CDN. Nodes with no internet, and the tests, point
/// `--hls-js-url` at a local copy.
pub const DEFAULT_HLS_JS_URL: &str = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shoal: {{STREAM}}</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; background: #0b1320; color: #dde6f0; }
  main { max-width: 960px; margin: 0 auto; padding: 16px; }
  video { width: 100%; background: #000; border-radius: 6px; }
  code, #stats { font-family: ui-monospace, monospace; font-size: 13px; }
  #stats, #ingest { white-space: pre; color: #9fb3c8; }
  .err { color: #ff8a80; }
</style>
</head>
<body>
<main>
  <h1>{{STREAM}}</h1>
  <video id="video" controls muted autoplay playsinline></video>
  <p>Playlist: <code id="src"></code></p>
  <div id="stats">starting…</div>
  <div id="ingest"></div>
  <div id="error" class="err"></div>
</main>
<script src="{{HLS_JS}}"></script>
<script>
(function () {
  var params = new URLSearchParams(location.search);
  var playlist = new URL("/live/{{STREAM}}/index.m3u8", location.href);
  // A viewer token given to the page (`/watch/S?token=...`) goes with the playlist.
  if (params.get("token")) playlist.searchParams.set("token", params.get("token"));
  var src = playlist.href;
  var report = params.get("report");
  var video = document.getElementById("video");
  document.getElementById("src").textContent = src;
  var state = { player: "none", fatal: null, errors: 0, levels: 0, fragments: 0 };
  function fail(msg) { state.fatal = msg; document.getElementById("error").textContent = msg; }
  if (window.Hls && Hls.isSupported()) {
    state.player = "hls.js " + Hls.version;
    var hls = new Hls({ liveSyncDurationCount: 3 });
    hls.on(Hls.Events.ERROR, function (_, d) {
      state.errors++;
      if (d.fatal) { fail("fatal " + d.type + ": " + d.details); }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, function (_, d) { state.levels = d.levels.length; video.play().catch(function () {}); });
    hls.on(Hls.Events.FRAG_BUFFERED, function () { state.fragments++; });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    state.player = "native";
    video.src = src;
  } else {
    fail("this browser cannot play HLS (hls.js did not load from {{HLS_JS}})");
  }
  function figures() {
    var q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : {};
    var buffered = [];
    for (var i = 0; i < video.buffered.length; i++) {
      buffered.push([video.buffered.start(i), video.buffered.end(i)]);
    }
    return {
      player: state.player, currentTime: video.currentTime, paused: video.paused,
      readyState: video.readyState, buffered: buffered,
      decodedFrames: q.totalVideoFrames || 0, droppedFrames: q.droppedVideoFrames || 0,
      videoWidth: video.videoWidth, videoHeight: video.videoHeight,
      fragments: state.fragments, errors: state.errors, fatal: state.fatal,
      ingest: state.ingest || null
    };
  }
  // What the encoder sends, from the node it pushes into (any node says which).
  function ingest() {
    var here = new URL("/live/{{STREAM}}/info.json", location.href).href;
    fetch(here).then(function (r) { return r.json(); }).then(function (i) {
      return i.protocol || !i.info ? i : fetch(i.info).then(function (r) { return r.json(); });
    }).then(function (i) {
      if (!i.protocol) { document.getElementById("ingest").textContent = "ingest: HLS push or not live"; return; }
      state.ingest = i;
      document.getElementById("ingest").textContent = "ingest " + i.protocol + "   " +
        i.width + "x" + i.height + "   " + i.codecs.join(",") + "   " +
        (i.bitrate_bps / 1e6).toFixed(2) + " Mbit/s" + (i.encoder ? "   " + i.encoder : "") +
        (i.address ? "   from " + i.address : "");
    }).catch(function () {});
  }
  ingest();
  setInterval(ingest, 5000);
  setInterval(function () {
    var f = figures();
    document.getElementById("stats").textContent =
      "player " + f.player + "   time " + f.currentTime.toFixed(1) + " s   frames " +
      f.decodedFrames + " (dropped " + f.droppedFrames + ")   " + f.videoWidth + "x" +
      f.videoHeight + "   fragments " + f.fragments + "   errors " + f.errors;
    if (report) {
      fetch(report, { method: "POST", mode: "no-cors", body: JSON.stringify(f) }).catch(function () {});
    }
  }, 1000);
})();
</script>
</body>
</html>
"#;

/// `GET /watch/{stream}`.
pub async fn page(
    State(node): State<Arc<Shared>>,
    Path(stream): Path<String>,
) -> Result<Response, HttpError> {
    let name = stream::Name::new(stream)
        .map_err(|e| HttpError::BadRequest(format!("invalid stream name: {e}")))?;
    // The stream name is [a-z0-9_-] and the script URL is the operator's own setting, so
    // neither can break out of the HTML or the script string.
    let html = PAGE
        .replace("{{STREAM}}", name.as_str())
        .replace("{{HLS_JS}}", &html_escape(&node.config.hls_js_url));
    let mut response = html.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
