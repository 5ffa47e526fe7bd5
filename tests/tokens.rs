//! Viewer tokens: a three-node mesh started with `--viewer-key` serves only viewers with
//! a valid token for the stream, on every node, for playlists and media, through
//! redirects.

use shoal_node::NodeConfig;
use shoal_node::tokens::{SigningKey, unix_now};
use shoal_tests::http;
use shoal_tests::*;
use std::net::SocketAddr;
use std::time::Duration;

/// A node accepting tokens of `key`, with room for `viewers` viewers of a synthetic
/// stream (`None`: no limit).
fn guarded(tag: &str, key: &SigningKey, viewers: Option<u64>) -> NodeConfig {
    let mut c = config(tag);
    c.viewer_keys = vec![key.viewer_key_arg().parse().unwrap()];
    if let Some(v) = viewers {
        c.core.egress_capacity_bps = v * SYNTHETIC_BITRATE + SYNTHETIC_BITRATE / 2;
        c.core.ingest_reserve_bps = 0;
        c.core.startup_window = Duration::ZERO;
    }
    c
}

fn first_segment(text: &str) -> String {
    media_playlist(text).unwrap().entries[0].uri.clone()
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http::Response {
    http::get(addr, path, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_viewers_with_a_valid_token_for_the_stream_play_on_any_node() {
    init_logging();
    let key = SigningKey::generate();
    // A has no room for viewers: a viewer sent there is redirected.
    let nodes = mesh(vec![
        guarded("tok-a", &key, Some(0)),
        guarded("tok-b", &key, None),
        guarded("tok-c", &key, None),
    ])
    .await
    .unwrap();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr()).collect();
    let (a, b) = (addrs[0], addrs[1]);
    for seq in 0..3 {
        push_segment(b, "live", seq).await;
    }
    wait_bitrate(a, 2).await;
    let now = unix_now();
    let good = key
        .token("live", Duration::from_secs(3600), None, now)
        .unwrap();

    // A player with a valid token, sent to A, is redirected with its token and plays.
    let r = get(a, &format!("/live/live/index.m3u8?token={good}"), &[]).await;
    assert_eq!(r.status, 302, "{}", r.text());
    let location = r.header("location").unwrap().to_string();
    assert!(location.contains(&format!("token={good}")), "{location}");
    let to: SocketAddr = location
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(to, a);
    let path = &location[location.find("/live/").unwrap()..];
    let r = get(to, path, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let uri = first_segment(&r.text());
    assert!(
        uri.contains(&format!("token={good}")),
        "segment URLs carry it: {uri}"
    );
    let seg = get(to, &format!("/live/live/{uri}"), &[]).await;
    assert_eq!(seg.status, 200);
    assert_eq!(seg.body.len(), SYNTHETIC_SEGMENT);

    // A header or a cookie works too, and the playlist then carries the token for
    // players that drop both on segment requests.
    let bearer = format!("Bearer {good}");
    let r = get(b, "/live/live/index.m3u8", &[("Authorization", &bearer)]).await;
    assert_eq!(r.status, 200);
    assert!(first_segment(&r.text()).contains("token="));
    let cookie = format!("shoal_token={good}");
    let r = get(b, "/live/live/1.ts", &[("Cookie", &cookie)]).await;
    assert_eq!(r.status, 200);

    // A token seen before is not verified again: a player's next requests cost no
    // signature check.
    let checks = |text: String| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("shoal_viewer_token_signature_checks_total "))
            .expect("signature checks in the metrics")
            .trim()
            .parse()
            .unwrap()
    };
    let before = checks(get(b, "/metrics", &[]).await.text());
    assert!(before >= 1);
    for _ in 0..10 {
        let r = get(b, "/live/live/index.m3u8", &[("Authorization", &bearer)]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(checks(get(b, "/metrics", &[]).await.text()), before);

    // Refused on every node, for playlists and segments: missing (401), expired, for
    // another stream, bound to another address, or signed by an unknown key (403).
    let expired = key
        .token("live", Duration::from_secs(10), None, now - 3600)
        .unwrap();
    let other_stream = key
        .token("other", Duration::from_secs(3600), None, now)
        .unwrap();
    let elsewhere = key
        .token(
            "live",
            Duration::from_secs(3600),
            Some("10.9.9.9".parse().unwrap()),
            now,
        )
        .unwrap();
    let stranger = SigningKey::generate()
        .token("live", Duration::from_secs(3600), None, now)
        .unwrap();
    for &addr in &addrs {
        for file in ["index.m3u8", "1.ts"] {
            let path = format!("/live/live/{file}");
            assert_eq!(get(addr, &path, &[]).await.status, 401, "{addr} {file}");
            for bad in [&expired, &other_stream, &elsewhere, &stranger] {
                let r = get(addr, &format!("{path}?token={bad}"), &[]).await;
                assert_eq!(r.status, 403, "{addr} {file}: {}", r.text());
            }
            let r = get(addr, &path, &[("Authorization", "Bearer not-a-token")]).await;
            assert_eq!(r.status, 403);
        }
    }
    // Counted in the metrics.
    let text = get(b, "/metrics", &[]).await.text();
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shoal_viewer_tokens_refused_total "))
        .expect("token refusals in the metrics")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(refused, 2 * 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_and_token_commands_drive_a_node_started_with_viewer_key() {
    init_logging();
    let dir = temp_dir("tok-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("viewer.pem");
    let shoal = shoal_tests::process::binary();
    let out = std::process::Command::new(&shoal)
        .arg("keygen")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer_key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Never overwrites a key.
    let again = std::process::Command::new(&shoal)
        .arg("keygen")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let token = |stream: &str, ttl: &str| {
        let out = std::process::Command::new(&shoal)
            .args(["token", "--key"])
            .arg(&key_file)
            .args(["--stream", stream, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let node =
        shoal_tests::process::ShoalProcess::start("tok-node", None, &["--viewer-key", &viewer_key])
            .unwrap();
    let addr = node.http;
    wait_for("the node to answer", Duration::from_secs(10), || async {
        Ok::<_, String>(http::get(addr, "/healthz", &[]).await.ok().map(|_| ()))
    })
    .await
    .unwrap();
    for seq in 0..2 {
        push_segment(addr, "live", seq).await;
    }
    let path = "/live/live/index.m3u8";
    assert_eq!(get(addr, path, &[]).await.status, 401);
    let good = token("live", "10m");
    let r = get(addr, &format!("{path}?token={good}"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let wrong = token("other", "10m");
    assert_eq!(
        get(addr, &format!("{path}?token={wrong}"), &[])
            .await
            .status,
        403
    );
}
