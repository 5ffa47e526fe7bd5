//! The load balancer on real nodes over real sockets: a full node redirects to a peer
//! with headroom (and refuses when nobody has room), a draining node redirects new
//! viewers while serving its own and then hands them off and leaves, and ingest goes on
//! on a node whose viewers fill its capacity.
//!
//! Viewers are told apart by `?sid=` (all tests run from 127.0.0.1). Streams are
//! synthetic 1 s segments of [`SYNTHETIC_SEGMENT`] bytes: exactly 1,638,400 bit/s.

use serde_json::Value;
use shoal_node::NodeConfig;
use shoal_tests::http::{self, Response};
use shoal_tests::process::{ShoalProcess, binary};
use shoal_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

const MBIT: u64 = 1_000_000;
const BITRATE: u64 = SYNTHETIC_BITRATE;

/// A node with a capacity. A new viewer counts just its bitrate here (not twice while it
/// starts, see `startup_window`) so that the figures below are exact.
fn with_capacity(tag: &str, capacity: u64, reserve: u64) -> NodeConfig {
    let mut c = config(tag);
    c.core.egress_capacity_bps = capacity;
    c.core.ingest_reserve_bps = reserve;
    c.core.startup_window = Duration::ZERO;
    c
}

async fn playlist(addr: SocketAddr, query: &str) -> Response {
    http::get(addr, &format!("/live/live/index.m3u8?{query}"), &[])
        .await
        .unwrap()
}

/// Fetches the first segment a playlist response lists, as a player does (its URI
/// carries the session).
async fn fetch_first(addr: SocketAddr, playlist: &Response) {
    let listed = media_playlist(&playlist.text()).unwrap();
    let uri = &listed.entries[0].uri;
    let r = http::get(addr, &format!("/live/live/{uri}"), &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// Follows a redirect's Location (an absolute http:// URL on 127.0.0.1).
async fn follow(r: &Response) -> (SocketAddr, Response) {
    let location = r.header("location").expect("a Location header");
    let rest = location.strip_prefix("http://").expect("absolute URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let addr: SocketAddr = host.parse().unwrap();
    (addr, http::get(addr, path, &[]).await.unwrap())
}

/// Waits until the node at `observer` sees peer `draining` announce that it drains.
async fn wait_draining(observer: SocketAddr, draining: &str) {
    wait_for(
        "a peer to be seen draining",
        Duration::from_secs(10),
        || async {
            let s = status(observer).await.map_err(|e| e.to_string())?;
            let seen = s["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["peer_id"] == draining && p["draining"] == true);
            Ok(seen.then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_node_redirects_to_a_peer_with_headroom_then_refuses() {
    init_logging();
    // Budgets: A and B take two viewers each. B: 2 x 1.64 <= 4 < 3 x 1.64. A ingests,
    // so one copy of the stream is kept for the mesh: 2 x 1.64 <= 6 - 1.64 < 3 x 1.64.
    let (nodes, a, b) = pair(
        with_capacity("bal-a", 6 * MBIT, 0),
        with_capacity("bal-b", 4 * MBIT, 0),
    )
    .await;
    for seq in 0..4 {
        push_segment(a, "live", seq).await;
    }
    wait_bitrate(a, 1).await;
    wait_bitrate(b, 1).await;

    // Before any viewer, a front end is pointed at A itself.
    let r = http::get(a, "/route/live", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let route: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(route["local"], true, "{route}");
    assert_eq!(
        route["url"],
        format!("http://{a}/live/live/index.m3u8?redirected=1")
    );
    let r = http::get(a, "/route/live?redirect=1", &[]).await.unwrap();
    assert_eq!(r.status, 302);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("http://{a}/"))
    );
    assert_eq!(http::get(a, "/route/nope", &[]).await.unwrap().status, 404);

    for v in ["v1", "v2"] {
        let r = playlist(a, &format!("sid={v}")).await;
        assert_eq!(r.status, 200, "{v}: {}", r.text());
        fetch_first(a, &r).await;
    }
    // A is full: the third viewer is sent to B, marked, with its session kept.
    let r = playlist(a, "sid=v3").await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap().to_string();
    assert_eq!(
        location,
        format!("http://{b}/live/live/index.m3u8?redirected=1&sid=v3")
    );
    let (at, served) = follow(&r).await;
    assert_eq!(at, b);
    assert_eq!(served.status, 200, "{}", served.text());
    let listed = media_playlist(&served.text()).unwrap();
    assert!(!listed.entries.is_empty());
    fetch_first(b, &served).await;
    // Let B's status count that viewer (A charges B for it until then).
    let b_id = nodes[1].peer_id().to_string();
    wait_for("A to see B's viewer", Duration::from_secs(10), || async {
        let s = status(a).await.map_err(|e| e.to_string())?;
        let load = s["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["peer_id"] == b_id.as_str())
            .map(|p| p["load"]["viewer_load_bps"].clone());
        Ok((load == Some(BITRATE.into())).then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = playlist(a, "sid=v4").await;
    assert_eq!(r.status, 302);
    let (at, served) = follow(&r).await;
    assert_eq!(served.status, 200);
    fetch_first(at, &served).await;

    // Nobody has room: A refuses with Retry-After rather than redirect to a full B, and
    // B refuses a redirected viewer rather than bounce it on.
    let r = playlist(a, "sid=v5").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    let r = playlist(b, "redirected=1&sid=v6").await;
    assert_eq!(r.status, 503);
    assert_eq!(http::get(a, "/route/live", &[]).await.unwrap().status, 503);

    // Admitted viewers keep their node: playlist and segments still served.
    assert_eq!(playlist(a, "sid=v1").await.status, 200);
    let seg = http::get(a, "/live/live/3.ts?sid=v2", &[]).await.unwrap();
    assert_eq!(seg.status, 200);
    assert_eq!(seg.body.len(), SYNTHETIC_SEGMENT);

    let sa = status(a).await.unwrap();
    assert_eq!(sa["load"]["viewers"], 2, "{}", sa["load"]);
    assert_eq!(sa["load"]["viewer_load_bps"], 2 * BITRATE);
    assert_eq!(sa["counters"]["viewers_redirected_total"], 2);
    assert_eq!(sa["counters"]["viewers_refused_total"], 2);
    let sb = status(b).await.unwrap();
    assert_eq!(sb["load"]["viewers"], 2, "{}", sb["load"]);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_node_redirects_new_viewers_serves_its_own_then_leaves_and_rejoins() {
    init_logging();
    let mut drained = config("drain-a");
    drained.admin_token = Some("admin-secret".into());
    // The test reads its status without the token.
    drained.public_status = true;
    let drained_dir = drained.data_dir.clone();
    let mut nodes = mesh(vec![config("drain-b"), drained]).await.unwrap();
    let (b, a) = (nodes[0].http_addr(), nodes[1].http_addr());
    let a_id = nodes[1].peer_id().to_string();
    wait_known(b, &[&a_id]).await.unwrap();
    for seq in 0..4 {
        push_segment(b, "live", seq).await;
    }
    wait_bitrate(a, 1).await;
    assert_eq!(playlist(a, "sid=own").await.status, 200);

    // The admin API wants the token.
    let post = |auth: Option<&'static str>| async move {
        let h: Vec<(&str, &str)> = auth.map(|v| ("Authorization", v)).into_iter().collect();
        http::request(a, "POST", "/api/drain", &h, None, false)
            .await
            .unwrap()
    };
    assert_eq!(post(None).await.status, 401);
    assert_eq!(post(Some("Bearer wrong")).await.status, 403);
    let r = post(Some("Bearer admin-secret")).await;
    assert_eq!(r.status, 202, "{}", r.text());
    // The node's owner is told (as `shoal run` is, which then drains and exits).
    tokio::time::timeout(Duration::from_secs(2), nodes[1].drain_requested())
        .await
        .expect("drain request reaches the node's owner");

    // New viewers go to B; the admitted one is still served here, segments too.
    let r = playlist(a, "sid=new").await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert!(
        r.header("location")
            .unwrap()
            .starts_with(&format!("http://{b}/"))
    );
    assert_eq!(playlist(a, "sid=own").await.status, 200);
    assert_eq!(
        http::get(a, "/live/live/3.ts?sid=own", &[])
            .await
            .unwrap()
            .status,
        200
    );
    // B learns A is draining from its status.
    wait_draining(b, &a_id).await;
    assert_eq!(status(a).await.unwrap()["draining"], "draining");

    // Drain with a 1 s deadline: the remaining viewer is then handed off to B...
    let node_a = nodes.remove(1);
    let drain = tokio::spawn(node_a.drain(Duration::from_secs(1)));
    wait_for("the hand-off", Duration::from_secs(10), || async {
        let r = http::get(a, "/live/live/index.m3u8?sid=own", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status == 302).then_some(r))
    })
    .await
    .unwrap();
    // ...and once viewers are quiet, A leaves the mesh and stops answering.
    tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .expect("drain finishes")
        .unwrap();
    assert!(http::get(a, "/healthz", &[]).await.is_err());

    // A restart with the same data dir rejoins under the same identity.
    let mut again = config("drain-a2");
    again.data_dir = drained_dir;
    again.bootstrap = nodes[0].p2p_addrs();
    let restarted = shoal_node::Node::start(again).await.unwrap();
    assert_eq!(restarted.peer_id().to_string(), a_id);
    wait_known(b, &[&a_id]).await.unwrap();
    restarted.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_goes_on_while_viewers_fill_the_nodes_capacity() {
    init_logging();
    // A: 4 Mbit, one 1.64 Mbit copy of its ingest kept for the mesh (more than the 20%
    // reserve): a 2.36 Mbit viewer budget takes one 1.64 Mbit viewer.
    // Each knows the other: B must know A as a holder for its viewers' prefetches to
    // start at once.
    let (nodes, a, b) = pair(
        with_capacity("fill-a", 4 * MBIT, 4 * MBIT / 5),
        config("fill-b"),
    )
    .await;
    push_segment(a, "live", 0).await;
    push_segment(a, "live", 1).await;
    wait_bitrate(a, 1).await;
    assert_eq!(playlist(a, "sid=v0").await.status, 200);
    // The admitted viewer pulls segments as fast as it can (well past its share), and
    // twenty more viewers arrive, while the encoder keeps pushing.
    let hammer = tokio::spawn(async move {
        let mut got = 0u64;
        for i in 0..200u64 {
            let r = http::get(a, &format!("/live/live/{}.ts?sid=v0", i % 2), &[]).await;
            if r.is_ok_and(|r| r.status == 200) {
                got += 1;
            }
        }
        got
    });
    let mut redirected = 0;
    for seq in 2..12 {
        push_segment(a, "live", seq).await;
        for v in 0..2 {
            let r = playlist(a, &format!("sid=n{seq}-{v}")).await;
            assert!(matches!(r.status, 200 | 302), "{}", r.status);
            if r.status == 302 {
                redirected += 1;
                assert_eq!(follow(&r).await.1.status, 200);
            }
        }
    }
    assert_eq!(
        hammer.await.unwrap(),
        200,
        "the admitted viewer is always served"
    );
    assert_eq!(redirected, 20, "every new viewer went to B");
    let sa = status(a).await.unwrap();
    assert_eq!(sa["load"]["viewers"], 1);
    assert!(
        sa["load"]["viewer_load_bps"].as_u64().unwrap()
            <= sa["load"]["viewer_budget_bps"].as_u64().unwrap()
    );
    assert_eq!(sa["counters"]["ingest_segments_total"], 12);
    // Every segment pushed after B had viewers (from #3) reached B through the mesh.
    wait_for(
        "B to hold segments 3-11",
        Duration::from_secs(20),
        || async {
            let s = status(b).await.map_err(|e| e.to_string())?;
            let held: Vec<u64> = stream_status(&s, "live")
                .and_then(|x| x["segments"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|s| s["held"] == true)
                .filter_map(|s| s["seq"].as_u64())
                .collect();
            if (3..12).all(|seq| held.contains(&seq)) {
                Ok(Some(()))
            } else {
                Err(format!("B holds {held:?}"))
            }
        },
    )
    .await
    .unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_shoal_drain_drain_real_processes() {
    let flags = [
        "--admin-token",
        "tok",
        "--public-status",
        "--drain-timeout",
        "1",
    ];
    let mut a = ShoalProcess::start("term-a", None, &flags).unwrap();
    let mut b = ShoalProcess::start("term-b", Some(&a.bootstrap), &flags).unwrap();
    wait_known(a.http, &[&b.peer_id]).await.unwrap();
    wait_known(b.http, &[&a.peer_id]).await.unwrap();

    // SIGTERM: A tells the mesh it is draining, then exits cleanly.
    a.terminate();
    wait_draining(b.http, &a.peer_id).await;
    let exit = a.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}: {}",
        a.log_tail(20)
    );
    assert!(a.log_tail(20).contains("drained"), "{}", a.log_tail(20));

    // `shoal drain`: a wrong token is refused with a clear message; the right one drains
    // B, and --wait returns once B has gone.
    let wrong = std::process::Command::new(binary())
        .args([
            "drain",
            "--http",
            &b.http.to_string(),
            "--admin-token",
            "nope",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("403"));
    let out = tokio::task::spawn_blocking({
        let http = b.http.to_string();
        move || {
            std::process::Command::new(binary())
                .args(["drain", "--http", &http, "--admin-token", "tok", "--wait"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no longer answers"));
    let exit = b.wait_exit(Duration::from_secs(10)).await;
    assert!(
        exit.is_some_and(|e| e.success()),
        "{exit:?}: {}",
        b.log_tail(20)
    );
}
