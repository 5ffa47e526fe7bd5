//! A closed mesh (`--mesh-ca`): nodes join only with a credential for their own peer id
//! signed by the mesh CA. A node without one (or with another CA's) is listed by no
//! peer, its streams reach nobody and its pulls are refused; a revoked member is cut
//! within seconds everywhere, and one whose credential expires likewise.

use shoal_node::data::client::{Client, DataError, Target};
use shoal_node::members::{issue_credential, issue_revocations};
use shoal_node::tokens::SigningKey;
use shoal_node::{NodeConfig, PeerId, identity};
use shoal_protocol::content::ContentId;
use shoal_protocol::data::Request;
use shoal_protocol::membership::{MeshCa, from_text};
use shoal_tests::http;
use shoal_tests::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-secret";

/// A mesh CA: its key, and what nodes are told of it.
struct Ca {
    key: SigningKey,
    public: MeshCa,
}

impl Ca {
    fn new() -> Self {
        let key = SigningKey::generate();
        let public = MeshCa::parse(&key.viewer_key_arg()).unwrap();
        Self { key, public }
    }

    /// A node's configuration with a credential for its peer id, valid for `ttl`.
    fn member(&self, tag: &str, ttl: Duration) -> NodeConfig {
        let mut c = config(tag);
        let peer = identity::load_or_create(&c.data_dir)
            .unwrap()
            .public()
            .to_peer_id();
        let text = issue_credential(&self.key, peer, ttl, shoal_node::tokens::unix_now()).unwrap();
        c.mesh_ca = Some(self.public);
        c.credential = Some(from_text(&text).unwrap());
        c.admin_token = Some(ADMIN.into());
        c.public_status = true;
        c
    }
}

async fn lists(addr: SocketAddr, peer: &PeerId) -> bool {
    let s = status(addr).await.unwrap();
    known_peers(&s).contains(&peer.to_string())
}

/// A data-plane request to the node at `addr` (its address and certificate from its
/// status) from a client that is not a node of the mesh.
async fn pull_as_stranger(addr: SocketAddr, stream: &str, seq: u64) -> Result<usize, DataError> {
    let s = status(addr).await.unwrap();
    let target = Target {
        peer: s["peer_id"].as_str().unwrap().parse().unwrap(),
        addr: s["listen"]["data"].as_str().unwrap().parse().unwrap(),
        fingerprint: ContentId::from_hex(s["cert_fingerprint"].as_str().unwrap()).unwrap(),
    };
    let identity = Arc::new(shoal_node::data::tls::generate().unwrap());
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let client = Client::new(endpoint, identity);
    let request = Request::Segment {
        stream: shoal_protocol::stream::Name::new(stream).unwrap(),
        seq,
    };
    client
        .fetch_bytes(target, &request, 1 << 24)
        .await
        .map(|(b, _)| b.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_credential_cannot_join_a_closed_mesh() {
    init_logging();
    let ca = Ca::new();
    let nodes = mesh(vec![
        ca.member("member-a", Duration::from_secs(3600)),
        ca.member("member-b", Duration::from_secs(3600)),
    ])
    .await
    .unwrap();
    let (a, b) = (nodes[0].http_addr(), nodes[1].http_addr());
    wait_known(a, &[&nodes[1].peer_id().to_string()])
        .await
        .unwrap();
    wait_known(b, &[&nodes[0].peer_id().to_string()])
        .await
        .unwrap();
    push_segment(a, "live", 0).await;

    // Two outsiders dial A: one with no credential (an open-mesh node), one with a
    // credential from a CA of its own.
    let mut open = config("outsider-open");
    open.bootstrap = nodes[0].p2p_addrs();
    let rogue_ca = Ca::new();
    let mut forged = rogue_ca.member("outsider-forged", Duration::from_secs(3600));
    forged.bootstrap = nodes[0].p2p_addrs();
    let outsiders = [
        shoal_node::Node::start(open).await.unwrap(),
        shoal_node::Node::start(forged).await.unwrap(),
    ];
    for (i, o) in outsiders.iter().enumerate() {
        push_segment(o.http_addr(), &format!("rogue{i}"), 0).await;
    }

    // A refuses both (its counter says so); then for several seconds no member lists
    // them or their streams, and their streams cannot be watched on any member.
    wait_for(
        "A to refuse both outsiders",
        Duration::from_secs(10),
        || async {
            let s = status(a).await.map_err(|e| e.to_string())?;
            let refused = s["membership"]["refused_total"].as_u64().unwrap_or(0);
            if refused >= 2 {
                Ok(Some(()))
            } else {
                Err(format!("{}", s["membership"]))
            }
        },
    )
    .await
    .unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for member in [a, b] {
            let s = status(member).await.unwrap();
            for o in &outsiders {
                assert!(
                    !lists(member, &o.peer_id()).await,
                    "{member} lists an outsider"
                );
            }
            for i in 0..2 {
                assert!(
                    stream_status(&s, &format!("rogue{i}")).is_none(),
                    "an outsider's stream reached {member}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for member in [a, b] {
        for i in 0..2 {
            let r = http::get(member, &format!("/live/rogue{i}/index.m3u8"), &[])
                .await
                .unwrap();
            assert_eq!(r.status, 404, "rogue{i} on {member}");
        }
    }
    let metrics = http::get(a, "/metrics", &[]).await.unwrap().text();
    assert!(metrics.contains("shoal_members_refused_total"), "{metrics}");

    // A client that is not a member cannot pull from a member's data plane...
    match pull_as_stranger(a, "live", 0).await {
        Err(DataError::Remote(why)) => assert!(why.contains("not a member"), "{why}"),
        other => panic!("a stranger's pull was not refused: {other:?}"),
    }
    let metrics = http::get(a, "/metrics", &[]).await.unwrap().text();
    assert!(
        metrics.contains("shoal_data_refused_non_member_total 1"),
        "{metrics}"
    );
    // ...while members pull as ever: A's stream plays on B.
    wait_for("segment 0 on B", Duration::from_secs(10), || async {
        let r = http::get(b, "/live/live/0.ts", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status == 200 && r.body.len() == SYNTHETIC_SEGMENT).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_member_is_cut_within_seconds_and_an_expired_one_too() {
    init_logging();
    let ca = Ca::new();
    let first = ca.member("rev-a", Duration::from_secs(3600));
    let saved_list = first.data_dir.join("revocations");
    let nodes = mesh(vec![
        first,
        ca.member("rev-b", Duration::from_secs(3600)),
        ca.member("rev-d", Duration::from_secs(3600)),
        ca.member("rev-e", Duration::from_secs(12)),
    ])
    .await
    .unwrap();
    let http: Vec<SocketAddr> = nodes.iter().map(|n| n.http_addr()).collect();
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id().to_string()).collect();
    for (i, addr) in http.iter().enumerate() {
        let others: Vec<&str> = (0..4)
            .filter(|j| *j != i)
            .map(|j| ids[j].as_str())
            .collect();
        wait_known(*addr, &others).await.unwrap();
    }
    // D watches A's stream.
    push_segment(http[0], "live", 0).await;
    wait_for("segment 0 on D", Duration::from_secs(10), || async {
        let r = http::get(http[2], "/live/live/0.ts", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status == 200).then_some(()))
    })
    .await
    .unwrap();

    // The operator revokes D at A.
    let list = issue_revocations(
        &ca.key,
        vec![nodes[2].peer_id()],
        shoal_node::tokens::unix_now(),
    )
    .unwrap();
    let auth = format!("Bearer {ADMIN}");
    let posted = Instant::now();
    let r = http::request(
        http[0],
        "POST",
        "/api/revocations",
        &[("Authorization", auth.as_str())],
        Some(list.as_bytes()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // Every member drops it, and it holds no connection to any of them.
    let d = nodes[2].peer_id();
    wait_for("D cut everywhere", Duration::from_secs(5), || async {
        for member in [http[0], http[1], http[3]] {
            if lists(member, &d).await {
                return Err(format!("{member} still lists D"));
            }
        }
        let sd = status(http[2]).await.map_err(|e| e.to_string())?;
        let connected = sd["peers"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count());
        if connected == 0 {
            Ok(Some(()))
        } else {
            Err(format!("D still connected to {connected}"))
        }
    })
    .await
    .unwrap();
    println!(
        "revoked member cut everywhere {:?} after the list was posted",
        posted.elapsed()
    );
    // The list reached B by gossip, and A kept it.
    let sb = status(http[1]).await.unwrap();
    assert_eq!(sb["membership"]["revoked"], 1, "{}", sb["membership"]);
    assert!(saved_list.exists(), "A did not keep the list");
    // D gets nothing new: a new segment at A never plays on D, and its pulls are refused.
    push_segment(http[0], "live", 1).await;
    wait_for("segment 1 on B", Duration::from_secs(10), || async {
        let r = http::get(http[1], "/live/live/1.ts", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status == 200).then_some(()))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = http::get(http[2], "/live/live/1.ts", &[]).await.unwrap();
    assert_ne!(r.status, 200, "a revoked node still got new media");
    assert!(!lists(http[0], &d).await, "D came back");

    // E's credential expires 12 s after it was issued: it is cut then.
    let e = nodes[3].peer_id();
    wait_for("E cut at expiry", Duration::from_secs(20), || async {
        let listed = lists(http[0], &e).await || lists(http[1], &e).await;
        Ok((!listed).then_some(()))
    })
    .await
    .unwrap();
    let s = status(http[0]).await.unwrap();
    assert!(
        s["membership"]["cut_total"].as_u64().unwrap() >= 2,
        "{}",
        s["membership"]
    );
}

#[tokio::test]
async fn a_node_of_a_closed_mesh_needs_a_valid_credential_to_start() {
    let ca = Ca::new();
    let mut c = ca.member("no-credential", Duration::from_secs(60));
    c.credential = None;
    let err = shoal_node::Node::start(c).await.err().expect("started");
    assert!(err.to_string().contains("--credential"), "{err}");
    // Another node's credential is not this one's.
    let other = ca.member("other", Duration::from_secs(60));
    let mut c = ca.member("borrowed", Duration::from_secs(60));
    c.credential = other.credential.clone();
    let err = shoal_node::Node::start(c).await.err().expect("started");
    assert!(err.to_string().contains("credential is for peer"), "{err}");
}

/// The operator's path with the real binary: `shoal keygen` makes the CA key,
/// `shoal credential` a node's credential, `shoal run --mesh-ca --credential` joins, and
/// `shoal revoke` posted to one node cuts another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_commands_close_a_mesh_and_revoke_a_node() {
    use shoal_tests::process::{ShoalProcess, binary};
    init_logging();
    let work = temp_dir("ca");
    std::fs::create_dir_all(&work).unwrap();
    let ca_key = work.join("ca.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shoal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let ca_public = run(&["keygen", ca_key.to_str().unwrap()]);
    let mut dirs = vec![];
    for name in ["cli-a", "cli-b"] {
        let dir = temp_dir(name);
        let peer = ShoalProcess::peer_id_of(&dir).unwrap();
        let credential = run(&[
            "credential",
            "--ca-key",
            ca_key.to_str().unwrap(),
            "--peer",
            &peer,
            "--ttl",
            "1h",
        ]);
        std::fs::write(dir.join("cred"), credential).unwrap();
        dirs.push((dir, peer));
    }
    let flags = |dir: &std::path::Path| {
        vec![
            "--mesh-ca".to_string(),
            ca_public.clone(),
            "--credential".into(),
            dir.join("cred").display().to_string(),
            "--admin-token".into(),
            ADMIN.into(),
            "--public-status".into(),
        ]
    };
    let fa = flags(&dirs[0].0);
    let fa: Vec<&str> = fa.iter().map(String::as_str).collect();
    let a = ShoalProcess::start_in(dirs[0].0.clone(), "cli-a", None, &fa).unwrap();
    let fb = flags(&dirs[1].0);
    let fb: Vec<&str> = fb.iter().map(String::as_str).collect();
    let b = ShoalProcess::start_in(dirs[1].0.clone(), "cli-b", Some(&a.bootstrap), &fb).unwrap();
    wait_known(a.http, &[&b.peer_id]).await.unwrap();
    wait_known(b.http, &[&a.peer_id]).await.unwrap();

    let list = run(&[
        "revoke",
        "--ca-key",
        ca_key.to_str().unwrap(),
        "--peer",
        &b.peer_id,
    ]);
    let auth = format!("Bearer {ADMIN}");
    let r = http::request(
        a.http,
        "POST",
        "/api/revocations",
        &[("Authorization", auth.as_str())],
        Some(list.as_bytes()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let b_id: PeerId = b.peer_id.parse().unwrap();
    wait_for("B cut", Duration::from_secs(5), || async {
        Ok((!lists(a.http, &b_id).await).then_some(()))
    })
    .await
    .unwrap();
    // Without the admin token the list is refused; a list from another key too.
    let r = http::request(
        a.http,
        "POST",
        "/api/revocations",
        &[],
        Some(list.as_bytes()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.text());
    let other_key = work.join("other.pem");
    run(&["keygen", other_key.to_str().unwrap()]);
    let forged = run(&[
        "revoke",
        "--ca-key",
        other_key.to_str().unwrap(),
        "--peer",
        &a.peer_id,
    ]);
    let r = http::request(
        a.http,
        "POST",
        "/api/revocations",
        &[("Authorization", auth.as_str())],
        Some(forged.as_bytes()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    drop((a, b));
}
