//! Viewer scale: 5,000 concurrent players over a five-node mesh of real `shoal`
//! processes, each player on its own keep-alive connection, as browsers and set-top
//! players hold them.

use shoal_tests::http::{self, KeepAlive};
use shoal_tests::process::ShoalProcess;
use shoal_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const NODES: usize = 5;
const VIEWERS: usize = 5_000;
/// Segment duration: players reload about once per segment.
const SEGMENT_SECS: u64 = 2;
/// Bytes per segment (64 kbit/s: the test measures requests and connections, not
/// loopback bandwidth).
const SEGMENT_BYTES: usize = 16 * 1024;
/// Players keep watching until the test has taken its measurements, but never longer
/// than this.
const MAX_WATCH: Duration = Duration::from_secs(150);
/// How long every player must have been watching before the nodes are measured: a few
/// reloads each. On a busy machine the 5,000 startups take longer; the test waits for
/// them rather than for a fixed time.
const STARTUP: Duration = Duration::from_secs(120);

/// Pushes segment `seq` and a playlist of the last four, as an encoder does.
async fn push(addr: SocketAddr, seq: u64) {
    let auth = format!("Bearer {KEY}");
    let h = [("Authorization", auth.as_str())];
    let body = vec![(seq % 251) as u8; SEGMENT_BYTES];
    let r = http::request(
        addr,
        "PUT",
        &format!("/ingest/live/s{seq}.ts"),
        &h,
        Some(&body),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "segment {seq}: {}", r.text());
    let first = seq.saturating_sub(3);
    let mut playlist =
        format!("#EXTM3U\n#EXT-X-TARGETDURATION:{SEGMENT_SECS}\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    for n in first..=seq {
        playlist.push_str(&format!("#EXTINF:{SEGMENT_SECS}.0,\ns{n}.ts\n"));
    }
    let r = http::request(
        addr,
        "PUT",
        "/ingest/live/index.m3u8",
        &h,
        Some(playlist.as_bytes()),
        true,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "playlist: {}", r.text());
}

/// What the players saw, all together.
#[derive(Default)]
struct Tally {
    segments: AtomicU64,
    errors: AtomicU64,
    /// Players that fetched their first segment.
    playing: AtomicU64,
    players_without_media: AtomicU64,
    /// Set when the measurements are taken: players stop at their next reload.
    stop: AtomicBool,
}

/// One player: the playlist without a session id, then every segment it has not
/// fetched yet, reloading once per segment duration, until told to stop.
async fn play(addr: SocketAddr, tally: Arc<Tally>) {
    let fail = |what: String| {
        tally.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("viewer of {addr}: {what}");
    };
    let mut conn = match KeepAlive::connect(addr).await {
        Ok(c) => c,
        Err(e) => return fail(format!("connect: {e:#}")),
    };
    let started = Instant::now();
    let mut next: Option<u64> = None;
    let mut fetched = 0;
    while !tally.stop.load(Ordering::Relaxed) && started.elapsed() < MAX_WATCH {
        let r = match conn.get("/live/live/index.m3u8").await {
            Ok(r) if r.status == 200 => r,
            Ok(r) => return fail(format!("playlist: {}", r.status)),
            Err(e) => return fail(format!("playlist: {e:#}")),
        };
        let text = r.text();
        let playlist = match media_playlist(&text) {
            Ok(p) => p,
            Err(e) => return fail(format!("playlist unparsable: {e:#}")),
        };
        let first = playlist.media_sequence;
        let newest = first + playlist.entries.len() as u64 - 1;
        // Start at the live edge.
        let from = next.unwrap_or(newest).max(first);
        for seq in from..=newest {
            let uri = &playlist.entries[(seq - first) as usize].uri;
            match conn.get(&format!("/live/live/{uri}")).await {
                Ok(s) if s.status == 200 && s.body.len() == SEGMENT_BYTES => {
                    tally.segments.fetch_add(1, Ordering::Relaxed);
                    if fetched == 0 {
                        tally.playing.fetch_add(1, Ordering::Relaxed);
                    }
                    fetched += 1;
                }
                Ok(s) => return fail(format!("segment {seq}: {}", s.status)),
                Err(e) => return fail(format!("segment {seq}: {e:#}")),
            }
        }
        next = Some(newest + 1);
        tokio::time::sleep(Duration::from_secs(SEGMENT_SECS)).await;
    }
    if fetched == 0 {
        tally.players_without_media.fetch_add(1, Ordering::Relaxed);
    }
}

/// The resident memory each node reports.
async fn resident_all(addrs: &[SocketAddr]) -> Vec<u64> {
    let mut all = vec![];
    for &addr in addrs {
        all.push(
            status(addr).await.unwrap()["resident_bytes"]
                .as_u64()
                .unwrap(),
        );
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_viewers_over_five_nodes_play_without_errors() {
    init_logging();
    // Every player holds a socket here; the nodes inherit the raised limit.
    let limits = shoal_node::http::conns::fit_to_fd_limit(Default::default());
    assert!(
        limits.max >= VIEWERS,
        "open-file limit too low for {VIEWERS} connections: raise `ulimit -Hn`"
    );
    let first = ShoalProcess::start("scale-0", None, &[]).unwrap();
    let mut nodes = vec![];
    for i in 1..NODES {
        nodes
            .push(ShoalProcess::start(&format!("scale-{i}"), Some(&first.bootstrap), &[]).unwrap());
    }
    nodes.insert(0, first);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.http).collect();
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    for (i, &addr) in addrs.iter().enumerate() {
        let others: Vec<&str> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.as_str())
            .collect();
        wait_known(addr, &others).await.unwrap();
    }
    // The encoder, pushing into the first node throughout.
    let ingest = addrs[0];
    for seq in 0..4 {
        push(ingest, seq).await;
    }
    let encoder = tokio::spawn(async move {
        let mut seq = 4;
        let mut tick = tokio::time::interval(Duration::from_secs(SEGMENT_SECS));
        tick.tick().await;
        loop {
            tick.tick().await;
            push(ingest, seq).await;
            seq += 1;
        }
    });
    for &addr in &addrs {
        wait_for(
            "the stream on every node",
            Duration::from_secs(20),
            || async move {
                let r = http::get(addr, "/live/live/index.m3u8", &[])
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((r.status == 200).then_some(()))
            },
        )
        .await
        .unwrap();
    }
    let before = resident_all(&addrs).await;

    // 5,000 players, one a millisecond, spread evenly over the nodes.
    let tally = Arc::new(Tally::default());
    let mut players = Vec::with_capacity(VIEWERS);
    for i in 0..VIEWERS {
        players.push(tokio::spawn(play(addrs[i % NODES], tally.clone())));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every player connected and watching (on a busy machine the startups take a
    // while: wait for them, bounded), then what each node holds for them.
    let t = tally.clone();
    let failed = wait_for("every player to fetch media", STARTUP, || {
        let t = t.clone();
        async move {
            let playing = t.playing.load(Ordering::Relaxed);
            let errors = t.errors.load(Ordering::Relaxed);
            if errors > 0 || playing >= VIEWERS as u64 {
                Ok(Some(errors))
            } else {
                Err(format!("{playing} of {VIEWERS} playing"))
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(failed, 0, "players failed while starting (see above)");
    let during = wait_for(
        "every player to be a viewer",
        Duration::from_secs(30),
        || async {
            let mut viewers = vec![];
            let mut open = vec![];
            for &addr in &addrs {
                let s = status(addr).await.map_err(|e| e.to_string())?;
                viewers.push(
                    stream_status(&s, "live").map_or(0, |x| x["viewers"].as_u64().unwrap_or(0)),
                );
                open.push(s["connections"]["open"].as_u64().unwrap_or(0));
            }
            let total: u64 = viewers.iter().sum();
            if total >= VIEWERS as u64 {
                Ok(Some((viewers, open)))
            } else {
                Err(format!("viewers per node {viewers:?}"))
            }
        },
    )
    .await
    .unwrap();
    let (viewers, open) = during;
    let after = resident_all(&addrs).await;
    // A few more reloads each, then stop.
    tokio::time::sleep(Duration::from_secs(2 * SEGMENT_SECS)).await;
    tally.stop.store(true, Ordering::Relaxed);
    for p in players {
        p.await.unwrap();
    }
    encoder.abort();

    let errors = tally.errors.load(Ordering::Relaxed);
    let segments = tally.segments.load(Ordering::Relaxed);
    let per_conn: Vec<u64> = (0..NODES)
        .map(|i| after[i].saturating_sub(before[i]) / open[i].max(1))
        .collect();
    println!(
        "{VIEWERS} viewers over {NODES} nodes: {segments} segments, {errors} errors; viewers \
         per node {viewers:?}; connections open {open:?}; resident before {:?} KiB, with the \
         viewers {:?} KiB; per viewer connection {:?} bytes",
        before.iter().map(|b| b >> 10).collect::<Vec<_>>(),
        after.iter().map(|b| b >> 10).collect::<Vec<_>>(),
        per_conn,
    );
    assert_eq!(errors, 0, "every request of every player answered");
    assert_eq!(tally.players_without_media.load(Ordering::Relaxed), 0);
    // Each player is one session: exactly the players, evenly spread.
    assert_eq!(viewers.iter().sum::<u64>(), VIEWERS as u64);
    for v in &viewers {
        assert_eq!(*v, (VIEWERS / NODES) as u64, "viewers per node {viewers:?}");
    }
    // A connection costs a node kilobytes, not the 64 KiB its buffers may grow to.
    for (i, b) in per_conn.iter().enumerate() {
        assert!(*b < 64 * 1024, "node {i}: {b} bytes per viewer connection");
    }
}
