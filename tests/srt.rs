//! SRT ingest with real ffmpeg (libsrt, caller mode, MPEG-TS): the node demuxes the TS,
//! cuts its own segments and the mesh carries them; the streamid's key is enforced.

use shoal_node::NodeConfig;
use shoal_tests::{Encoder, KEY, config, ffprobe_streams, http, mesh, status, wait_playlist};
use std::time::Duration;

/// A node that takes SRT on an OS-chosen loopback port and cuts 1 s segments.
fn srt_config(tag: &str) -> NodeConfig {
    let mut c = config(tag);
    c.srt = Some("127.0.0.1:0".parse().unwrap());
    c.srt_explicit = true;
    c.segment_duration = Duration::from_secs(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srt_push_plays_from_every_node() {
    shoal_tests::init_logging();
    let nodes = mesh(vec![srt_config("srt-a"), config("srt-b"), config("srt-c")])
        .await
        .unwrap();
    let srt = nodes[0].srt_addr().expect("srt on");
    let _e = Encoder::push_srt(srt, &format!("#!::r=cam,m=publish,s={KEY}"), 30).unwrap();
    let p = wait_playlist(nodes[2].http_addr(), "cam", 4).await;
    for e in &p.entries {
        assert!(
            (900..=1100).contains(&e.duration_ms),
            "{} lasts {} ms",
            e.file,
            e.duration_ms
        );
    }
    assert!(
        !p.entries.iter().any(|e| e.discontinuity),
        "no break at the start"
    );
    let r = http::get(
        nodes[2].http_addr(),
        &format!("/live/cam/{}", p.entries[1].uri),
        &[],
    )
    .await
    .unwrap();
    let streams = ffprobe_streams(&r.body).unwrap();
    assert!(
        streams.contains(&("h264".into(), 640, 360)) && streams.iter().any(|s| s.0 == "aac"),
        "{streams:?}"
    );
    let s = status(nodes[0].http_addr()).await.unwrap();
    assert_eq!(s["ingesting"][0]["protocol"], "srt", "{}", s["ingesting"]);
    assert_eq!(s["ingesting"][0]["encoder"]["width"], 640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn srt_keys_and_modes_are_enforced() {
    shoal_tests::init_logging();
    let nodes = mesh(vec![srt_config("srt-keys")]).await.unwrap();
    let srt = nodes[0].srt_addr().unwrap();
    for id in [
        "#!::r=cam,m=publish,s=wrong".to_string(),
        "#!::r=cam,m=publish".to_string(),
        format!("#!::r=cam,m=request,s={KEY}"),
        "cam?key=nope".to_string(),
    ] {
        let mut e = Encoder::push_srt(srt, &id, 5).unwrap();
        assert!(
            !e.finish(Duration::from_secs(15)).await,
            "{id} was accepted"
        );
    }
    let s = status(nodes[0].http_addr()).await.unwrap();
    assert!(
        s["streams"].as_array().unwrap().is_empty(),
        "{}",
        s["streams"]
    );
    assert_eq!(
        s["counters"]["srt_key_refused_total"], 3,
        "{}",
        s["counters"]
    );
    // The plain form with the right key works.
    let _e = Encoder::push_srt(srt, &format!("plain?key={KEY}"), 10).unwrap();
    wait_playlist(nodes[0].http_addr(), "plain", 2).await;
}
