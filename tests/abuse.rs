//! No client can take a node down: connection floods, invented viewer sessions, many
//! players behind one address, and ingest state that an encoder leaves behind. Real
//! nodes on 127.0.0.1; every flood is bounded in count and time.

use shoal_node::NodeConfig;
use shoal_tests::http;
use shoal_tests::process::ShoalProcess;
use shoal_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// A node with room for `viewers` viewers of a synthetic stream (no reserve, no startup
/// surcharge, so the figures are exact).
fn with_room_for(tag: &str, viewers: u64) -> NodeConfig {
    let mut c = config(tag);
    c.core.egress_capacity_bps = viewers * SYNTHETIC_BITRATE + SYNTHETIC_BITRATE / 2;
    c.core.ingest_reserve_bps = 0;
    c.core.startup_window = Duration::ZERO;
    c
}

/// Pushes segments 0..n of stream "live" into `addr`.
async fn stream_into(addr: SocketAddr, n: u64) {
    for seq in 0..n {
        push_segment(addr, "live", seq).await;
    }
}

/// The first segment URI of a playlist response (with its query string).
fn first_segment(text: &str) -> String {
    media_playlist(text).unwrap().entries[0].uri.clone()
}

fn sid_of(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sid="))
        .map(str::to_string)
}

/// Whether the other end closed (or reset) this idle connection.
fn closed_by_peer(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.try_read(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// The resident memory a node reports.
async fn resident(addr: SocketAddr) -> u64 {
    status(addr).await.unwrap()["resident_bytes"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_flood_from_the_viewers_address_does_not_stop_playback() {
    init_logging();
    // A node process of its own, so that its memory is its own.
    let extra = [
        "--max-connections",
        "2000",
        "--max-connections-per-ip",
        "500",
    ];
    let node = ShoalProcess::start("flood", None, &extra).unwrap();
    let addr = node.http;
    wait_for("the node to answer", Duration::from_secs(10), || async {
        Ok::<_, String>(http::get(addr, "/healthz", &[]).await.ok().map(|_| ()))
    })
    .await
    .unwrap();
    stream_into(addr, 3).await;
    // A viewer on one keep-alive connection, playing throughout.
    let viewer = tokio::spawn(async move {
        let mut conn = http::KeepAlive::connect(addr).await.unwrap();
        let (mut ok, mut failed) = (0, 0);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(8) {
            let playlist = conn.get("/live/live/index.m3u8").await;
            let segment = match &playlist {
                Ok(r) if r.status == 200 => {
                    let uri = first_segment(&r.text());
                    conn.get(&format!("/live/live/{uri}")).await
                }
                _ => Err(anyhow::anyhow!(
                    "playlist: {:?}",
                    playlist.map(|r| r.status)
                )),
            };
            match segment {
                Ok(r) if r.status == 200 && r.body.len() == SYNTHETIC_SEGMENT => ok += 1,
                // A keep-alive connection may be shed between requests; a player
                // reconnects as any HTTP client does.
                _ => {
                    failed += 1;
                    conn = http::KeepAlive::connect(addr).await.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = resident(addr).await;
    // 3,000 idle connections from the same address, six times its limit, in bounded
    // time: none sends a byte.
    let mut flood = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while flood.len() < 3_000 && Instant::now() < deadline {
        if let Ok(s) = TcpStream::connect(addr).await {
            flood.push(s);
        }
    }
    assert_eq!(flood.len(), 3_000);
    let health = http::get(addr, "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200, "/healthz answers during the flood");
    // The node closes every connection past the limit: shed to make room, or closed for
    // sending no request in time while the node is near its limit.
    let closed = wait_for(
        "the flood to be closed",
        Duration::from_secs(10),
        || async {
            let closed = flood.iter().filter(|s| closed_by_peer(s)).count();
            Ok::<_, String>((closed >= 2_500).then_some(closed))
        },
    )
    .await
    .unwrap();
    let during = status(addr).await.unwrap();
    let open = during["connections"]["open"].as_u64().unwrap();
    assert!(open <= 500 + 2, "connections bounded per address: {open}");
    let shed = during["connections"]["shed"].as_u64().unwrap();
    assert!(shed > 0, "the node counts what it shed");
    let peak = during["resident_bytes"].as_u64().unwrap();
    drop(flood);
    let (ok, failed) = viewer.await.unwrap();
    assert!(
        ok >= 20,
        "the viewer kept playing: {ok} ok, {failed} failed"
    );
    // Shedding takes never-used connections first: the viewer's is never one of them.
    assert_eq!(failed, 0, "the viewer saw no error");
    // Memory comes back once the flood is gone.
    let back = wait_for("memory to return", Duration::from_secs(10), || async {
        let now = resident(addr).await;
        Ok::<_, String>((now <= before + before / 5).then_some(now))
    })
    .await;
    println!(
        "flood: 3000 idle connections, {closed} closed by the node ({shed} shed), {open} \
         open; viewer {ok} ok, {failed} failed; resident: {} KiB before the flood, {} KiB \
         during, {} KiB after",
        before >> 10,
        peak >> 10,
        resident(addr).await >> 10
    );
    assert!(back.is_ok(), "memory did not return: {back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_sessions_do_not_fill_a_node() {
    init_logging();
    let nodes = mesh(vec![with_room_for("fake-sids", 3)]).await.unwrap();
    let addr = nodes[0].http_addr();
    stream_into(addr, 3).await;
    // 200 playlist requests with made-up session ids, none fetching media.
    for i in 0..200 {
        let r = http::get(addr, &format!("/live/live/index.m3u8?sid=fake{i}"), &[])
            .await
            .unwrap();
        assert!(matches!(r.status, 200 | 503), "{}", r.status);
    }
    // Real viewers from the same address are still admitted, at once or within the
    // few seconds a session that fetched nothing costs anything.
    for real in 0..2 {
        let r = wait_for("a real viewer admitted", Duration::from_secs(6), || async {
            let r = http::get(addr, &format!("/live/live/index.m3u8?sid=real{real}"), &[])
                .await
                .map_err(|e| e.to_string())?;
            Ok((r.status == 200).then_some(r))
        })
        .await
        .unwrap();
        let uri = first_segment(&r.text());
        assert_eq!(
            sid_of(&uri).as_deref(),
            Some(format!("real{real}").as_str())
        );
        let seg = http::get(addr, &format!("/live/live/{uri}"), &[])
            .await
            .unwrap();
        assert_eq!(seg.status, 200);
    }
    let s = status(addr).await.unwrap();
    let viewers = stream_status(&s, "live").unwrap()["viewers"]
        .as_u64()
        .unwrap();
    assert_eq!(viewers, 2, "only sessions that fetched media are viewers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_players_behind_one_address_are_spread_and_keep_their_sessions() {
    init_logging();
    let (_nodes, a, b) = pair(with_room_for("nat-a", 2), with_room_for("nat-b", 20)).await;
    stream_into(a, 3).await;
    // B learns the stream's bitrate from A's status.
    wait_bitrate(b, 1).await;
    let (mut here, mut moved) = (0, 0);
    for _ in 0..12 {
        // Each player: its own keep-alive connection, no session id of its own.
        let mut conn = http::KeepAlive::connect(a).await.unwrap();
        let r = conn.get("/live/live/index.m3u8").await.unwrap();
        match r.status {
            200 => {
                let uri = first_segment(&r.text());
                let sid = sid_of(&uri).expect("a session id in the segment URLs");
                let seg = conn.get(&format!("/live/live/{uri}")).await.unwrap();
                assert_eq!(seg.status, 200);
                // Its reload, without the id, is the same session on this connection.
                let again = conn.get("/live/live/index.m3u8").await.unwrap();
                assert_eq!(again.status, 200);
                assert_eq!(sid_of(&first_segment(&again.text())), Some(sid));
                here += 1;
            }
            302 => {
                let location = r.header("location").unwrap().to_string();
                let sid = sid_of(&location).expect("the session id travels with a redirect");
                assert!(location.contains(&b.to_string()), "{location}");
                let path = &location[location.find("/live/").unwrap()..];
                let served = http::get(b, path, &[]).await.unwrap();
                assert_eq!(served.status, 200);
                let uri = first_segment(&served.text());
                assert_eq!(sid_of(&uri), Some(sid), "same session on the next node");
                let seg = http::get(b, &format!("/live/live/{uri}"), &[])
                    .await
                    .unwrap();
                assert_eq!(seg.status, 200);
                moved += 1;
            }
            other => panic!("player refused: {other}"),
        }
    }
    assert!((1..=3).contains(&here), "room for 2 at A, {here} stayed");
    assert_eq!(here + moved, 12);
    let s = status(a).await.unwrap();
    let viewers = stream_status(&s, "live").unwrap()["viewers"]
        .as_u64()
        .unwrap();
    assert_eq!(viewers, here, "A counts each session, not the address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_opening_a_connection_per_request_are_counted_once_each() {
    init_logging();
    let nodes = mesh(vec![config("closing")]).await.unwrap();
    let addr = nodes[0].http_addr();
    stream_into(addr, 3).await;
    // Four players behind one address that open a new connection for every request and
    // reload the playlist URL they were given, without the session id; their segment
    // requests carry the id the last playlist gave them.
    let mut ids = std::collections::HashSet::new();
    for _round in 0..10 {
        for _player in 0..4 {
            let r = http::get(addr, "/live/live/index.m3u8", &[]).await.unwrap();
            assert_eq!(r.status, 200);
            let uri = first_segment(&r.text());
            ids.insert(sid_of(&uri).expect("a session id in the segment URLs"));
            let seg = http::get(addr, &format!("/live/live/{uri}"), &[])
                .await
                .unwrap();
            assert_eq!(seg.status, 200);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each reload continued a session of the address rather than starting one: the
    // node counts four viewers at most, not one per reload.
    let s = status(addr).await.unwrap();
    let viewers = stream_status(&s, "live").unwrap()["viewers"]
        .as_u64()
        .unwrap();
    let sessions = s["sessions"].as_u64().unwrap();
    println!(
        "40 reloads by 4 players: {} ids handed out, {viewers} viewers",
        ids.len()
    );
    assert!((1..=4).contains(&viewers), "viewers: {viewers}");
    assert!(sessions <= 4, "sessions: {sessions}");
    assert!(ids.len() <= 4, "ids handed out: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_slow_to_fetch_their_first_segment_are_not_merged() {
    init_logging();
    let nodes = mesh(vec![config("slow-start")]).await.unwrap();
    let addr = nodes[0].http_addr();
    stream_into(addr, 3).await;
    // Eight players behind one address, each on a connection it keeps, starting 150 ms
    // apart; each fetches its first segment 1.5 s after its playlist (a 700 ms RTT
    // mobile link, or a node too busy to answer sooner). Meanwhile the next players
    // arrive with bare playlist requests on new connections: they must start sessions
    // of their own, not continue a session whose player has not come back yet.
    let mut players = vec![];
    for _ in 0..8 {
        players.push(tokio::spawn(async move {
            let mut conn = http::KeepAlive::connect(addr).await.unwrap();
            let r = conn.get("/live/live/index.m3u8").await.unwrap();
            assert_eq!(r.status, 200);
            let uri = first_segment(&r.text());
            let sid = sid_of(&uri).expect("a session id in the segment URLs");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let seg = conn.get(&format!("/live/live/{uri}")).await.unwrap();
            assert_eq!(seg.status, 200);
            sid
        }));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut ids = std::collections::HashSet::new();
    for p in players {
        ids.insert(p.await.unwrap());
    }
    let s = status(addr).await.unwrap();
    let viewers = stream_status(&s, "live").unwrap()["viewers"]
        .as_u64()
        .unwrap();
    println!(
        "8 slow-starting players: {} ids, {viewers} viewers",
        ids.len()
    );
    assert_eq!(ids.len(), 8, "each player its own session: {ids:?}");
    assert_eq!(viewers, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_names_are_freed_and_unlisted_uploads_are_bounded() {
    init_logging();
    let mut c = config("ingest-state");
    c.ingest_limits.forget_after = Duration::from_secs(2);
    // Claims lapse before the state is forgotten, as with the defaults (10 s, 30 s).
    c.core.ingest_idle = Duration::from_secs(1);
    c.ingest_limits.pending_bytes = 1 << 20;
    c.ingest_limits.pending_total = 3 << 20;
    let nodes = mesh(vec![c]).await.unwrap();
    let addr = nodes[0].http_addr();
    let auth = format!("Bearer {KEY}");
    let h = [("Authorization", auth.as_str())];
    let put = |path: String, body: Vec<u8>| async move {
        http::request(
            addr,
            "PUT",
            &path,
            &[("Authorization", &format!("Bearer {KEY}"))],
            Some(&body),
            true,
        )
        .await
        .unwrap()
        .status
    };
    // 300 stream names: the node takes as many as it may and refuses the rest.
    let mut refused = 0;
    for i in 0..300 {
        let status = put(format!("/ingest/name{i}/a.ts"), vec![0u8; 16]).await;
        if status == 503 {
            refused += 1;
        } else {
            assert_eq!(status, 201);
        }
    }
    assert_eq!(refused, 300 - 256);
    // Once the names idle past the forget time, a fresh name is accepted.
    let fresh = wait_for("a fresh name accepted", Duration::from_secs(10), || async {
        let status = put("/ingest/fresh/a.ts".into(), vec![0u8; 16]).await;
        Ok::<_, String>((status == 201).then_some(()))
    })
    .await;
    assert!(fresh.is_ok());
    // Files no playlist lists: refused past the stream's budget with 507.
    let mb = vec![7u8; 400 * 1024];
    // (The other names are forgotten within a housekeeping round or two of "fresh".)
    let first = wait_for("room for another name", Duration::from_secs(10), || async {
        let status = put("/ingest/big/0.ts".into(), mb.clone()).await;
        Ok::<_, String>((status != 503).then_some(status))
    })
    .await;
    assert_eq!(first.unwrap(), 201);
    assert_eq!(put("/ingest/big/1.ts".into(), mb.clone()).await, 201);
    assert_eq!(put("/ingest/big/2.ts".into(), mb.clone()).await, 507);
    let r = http::get(addr, "/metrics", &h).await.unwrap();
    let line = r
        .text()
        .lines()
        .find(|l| l.starts_with("shoal_ingest_pending_bytes"))
        .map(str::to_string)
        .expect("pending ingest bytes in the metrics");
    let pending: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    // The two files of "big", and the 16 bytes of "fresh" and of any name not yet
    // forgotten.
    let big = 2 * 400 * 1024;
    assert!(
        pending >= big && (pending - big).is_multiple_of(16) && pending - big <= 257 * 16,
        "{line}"
    );
    // A stray file does not keep its stream from ending.
    push_segment(addr, "ends", 0).await;
    assert_eq!(
        put("/ingest/ends/stray.ts".into(), vec![1u8; 64]).await,
        201
    );
    let end = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nseg0.ts\n#EXT-X-ENDLIST\n";
    assert_eq!(
        put("/ingest/ends/index.m3u8".into(), end.as_bytes().to_vec()).await,
        201
    );
    let live = http::get(addr, "/live/ends/index.m3u8", &[]).await.unwrap();
    assert!(live.text().contains("#EXT-X-ENDLIST"), "{}", live.text());
}
