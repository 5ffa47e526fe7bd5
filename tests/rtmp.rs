//! RTMP ingest with real ffmpeg as the encoder (`-f flv rtmp://...`, what OBS's Server +
//! Stream Key amount to): the node segments the stream and the mesh carries it; keys are
//! enforced; a reconnect is a discontinuity, not a new stream; hostile clients are cut.

use shoal_node::NodeConfig;
use shoal_tests::{
    Encoder, KEY, config, ffprobe_streams, http, media_playlist, mesh, status, wait_for,
    wait_playlist,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node that takes RTMP on an OS-chosen loopback port and cuts 1 s segments.
fn rtmp_config(tag: &str) -> NodeConfig {
    let mut c = config(tag);
    c.rtmp = Some("127.0.0.1:0".parse().unwrap());
    c.rtmp_explicit = true;
    c.segment_duration = Duration::from_secs(1);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_push_plays_from_every_node() {
    shoal_tests::init_logging();
    let nodes = mesh(vec![
        rtmp_config("rtmp-a"),
        config("rtmp-b"),
        config("rtmp-c"),
    ])
    .await
    .unwrap();
    let (a, c) = (&nodes[0], &nodes[2]);
    let rtmp = a.rtmp_addr().expect("rtmp on");
    let _encoder = Encoder::push_rtmp(rtmp, "cam", KEY, 30, 30).unwrap();

    let playlist = wait_playlist(c.http_addr(), "cam", 4).await;
    // Every whole segment lasts the target (1 s, a keyframe every 30 frames) within 10%.
    for e in &playlist.entries {
        assert!(
            (900..=1100).contains(&e.duration_ms),
            "segment {} lasts {} ms",
            e.file,
            e.duration_ms
        );
    }
    let seg = &playlist.entries[1];
    let r = http::get(c.http_addr(), &format!("/live/cam/{}", seg.uri), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let streams = ffprobe_streams(&r.body).unwrap();
    assert!(
        streams.contains(&("h264".into(), 640, 360)) && streams.iter().any(|s| s.0 == "aac"),
        "ffprobe of a segment from node C: {streams:?}"
    );

    let s = status(a.http_addr()).await.unwrap();
    let ingesting = &s["ingesting"][0];
    assert_eq!(ingesting["protocol"], "rtmp", "{ingesting}");
    let encoder = &ingesting["encoder"];
    assert_eq!(
        (encoder["width"].as_u64(), encoder["height"].as_u64()),
        (Some(640), Some(360))
    );
    let codecs: Vec<&str> = encoder["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(
        codecs.iter().any(|c| c.starts_with("avc1.")) && codecs.contains(&"mp4a.40.2"),
        "{codecs:?}"
    );
    assert!(
        encoder["bitrate_bps"].as_u64().unwrap() > 10_000,
        "{encoder}"
    );
}

/// With `segment_format = fmp4` the ingest node cuts CMAF segments: node C's playlist
/// names their init segment in `#EXT-X-MAP`, and init plus a segment is H.264 640x360
/// and AAC to ffprobe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_fmp4_segments_play() {
    shoal_tests::init_logging();
    let mut ingest = rtmp_config("rtmp-fmp4-a");
    ingest.segment_format = shoal_node::media::segmenter::SegmentFormat::Fmp4;
    let nodes = mesh(vec![ingest, config("rtmp-fmp4-b"), config("rtmp-fmp4-c")])
        .await
        .unwrap();
    let (a, c) = (&nodes[0], &nodes[2]);
    let rtmp = a.rtmp_addr().expect("rtmp on");
    let _encoder = Encoder::push_rtmp(rtmp, "cam", KEY, 30, 30).unwrap();

    let playlist = wait_playlist(c.http_addr(), "cam", 3).await;
    for e in &playlist.entries {
        assert!(e.file.ends_with(".m4s"), "{}", e.file);
        assert!(
            e.init.is_some(),
            "segment {} without an init segment",
            e.file
        );
        assert!(
            (900..=1100).contains(&e.duration_ms),
            "segment {} lasts {} ms",
            e.file,
            e.duration_ms
        );
    }
    let r = http::get(c.http_addr(), "/live/cam/index.m3u8", &[])
        .await
        .unwrap();
    let text = r.text();
    let map = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no #EXT-X-MAP in node C's playlist:\n{text}"))
        .to_string();
    let init = http::get(c.http_addr(), &format!("/live/cam/{map}"), &[])
        .await
        .unwrap();
    assert_eq!(init.status, 200, "init segment {map}");
    assert_eq!(&init.body[4..8], b"ftyp");
    let seg = &playlist.entries[1];
    let r = http::get(c.http_addr(), &format!("/live/cam/{}", seg.uri), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[4..8], b"styp");
    let streams = ffprobe_streams(&[&init.body[..], &r.body[..]].concat()).unwrap();
    assert!(
        streams.contains(&("h264".into(), 640, 360)) && streams.iter().any(|s| s.0 == "aac"),
        "ffprobe of init + segment from node C: {streams:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_keys_are_enforced() {
    shoal_tests::init_logging();
    let mut cfg = rtmp_config("rtmp-keys");
    cfg.ingest_keys = vec![KEY.to_string(), "solo=solo-key".to_string()];
    let nodes = mesh(vec![cfg]).await.unwrap();
    let rtmp = nodes[0].rtmp_addr().unwrap();
    for (stream, key) in [("cam", "wrong"), ("cam", ""), ("other", "solo-key")] {
        let mut e = Encoder::push_rtmp(rtmp, stream, key, 5, 30).unwrap();
        assert!(
            !e.finish(Duration::from_secs(15)).await,
            "{stream}/{key:?} was accepted"
        );
        let err = e.stderr();
        assert!(!err.is_empty(), "ffmpeg said nothing of the refusal");
    }
    let s = status(nodes[0].http_addr()).await.unwrap();
    assert_eq!(
        s["counters"]["rtmp_key_refused_total"], 3,
        "{}",
        s["counters"]
    );
    assert!(
        s["streams"].as_array().unwrap().is_empty(),
        "{}",
        s["streams"]
    );
    // The per-stream key works for its stream.
    let _e = Encoder::push_rtmp(rtmp, "solo", "solo-key", 10, 30).unwrap();
    wait_playlist(nodes[0].http_addr(), "solo", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_reconnect_continues_the_stream_after_a_discontinuity() {
    shoal_tests::init_logging();
    let nodes = mesh(vec![rtmp_config("rtmp-re"), config("rtmp-re-b")])
        .await
        .unwrap();
    let rtmp = nodes[0].rtmp_addr().unwrap();
    let mut first = Encoder::push_rtmp(rtmp, "re", KEY, 30, 30).unwrap();
    let before = wait_playlist(nodes[1].http_addr(), "re", 3).await;
    // The encoder's link drops: no unpublish, just a dead connection.
    first.kill();
    let _second = Encoder::push_rtmp(rtmp, "re", KEY, 30, 30).unwrap();
    let p = wait_for(
        "a discontinuity on node B",
        Duration::from_secs(40),
        || async {
            let r = http::get(nodes[1].http_addr(), "/live/re/index.m3u8", &[])
                .await
                .map_err(|e| e.to_string())?;
            let p = media_playlist(&r.text()).map_err(|e| e.to_string())?;
            let found = p.entries.iter().position(|e| e.discontinuity);
            Ok(found.filter(|&i| i + 1 < p.entries.len()).map(|_| p))
        },
    )
    .await
    .unwrap();
    assert!(!p.ended, "the stream did not end");
    assert!(
        p.media_sequence + p.entries.len() as u64
            > before.media_sequence + before.entries.len() as u64,
        "numbering continued: before {}+{}, after {}+{}",
        before.media_sequence,
        before.entries.len(),
        p.media_sequence,
        p.entries.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_rtmp_clients_are_cut_and_harm_nothing() {
    shoal_tests::init_logging();
    let nodes = mesh(vec![rtmp_config("rtmp-bad")]).await.unwrap();
    let rtmp = nodes[0].rtmp_addr().unwrap();

    // Not RTMP at all.
    let mut s = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut s).await;

    // A handshake, then a chunk size of 2^31.
    let mut s = handshaken(rtmp).await;
    s.write_all(&[0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x80, 0, 0, 0])
        .await
        .unwrap();
    assert_closed(&mut s).await;

    // A message that claims 16 MiB.
    let mut s = handshaken(rtmp).await;
    s.write_all(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0])
        .await
        .unwrap();
    s.write_all(&[0u8; 128]).await.unwrap();
    assert_closed(&mut s).await;

    // A command that is not AMF.
    let mut s = handshaken(rtmp).await;
    s.write_all(&[0x03, 0, 0, 0, 0, 0, 3, 20, 0, 0, 0, 0, 0x42, 0x42, 0x42])
        .await
        .unwrap();
    assert_closed(&mut s).await;

    // The node still takes a real encoder.
    let _e = Encoder::push_rtmp(rtmp, "ok", KEY, 10, 30).unwrap();
    wait_playlist(nodes[0].http_addr(), "ok", 2).await;
    let st = status(nodes[0].http_addr()).await.unwrap();
    assert!(
        st["counters"]["rtmp_cut_total"].as_u64().unwrap() >= 4,
        "{}",
        st["counters"]
    );
}

/// A connection past the RTMP handshake.
async fn handshaken(addr: SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    s.write_all(&c0c1).await.unwrap();
    let mut s0s1s2 = vec![0u8; 1 + 2 * 1536];
    s.read_exact(&mut s0s1s2).await.unwrap();
    s.write_all(&s0s1s2[1..1 + 1536]).await.unwrap();
    s
}

/// The server closes the connection within a few seconds.
async fn assert_closed(s: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node kept a hostile connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redundant_rtmp_ingest_survives_kill_9_of_the_followed_node() {
    use shoal_tests::process::{ShoalProcess, free_tcp};
    use shoal_tests::{stream_status, wait_known};
    shoal_tests::init_logging();
    let rtmp_args = |port: u16| {
        vec![
            "--rtmp".to_string(),
            format!("127.0.0.1:{port}"),
            "--segment-duration".to_string(),
            "1".to_string(),
        ]
    };
    let (px, py) = (free_tcp(), free_tcp());
    let ax = rtmp_args(px);
    let ay = rtmp_args(py);
    let ax: Vec<&str> = ax.iter().map(String::as_str).collect();
    let ay: Vec<&str> = ay.iter().map(String::as_str).collect();
    let mut x = ShoalProcess::start("rx", None, &ax).unwrap();
    let y = ShoalProcess::start("ry", Some(&x.bootstrap), &ay).unwrap();
    let z = ShoalProcess::start("rz", Some(&x.bootstrap), &[]).unwrap();
    wait_known(z.http, &[&x.peer_id, &y.peer_id]).await.unwrap();
    wait_known(y.http, &[&x.peer_id]).await.unwrap();

    // Two OBS-like encoders push the same stream into X, then into Y.
    let rtmp_x: SocketAddr = format!("127.0.0.1:{px}").parse().unwrap();
    let rtmp_y: SocketAddr = format!("127.0.0.1:{py}").parse().unwrap();
    let mut enc_x = Encoder::push_rtmp(rtmp_x, "dual", KEY, 120, 30).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _enc_y = Encoder::push_rtmp(rtmp_y, "dual", KEY, 120, 30).unwrap();
    let before = wait_playlist(z.http, "dual", 3).await;
    let s = status(z.http).await.unwrap();
    assert_eq!(
        stream_status(&s, "dual").unwrap()["source"],
        x.peer_id.as_str()
    );
    let ys = wait_for(
        "Y's encoder standing by",
        Duration::from_secs(10),
        || async {
            let ys = status(y.http).await.map_err(|e| e.to_string())?;
            let standby = ys["ingesting"][0]["active"] == false
                && ys["counters"]["ingest_standby_total"].as_u64().unwrap_or(0) >= 1;
            Ok(standby.then_some(ys))
        },
    )
    .await
    .unwrap();
    assert_eq!(ys["ingesting"][0]["protocol"], "rtmp");

    x.kill9();
    enc_x.kill();
    let newest_before = before.media_sequence + before.entries.len() as u64;
    let p = wait_for(
        "the stream to continue from Y",
        Duration::from_secs(40),
        || async {
            let r = http::get(z.http, "/live/dual/index.m3u8", &[])
                .await
                .map_err(|e| e.to_string())?;
            let p = media_playlist(&r.text()).map_err(|e| e.to_string())?;
            let s = status(z.http).await.map_err(|e| e.to_string())?;
            let from_y =
                stream_status(&s, "dual").is_some_and(|st| st["source"] == y.peer_id.as_str());
            let continued = p.media_sequence + p.entries.len() as u64 > newest_before + 3;
            Ok((from_y && continued && p.entries.iter().any(|e| e.discontinuity)).then_some(p))
        },
    )
    .await
    .unwrap();
    assert!(
        p.media_sequence >= before.media_sequence,
        "numbering went back"
    );
    let last = &p.entries.last().unwrap().uri;
    let r = http::get(z.http, &format!("/live/dual/{last}"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        ffprobe_streams(&r.body)
            .unwrap()
            .iter()
            .any(|s| s.0 == "h264")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encoder_that_stops_is_not_cut() {
    use shoal_node::rtmp::amf::{self, Value};
    use shoal_node::rtmp::chunk::{Encoder as Chunks, Message};
    shoal_tests::init_logging();
    // Past the time to publish by the time the encoder stops (OBS: minutes, hours).
    let mut c = rtmp_config("rtmp-stop");
    c.rtmp_limits.to_publish = Duration::from_millis(500);
    let nodes = mesh(vec![c]).await.unwrap();
    let mut s = handshaken(nodes[0].rtmp_addr().unwrap()).await;
    let call = |stream_id: u32, values: &[Value]| {
        let mut payload = Vec::new();
        for v in values {
            amf::encode(v, &mut payload);
        }
        let mut out = Vec::new();
        let message = Message {
            csid: 3,
            timestamp: 0,
            type_id: 20,
            stream_id,
            payload: payload.into(),
        };
        Chunks::default().encode(&message, &mut out);
        out
    };
    let key = amf::string(&format!("stop?key={KEY}"));
    let mut hello = call(
        0,
        &[
            amf::string("connect"),
            Value::Number(1.0),
            amf::object([("app", amf::string("live"))]),
        ],
    );
    hello.extend(call(
        0,
        &[amf::string("createStream"), Value::Number(2.0), Value::Null],
    ));
    hello.extend(call(
        1,
        &[
            amf::string("publish"),
            Value::Number(3.0),
            Value::Null,
            key.clone(),
        ],
    ));
    s.write_all(&hello).await.unwrap();
    let mut replies = Vec::new();
    let mut piece = [0u8; 4096];
    while !replies.windows(23).any(|w| w == b"NetStream.Publish.Start") {
        let n = s.read(&mut piece).await.unwrap();
        assert!(n > 0, "closed before the publish started");
        replies.extend_from_slice(&piece[..n]);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    // OBS and ffmpeg stop with FCUnpublish and deleteStream, then close.
    s.write_all(&call(
        0,
        &[
            amf::string("FCUnpublish"),
            Value::Number(4.0),
            Value::Null,
            key,
        ],
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(&call(
        0,
        &[
            amf::string("deleteStream"),
            Value::Number(5.0),
            Value::Null,
            Value::Number(1.0),
        ],
    ))
    .await
    .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status(nodes[0].http_addr()).await.unwrap();
    assert_eq!(st["counters"]["rtmp_cut_total"], 0, "{}", st["counters"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encoder_far_above_the_bitrate_limit_is_cut() {
    shoal_tests::init_logging();
    let mut cfg = rtmp_config("rtmp-rate");
    // ffmpeg's 640x360 test pattern runs at about 2 Mbit/s.
    cfg.rtmp_limits.max_bitrate = 200_000;
    let nodes = mesh(vec![cfg]).await.unwrap();
    let rtmp = nodes[0].rtmp_addr().unwrap();
    let mut e = Encoder::push_rtmp(rtmp, "fat", KEY, 30, 30).unwrap();
    assert!(
        !e.finish(Duration::from_secs(20)).await,
        "the encoder was not cut"
    );
    let s = status(nodes[0].http_addr()).await.unwrap();
    assert!(
        s["counters"]["rtmp_cut_total"].as_u64().unwrap() >= 1,
        "{}",
        s["counters"]
    );
    assert!(s["ingesting"][0]["encoder"].is_null(), "{}", s["ingesting"]);
}
