//! Ingest refuses what it must, with clear 4xx answers, and keeps working after.

use shoal_tests::http;
use shoal_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors_and_the_node_keeps_working() {
    init_logging();
    let mut c = config("solo");
    c.core.max_segment_size = 64 * 1024;
    let node = shoal_node::Node::start(c).await.unwrap();
    let addr = node.http_addr();
    let good = format!("Bearer {KEY}");
    let auth = [("Authorization", good.as_str())];
    let seg = vec![0x47u8; 188 * 10];

    let put = |path: &'static str,
               headers: Vec<(&'static str, String)>,
               body: Vec<u8>,
               chunked: bool| async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        http::request(addr, "PUT", path, &h, Some(&body), chunked)
            .await
            .unwrap()
    };
    // No key: 401 with a challenge.
    let r = put("/ingest/s/a.ts", vec![], seg.clone(), false).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // Wrong key: 403.
    let r = put(
        "/ingest/s/a.ts",
        vec![("Authorization", "Bearer nope".into())],
        seg.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 403);
    // Invalid stream name or file name: 400.
    let r = put(
        "/ingest/Bad.Name/a.ts",
        vec![("Authorization", good.clone())],
        seg.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("stream name"));
    let r = put(
        "/ingest/s/.hidden.ts",
        vec![("Authorization", good.clone())],
        seg.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 400);
    // Unsupported file type: 415.
    let r = put(
        "/ingest/s/a.exe",
        vec![("Authorization", good.clone())],
        seg.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 415);
    // Oversized, declared or chunked: 413.
    let big = vec![0u8; 100 * 1024];
    let r = put(
        "/ingest/s/big.ts",
        vec![("Authorization", good.clone())],
        big.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 413);
    let r = put(
        "/ingest/s/big.ts",
        vec![("Authorization", good.clone())],
        big,
        true,
    )
    .await;
    assert_eq!(r.status, 413);
    // Malformed playlist: 400 with the reason.
    let r = put(
        "/ingest/s/index.m3u8",
        vec![("Authorization", good.clone())],
        b"not a playlist".to_vec(),
        false,
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("EXTM3U"), "{}", r.text());
    let r = put(
        "/ingest/s/index.m3u8",
        vec![("Authorization", good.clone())],
        b"#EXTM3U\n#EXTINF:nan-ish,\na.ts\n".to_vec(),
        false,
    )
    .await;
    assert_eq!(r.status, 400);
    // Garbage on the socket does not hurt the node.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
    }
    // Nothing was announced by any of that.
    let r = http::get(addr, "/live/s/index.m3u8", &[]).await.unwrap();
    assert_eq!(r.status, 404);

    // A valid upload still works, chunked as ffmpeg sends it, then DELETE as ffmpeg does.
    let r = http::request(addr, "PUT", "/ingest/s/a.ts", &auth, Some(&seg), true)
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let r = http::request(
        addr,
        "PUT",
        "/ingest/s/index.m3u8",
        &auth,
        Some(b"#EXTM3U\n#EXTINF:2.0,\na.ts\n"),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let r = http::get(addr, "/live/s/0.ts", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, seg);
    let r = http::request(addr, "DELETE", "/ingest/s/a.ts", &auth, Some(b""), true)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    // Ranges.
    let r = http::get(addr, "/live/s/0.ts", &[("Range", "bytes=10-19")])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &seg[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{}", seg.len()).as_str())
    );
    let r = http::get(addr, "/live/s/0.ts", &[("Range", "bytes=99999-")])
        .await
        .unwrap();
    assert_eq!(r.status, 416);
    // Unknown streams and files are 404; CORS preflight works.
    assert_eq!(
        http::get(addr, "/live/nope/index.m3u8", &[])
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http::get(addr, "/live/s/77.ts", &[]).await.unwrap().status,
        404
    );
    let r = http::request(
        addr,
        "OPTIONS",
        "/live/s/index.m3u8",
        &[("Origin", "http://x")],
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    let s = status(addr).await.unwrap();
    assert!(s["counters"]["ingest_rejected_total"].as_u64().unwrap() >= 9);
    assert_eq!(s["counters"]["ingest_segments_total"], 1);
    let m = http::get(addr, "/metrics", &[]).await.unwrap();
    assert!(
        m.text().contains("shoal_ingest_segments_total 1"),
        "{}",
        m.text()
    );
    node.shutdown().await;
}
