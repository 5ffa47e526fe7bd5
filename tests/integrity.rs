//! Bytes that do not match their signed announcement are never served, and the peer that
//! sent them is penalised.

use shoal_node::apparatus::Apparatus;
use shoal_tests::http;
use shoal_tests::*;
use std::time::Duration;

const SEGMENT: &[u8] = &[0x47; 188 * 40];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupted_bytes_from_a_peer_never_reach_a_viewer() {
    init_logging();
    // B ingests honestly but corrupts every segment it sends to peers.
    let mut corrupt = Apparatus::default();
    corrupt.faults.corrupt_egress = true;
    let nodes = mesh_with(vec![
        (config("a"), Apparatus::default()),
        (config("b"), corrupt),
        (config("c"), Apparatus::default()),
    ])
    .await
    .unwrap();
    let (b, c) = (nodes[1].http_addr(), nodes[2].http_addr());
    let b_id = nodes[1].peer_id().to_string();
    wait_known(c, &[&b_id]).await.unwrap();

    let auth = format!("Bearer {KEY}");
    let h = [("Authorization", auth.as_str())];
    let r = http::request(b, "PUT", "/ingest/s/seg0.ts", &h, Some(SEGMENT), true)
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg0.ts\n";
    let r = http::request(b, "PUT", "/ingest/s/index.m3u8", &h, Some(playlist), false)
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    // B itself serves the true bytes.
    let direct = http::get(b, "/live/s/0.ts", &[]).await.unwrap();
    assert_eq!(direct.body, SEGMENT);

    wait_for(
        "C to learn of segment 0",
        Duration::from_secs(10),
        || async {
            let r = http::get(c, "/live/s/index.m3u8", &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok((r.status == 200).then_some(()))
        },
    )
    .await
    .unwrap();
    let r = http::get(c, "/live/s/0.ts", &[]).await.unwrap();
    assert_eq!(
        r.status,
        502,
        "corrupt bytes must not be served: {}",
        r.text()
    );
    assert_ne!(r.body, SEGMENT);
    assert!(!r.body.windows(16).any(|w| w == &SEGMENT[..16]));

    let s = status(c).await.unwrap();
    assert!(s["counters"]["fetch_bad_bytes_total"].as_u64().unwrap() >= 1);
    let b_entry = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == b_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(b_entry["penalised"], true, "{b_entry}");
    assert!(b_entry["bad_bytes"].as_u64().unwrap() >= 1);
    let seg = &stream_status(&s, "s").unwrap()["segments"][0];
    assert_eq!(seg["held"], false, "nothing was cached: {seg}");
    // While penalised, B is not asked again: the next request fails without a pull.
    let r = http::get(c, "/live/s/0.ts", &[]).await.unwrap();
    assert_eq!(r.status, 502);
    let again = status(c).await.unwrap();
    assert_eq!(
        again["counters"]["fetch_bad_bytes_total"],
        s["counters"]["fetch_bad_bytes_total"]
    );
    for n in nodes {
        n.shutdown().await;
    }
}
