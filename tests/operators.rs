//! Who may operate a node: status and metrics need the admin token when the node has
//! one (unless `--public-status`), or move to a listener of their own
//! (`--admin-http`); the admin API always needs the token; viewers are not affected.

use shoal_tests::http;
use shoal_tests::*;
use std::net::SocketAddr;

const ADMIN: &str = "operator-secret";

async fn status_of(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    http::get(addr, path, headers).await.unwrap().status
}

async fn drain_status(addr: SocketAddr, headers: &[(&str, &str)]) -> u16 {
    http::request(addr, "POST", "/api/drain", headers, None, false)
        .await
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_need_the_admin_token_when_the_node_has_one() {
    init_logging();
    let mut c = config("ops-token");
    c.admin_token = Some(ADMIN.into());
    let open = {
        let mut c = config("ops-public");
        c.admin_token = Some(ADMIN.into());
        c.public_status = true;
        c
    };
    let nodes = mesh(vec![c, open]).await.unwrap();
    let (guarded, public) = (nodes[0].http_addr(), nodes[1].http_addr());
    push_segment(guarded, "live", 0).await;
    push_segment(guarded, "live", 1).await;

    let good = format!("Bearer {ADMIN}");
    let good = [("Authorization", good.as_str())];
    let wrong = [("Authorization", "Bearer operator-secreT")];
    let short = [("Authorization", "Bearer operator")];
    for path in ["/api/status", "/metrics"] {
        assert_eq!(status_of(guarded, path, &[]).await, 401, "{path}");
        assert_eq!(status_of(guarded, path, &wrong).await, 403, "{path}");
        assert_eq!(status_of(guarded, path, &short).await, 403, "{path}");
        assert_eq!(status_of(guarded, path, &good).await, 200, "{path}");
        // --public-status: open to anyone, even with an admin token.
        assert_eq!(status_of(public, path, &[]).await, 200, "{path}");
    }
    let body = http::get(guarded, "/api/status", &[]).await.unwrap().text();
    assert!(body.contains("ADMIN_TOKEN"), "a clear refusal: {body}");
    // Viewers and health checks need nothing.
    assert_eq!(status_of(guarded, "/healthz", &[]).await, 200);
    assert_eq!(status_of(guarded, "/live/live/index.m3u8", &[]).await, 200);
    // The admin API needs the token on both.
    assert_eq!(drain_status(public, &[]).await, 401);
    assert_eq!(drain_status(public, &wrong).await, 403);
    assert_eq!(drain_status(public, &good).await, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_endpoints_move_to_their_own_listener() {
    init_logging();
    let mut c = config("ops-listener");
    c.admin_token = Some(ADMIN.into());
    c.admin_http = Some("127.0.0.1:0".parse().unwrap());
    let nodes = mesh(vec![c]).await.unwrap();
    let viewers = nodes[0].http_addr();
    let operators = nodes[0].admin_addr().expect("an operators' listener");
    assert_ne!(viewers, operators);
    push_segment(viewers, "live", 0).await;
    push_segment(viewers, "live", 1).await;

    // Gone from the viewers' listener, whatever the credentials.
    let good = format!("Bearer {ADMIN}");
    let good = [("Authorization", good.as_str())];
    for path in ["/api/status", "/metrics"] {
        assert_eq!(status_of(viewers, path, &good).await, 404, "{path}");
    }
    assert_eq!(drain_status(viewers, &good).await, 404);
    assert_eq!(status_of(viewers, "/live/live/index.m3u8", &[]).await, 200);
    // Open on the operators' listener, which serves nothing else.
    let s = http::get(operators, "/api/status", &[]).await.unwrap();
    assert_eq!(s.status, 200);
    let s: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert!(stream_status(&s, "live").is_some(), "{s}");
    let m = http::get(operators, "/metrics", &[]).await.unwrap();
    assert_eq!(m.status, 200);
    assert!(m.text().contains("shoal_peers"), "{}", m.text());
    assert_eq!(status_of(operators, "/healthz", &[]).await, 200);
    assert_eq!(
        status_of(operators, "/live/live/index.m3u8", &[]).await,
        404
    );
    // The admin API still needs the token there.
    assert_eq!(drain_status(operators, &[]).await, 401);
    assert_eq!(drain_status(operators, &good).await, 202);
}
