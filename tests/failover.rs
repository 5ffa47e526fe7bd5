//! Every node a failover, with real `shoal` processes killed with SIGKILL: the origin's
//! uploads per segment stay bounded by the fan-out, a dead relay does not stop the
//! stream, a redundant encoder takes over from a dead one, and a stream moved to another
//! node continues, all without resetting the media sequence.

use serde_json::Value;
use shoal_tests::http;
use shoal_tests::process::ShoalProcess;
use shoal_tests::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FANOUT: usize = 4;

fn held(status: &Value, stream: &str) -> Vec<u64> {
    stream_status(status, stream)
        .and_then(|s| s["segments"].as_array())
        .map(|segs| {
            segs.iter()
                .filter(|s| s["held"] == true)
                .filter_map(|s| s["seq"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// A viewer's playlist request on each node: marks the stream watched (prefetching).
async fn touch(nodes: &[&ShoalProcess], stream: &str) {
    for n in nodes {
        let _ = http::get(n.http, &format!("/live/{stream}/index.m3u8"), &[]).await;
    }
}

/// Waits until `check` accepts the status of every node in `nodes`.
async fn wait_every(
    nodes: &[&ShoalProcess],
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> Result<(), String>,
) {
    wait_for(what, timeout, || async {
        for n in nodes {
            let s = status(n.http).await.map_err(|e| e.to_string())?;
            check(&s).map_err(|e| format!("{}: {e}", n.name))?;
        }
        Ok(Some(()))
    })
    .await
    .unwrap();
}

async fn wait_all_hold(nodes: &[&ShoalProcess], stream: &str, seqs: std::ops::Range<u64>) {
    let what = format!("every node to hold {stream} {seqs:?}");
    wait_every(nodes, &what, Duration::from_secs(40), |s| {
        let h = held(s, stream);
        if seqs.clone().all(|q| h.contains(&q)) {
            Ok(())
        } else {
            Err(format!("holds {h:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_nodes_bounded_origin_uploads_and_a_killed_relay() {
    init_logging();
    let fanout = FANOUT.to_string();
    let extra = ["--fanout", fanout.as_str()];
    let first = ShoalProcess::start("n0", None, &extra).unwrap();
    let mut nodes = vec![first];
    for i in 1..12 {
        let boot = nodes[0].bootstrap.clone();
        nodes.push(ShoalProcess::start(&format!("n{i}"), Some(&boot), &extra).unwrap());
    }
    let formed = Instant::now();
    let all: Vec<&ShoalProcess> = nodes.iter().collect();
    wait_every(
        &all,
        "all 12 nodes to know 11 peers",
        Duration::from_secs(40),
        |s| match known_peers(s).len() {
            11 => Ok(()),
            k => Err(format!("knows {k}")),
        },
    )
    .await;
    println!("mesh of 12 formed in {:?}", formed.elapsed());

    let origin = nodes[1].http;
    let pullers: Vec<&ShoalProcess> = nodes.iter().filter(|n| n.http != origin).collect();
    for seq in 0..8 {
        push_segment(origin, "fan", seq).await;
        // Players poll the playlist: once the stream exists they are its viewers.
        touch(&pullers, "fan").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_all_hold(&pullers, "fan", 0..8).await;

    // The origin sent each segment to at most K peers; every node got each segment once.
    let o = status(origin).await.unwrap();
    let uploads: Vec<u64> = stream_status(&o, "fan").unwrap()["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uploads"].as_u64().unwrap())
        .collect();
    println!("origin uploads per segment (K={FANOUT}): {uploads:?}");
    assert!(
        uploads.iter().all(|&u| u >= 1 && u <= FANOUT as u64),
        "{uploads:?}"
    );
    let mut from_origin = 0;
    let mut relay_uploads: BTreeMap<String, u64> = BTreeMap::new();
    for n in &pullers {
        let s = status(n.http).await.unwrap();
        assert_eq!(
            s["counters"]["fetch_ok_total"], 8,
            "{} pulled a segment twice",
            n.name
        );
        for seg in stream_status(&s, "fan").unwrap()["segments"]
            .as_array()
            .unwrap()
        {
            if seg["source"] == nodes[1].peer_id.as_str() {
                from_origin += 1;
            }
            *relay_uploads.entry(n.name.clone()).or_default() += seg["uploads"].as_u64().unwrap();
        }
    }
    println!(
        "segment copies: {} from the origin, {} relayed; uploads by relay: {relay_uploads:?}",
        from_origin,
        8 * 11 - from_origin
    );
    assert!(from_origin <= 8 * FANOUT);

    // Kill -9 the busiest relay; the others notice and keep receiving.
    let (relay_name, _) = relay_uploads.iter().max_by_key(|(_, u)| **u).unwrap();
    let relay = nodes.iter().position(|n| &n.name == relay_name).unwrap();
    let relay_id = nodes[relay].peer_id.clone();
    nodes[relay].kill9();
    let killed = Instant::now();
    let survivors: Vec<&ShoalProcess> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != relay)
        .map(|(_, n)| n)
        .collect();
    let what = "every node to notice the dead relay";
    wait_every(&survivors, what, Duration::from_secs(20), |s| {
        if known_peers(s).contains(&relay_id) {
            Err("still lists it".into())
        } else {
            Ok(())
        }
    })
    .await;
    println!(
        "relay {relay_name} killed; every node noticed within {:?}",
        killed.elapsed()
    );
    let live_pullers: Vec<&ShoalProcess> = survivors
        .iter()
        .copied()
        .filter(|n| n.http != origin)
        .collect();
    touch(&live_pullers, "fan").await;
    for seq in 8..14 {
        push_segment(origin, "fan", seq).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_all_hold(&live_pullers, "fan", 8..14).await;
    let o = status(origin).await.unwrap();
    for s in stream_status(&o, "fan").unwrap()["segments"]
        .as_array()
        .unwrap()
    {
        assert!(s["uploads"].as_u64().unwrap() <= FANOUT as u64, "{s}");
    }
}

/// Watches `viewer`'s playlist of `stream` until its newest segment passes `beyond` by
/// three and a discontinuity shows, checking the media sequence never goes back.
/// Returns how long after `since` the first segment past `beyond` appeared.
async fn watch_continuity(
    viewer: SocketAddr,
    stream: &str,
    beyond: u64,
    since: Instant,
) -> Duration {
    let path = format!("/live/{stream}/index.m3u8");
    let mut last_first = 0;
    let mut first_new: Option<Duration> = None;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        assert!(
            Instant::now() < deadline,
            "the stream did not continue past {beyond}"
        );
        let r = http::get(viewer, &path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let (first, newest) = media_playlist(&text)
            .unwrap()
            .seq_range()
            .expect("playlist with segments");
        assert!(
            first >= last_first,
            "media sequence went back: {last_first} -> {first}\n{text}"
        );
        last_first = first;
        if newest > beyond && first_new.is_none() {
            first_new = Some(since.elapsed());
        }
        if newest >= beyond + 3 && text.contains("#EXT-X-DISCONTINUITY") {
            // The segments after the switch are served.
            let seg = text.lines().rfind(|l| !l.starts_with('#')).unwrap();
            let r = http::get(viewer, &format!("/live/{stream}/{seg}"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            return first_new.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn newest_on(viewer: SocketAddr, stream: &str, at_least: u64) -> u64 {
    let path = format!("/live/{stream}/index.m3u8");
    wait_for(
        "the viewer's playlist to fill",
        Duration::from_secs(40),
        || async {
            let r = http::get(viewer, &path, &[])
                .await
                .map_err(|e| e.to_string())?;
            let playlist = media_playlist(&r.text()).map_err(|e| e.to_string())?;
            let newest = playlist.seq_range().map(|p| p.1);
            Ok(newest.filter(|&n| n >= at_least))
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redundant_ingest_survives_the_loss_of_the_followed_source() {
    init_logging();
    let mut x = ShoalProcess::start("x", None, &[]).unwrap();
    let y = ShoalProcess::start("y", Some(&x.bootstrap), &[]).unwrap();
    let z = ShoalProcess::start("z", Some(&x.bootstrap), &[]).unwrap();
    wait_known(z.http, &[&x.peer_id, &y.peer_id]).await.unwrap();
    wait_known(y.http, &[&x.peer_id]).await.unwrap();

    // Two encoders push the same stream, into X first and Y a moment later.
    let enc_x = Encoder::push(x.http, "dual", 120, Packaging::Ts).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _enc_y = Encoder::push(y.http, "dual", 120, Packaging::Ts).unwrap();
    let before = newest_on(z.http, "dual", 3).await;
    let s = status(z.http).await.unwrap();
    assert_eq!(
        stream_status(&s, "dual").unwrap()["source"],
        x.peer_id.as_str()
    );
    let ys = status(y.http).await.unwrap();
    assert_eq!(
        ys["ingesting"][0]["active"], false,
        "Y stands by: {}",
        ys["ingesting"]
    );

    x.kill9();
    drop(enc_x);
    let killed = Instant::now();
    let newest_at_kill = newest_on(z.http, "dual", before).await;
    let gap = watch_continuity(z.http, "dual", newest_at_kill, killed).await;
    let s = status(z.http).await.unwrap();
    assert_eq!(
        stream_status(&s, "dual").unwrap()["source"],
        y.peer_id.as_str()
    );
    println!(
        "followed source killed at seq {newest_at_kill}; the first segment from the standby reached the viewer's node {gap:?} later"
    );
    let ys = status(y.http).await.unwrap();
    assert_eq!(ys["ingesting"][0]["active"], true);
    assert!(ys["counters"]["ingest_standby_total"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moved_ingest_continues_and_a_restarted_node_rejoins() {
    init_logging();
    let x = ShoalProcess::start("x", None, &[]).unwrap();
    let mut y = ShoalProcess::start("y", Some(&x.bootstrap), &[]).unwrap();
    let z = ShoalProcess::start("z", Some(&x.bootstrap), &[]).unwrap();
    wait_known(x.http, &[&y.peer_id, &z.peer_id]).await.unwrap();

    let enc = Encoder::push(y.http, "moved", 120, Packaging::Ts).unwrap();
    newest_on(x.http, "moved", 3).await;
    y.kill9();
    drop(enc);
    let killed = Instant::now();
    let newest_at_kill = newest_on(x.http, "moved", 0).await;
    // The broadcaster re-pushes the same stream to another node.
    let _enc = Encoder::push(z.http, "moved", 120, Packaging::Ts).unwrap();
    let gap = watch_continuity(x.http, "moved", newest_at_kill, killed).await;
    println!(
        "ingest moved after seq {newest_at_kill}; the stream continued on the viewer's node {gap:?} after the kill"
    );

    // Y restarts with its data dir: same identity, back in the mesh, serving the stream.
    let restarted = Instant::now();
    y.restart().unwrap();
    wait_known(x.http, &[&y.peer_id]).await.unwrap();
    let newest = newest_on(y.http, "moved", newest_at_kill + 1).await;
    println!(
        "restarted node rejoined and served the playlist (newest {newest}) {:?} after start",
        restarted.elapsed()
    );
    let r = http::get(y.http, &format!("/live/moved/{newest}.ts"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.text(), y.log_tail(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_moved_encoder_takes_over_before_the_old_claim_lapses() {
    init_logging();
    let nodes = mesh(vec![config("mv-a"), config("mv-b"), config("mv-c")])
        .await
        .unwrap();
    let (a, b, c) = (
        nodes[0].http_addr(),
        nodes[1].http_addr(),
        nodes[2].http_addr(),
    );
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id().to_string()).collect();
    wait_known(b, &[&ids[0]]).await.unwrap();
    wait_known(c, &[&ids[0], &ids[1]]).await.unwrap();
    // 1 s segments into A.
    for seq in 0..3 {
        push_segment(a, "mv", seq).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The broadcaster moves to B (a new encoder: its file names start again). B holds its
    // segments back while the stream could still be A's, then takes over once it stalls.
    let mut newest = None;
    for seq in 0..15 {
        push_segment(b, "mv", seq).await;
        let s = status(c).await.unwrap();
        newest = stream_status(&s, "mv")
            .and_then(|x| x["segments"].as_array().cloned())
            .and_then(|segs| segs.last().cloned());
        if newest
            .as_ref()
            .is_some_and(|n| n["origin"] == ids[1].as_str())
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let newest = newest.expect("C knows the stream");
    assert_eq!(newest["origin"], ids[1].as_str(), "B never took over");
    assert!(
        newest["seq"].as_u64().unwrap() >= 3,
        "numbering continues: {newest}"
    );
    // ...while A's claim (10 s of silence to lapse) still stood.
    let sa = status(a).await.unwrap();
    assert_eq!(sa["ingesting"][0]["name"], "mv", "{}", sa["ingesting"]);
    let sb = status(b).await.unwrap();
    assert!(sb["counters"]["ingest_standby_total"].as_u64().unwrap() >= 1);
    for n in nodes {
        n.shutdown().await;
    }
}
