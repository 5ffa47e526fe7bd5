//! Three real nodes on 127.0.0.1: discovery from one bootstrap peer, and a live ffmpeg
//! stream pushed into B coming out of C byte for byte, pulled over the data plane.

use serde_json::Value;
use shoal_tests::http;
use shoal_tests::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_learn_each_other_through_one_bootstrap_peer_and_expire_the_dead() {
    init_logging();
    let mut nodes = mesh(vec![config("a"), config("b"), config("c")])
        .await
        .unwrap();
    let (b_id, c_id) = (
        nodes[1].peer_id().to_string(),
        nodes[2].peer_id().to_string(),
    );
    let (b_http, c_http) = (nodes[1].http_addr(), nodes[2].http_addr());
    // C bootstrapped from A only, yet comes to know B (and B knows C).
    wait_for(
        "C to know B and B to know C",
        Duration::from_secs(20),
        || async {
            let c = status(c_http).await.map_err(|e| e.to_string())?;
            let b = status(b_http).await.map_err(|e| e.to_string())?;
            let (ck, bk) = (known_peers(&c), known_peers(&b));
            if ck.contains(&b_id) && bk.contains(&c_id) && ck.len() == 2 {
                Ok(Some(()))
            } else {
                Err(format!("C knows {ck:?}, B knows {bk:?}"))
            }
        },
    )
    .await
    .unwrap();
    // RTTs are measured.
    let c = status(c_http).await.unwrap();
    let b_entry = c["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == b_id.as_str())
        .unwrap();
    assert!(b_entry["rtt_ms"].as_f64().is_some(), "{b_entry}");
    assert!(
        b_entry["data_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // A node that goes away expires from the others' tables.
    nodes.pop().unwrap().shutdown().await;
    wait_for("B to forget C", Duration::from_secs(15), || async {
        let b = status(b_http).await.map_err(|e| e.to_string())?;
        let known = known_peers(&b);
        if known.contains(&c_id) {
            Err(format!("B still knows {known:?}"))
        } else {
            Ok(Some(()))
        }
    })
    .await
    .unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

async fn live_stream_crosses_the_mesh(packaging: Packaging, stream: &str) {
    init_logging();
    let nodes = mesh(vec![config("a"), config("b"), config("c")])
        .await
        .unwrap();
    let (b, c) = (nodes[1].http_addr(), nodes[2].http_addr());
    let b_id = nodes[1].peer_id().to_string();
    wait_known(c, &[&b_id]).await.unwrap();

    let mut encoder = Encoder::push(b, stream, 8, packaging).unwrap();
    let playlist_path = format!("/live/{stream}/index.m3u8");
    // A viewer on C: wait for C's playlist to list three segments.
    let first = wait_for(
        "C's playlist to list 3 segments",
        Duration::from_secs(30),
        || async {
            let r = http::get(c, &playlist_path, &[])
                .await
                .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("{} {}", r.status, r.text()));
            }
            let listed = media_playlist(&r.text())
                .map_err(|e| e.to_string())?
                .entries
                .len();
            Ok((listed >= 3).then_some(r))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        first.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));

    assert!(
        encoder.finish(Duration::from_secs(30)).await,
        "ffmpeg failed"
    );
    // The encoder's #EXT-X-ENDLIST reaches C.
    let last = wait_for("C's playlist to end", Duration::from_secs(15), || async {
        let r = http::get(c, &playlist_path, &[])
            .await
            .map_err(|e| e.to_string())?;
        let text = r.text();
        let ended = media_playlist(&text).map_err(|e| e.to_string())?.ended;
        Ok(ended.then_some(text))
    })
    .await
    .unwrap();
    // B and C give the same playlist: same media sequence numbers for the same segments.
    // One session asks both (as a player handed from C to B would), so the session id each
    // node writes into the segment URLs is the same too.
    let as_one_session = format!("{playlist_path}?sid=mesh-check");
    let on_b = http::get(b, &as_one_session, &[]).await.unwrap().text();
    let on_c = http::get(c, &as_one_session, &[]).await.unwrap().text();
    assert_eq!(on_b, on_c, "B and C disagree on the playlist");
    assert!(on_c.contains("?sid=mesh-check\n"), "{on_c}");
    let parsed = media_playlist(&last).unwrap();
    let names: Vec<String> = parsed.entries.iter().map(|e| e.file.clone()).collect();
    assert!(names.len() >= 5, "{last}");

    // Every segment (and the init segment) from C is byte-identical to B's ingest copy,
    // and matches the blake3 that B signed at ingest.
    let b_status = status(b).await.unwrap();
    let b_stream = stream_status(&b_status, stream).unwrap().clone();
    let mut files = names.clone();
    if let Packaging::Fmp4 = packaging {
        let map = parsed.entries[0].init.clone();
        files.push(map.expect("fMP4 playlist has a map"));
    }
    for file in &files {
        let path = format!("/live/{stream}/{file}");
        let from_c = http::get(c, &path, &[("Range", "bytes=0-")]).await.unwrap();
        assert_eq!(from_c.status, 206, "{path}: {}", from_c.text());
        let from_b = http::get(b, &path, &[]).await.unwrap();
        assert_eq!(from_b.status, 200);
        assert!(!from_b.body.is_empty());
        assert_eq!(from_c.body, from_b.body, "{path} differs between B and C");
        let expected_type = match file.rsplit('.').next().unwrap() {
            "ts" => "video/mp2t",
            "m4s" => "video/iso.segment",
            _ => "video/mp4",
        };
        assert_eq!(from_c.header("content-type"), Some(expected_type));
        if let Some(seq) = file.split('.').next().and_then(|s| s.parse::<u64>().ok()) {
            let signed = b_stream["segments"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["seq"] == seq)
                .unwrap_or_else(|| panic!("B has no segment {seq}"));
            assert_eq!(
                signed["hash"].as_str().unwrap(),
                blake3::hash(&from_c.body).to_hex().as_str()
            );
            assert_eq!(signed["via"], "ingest");
        }
    }
    let (_, newest) = parsed.seq_range().unwrap();
    assert!(newest >= 5, "8 s of 1 s segments, newest is {newest}");

    // C's status: what it served came from B over the data plane, not from an encoder.
    let c_status = status(c).await.unwrap();
    let c_stream = stream_status(&c_status, stream).unwrap();
    let held: Vec<&Value> = c_stream["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["held"] == true)
        .collect();
    assert!(held.len() >= names.len(), "{c_stream}");
    for s in held {
        assert_eq!(s["via"], "data-plane", "{s}");
        assert_eq!(s["source"], b_id.as_str(), "{s}");
    }
    assert_eq!(c_stream["ingest"], false);
    assert!(c_status["counters"]["fetch_ok_total"].as_u64().unwrap() >= names.len() as u64);
    assert_eq!(c_status["counters"]["fetch_bad_bytes_total"], 0);
    assert_eq!(c_status["counters"]["ingest_segments_total"], 0);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mpegts_stream_pushed_into_b_plays_from_c() {
    live_stream_crosses_the_mesh(Packaging::Ts, "ts-live").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fmp4_stream_pushed_into_b_plays_from_c() {
    live_stream_crosses_the_mesh(Packaging::Fmp4, "cmaf-live").await;
}
