//! A rogue peer: a libp2p host of its own (not a Shoal node) that joins a two-node mesh
//! over QUIC, subscribes to Shoal's topics and publishes gossip that fails verification
//! (undecodable bytes, announcements and statuses with tampered signatures, a status
//! out of bounds). Every message is rejected and not forwarded, the peer is banned and
//! cut, it cannot reconnect, and the honest mesh keeps serving.

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use shoal_protocol::codec;
use shoal_protocol::content::ContentId;
use shoal_protocol::gossip::{self, Gossip};
use shoal_protocol::segment::{self, Announcement, Container};
use shoal_protocol::signed::Signed;
use shoal_protocol::status::{Load, Status};
use shoal_protocol::stream;
use shoal_tests::http;
use shoal_tests::*;
use std::time::{Duration, Instant};

fn rogue() -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Anonymous)
                // Anonymous messages have no sequence number: identify them by content.
                .message_id_fn(|m| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
                })
                .build()
                .expect("valid config");
            gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config).expect("behaviour")
        })
        .expect("swarm")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Drives `swarm` until `done` says so or `timeout` passes; false on timeout.
async fn drive(
    swarm: &mut Swarm<gossipsub::Behaviour>,
    timeout: Duration,
    mut done: impl FnMut(
        &mut Swarm<gossipsub::Behaviour>,
        Option<&SwarmEvent<gossipsub::Event>>,
    ) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done(swarm, None) {
            return true;
        }
        match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
            Ok(event) => {
                if done(swarm, Some(&event)) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// The media shard topic of stream `live`, which A carries (its encoder pushes it).
fn media_topic() -> String {
    gossip::MediaShard::of(&stream::Name::new("live").unwrap()).topic()
}

/// Messages that must all fail verification, each distinct (gossip deduplicates).
fn bad_messages(key: &libp2p::identity::Keypair) -> Vec<(IdentTopic, Vec<u8>)> {
    let media = IdentTopic::new(media_topic());
    let status = IdentTopic::new(gossip::STATUS_TOPIC);
    let mut out = vec![];
    for i in 0..3u8 {
        out.push((media.clone(), vec![0xde, 0xad, i]));
    }
    for seq in 0..3 {
        let a = Announcement {
            id: segment::Id {
                stream: stream::Name::new("live").unwrap(),
                seq: 100 + seq,
            },
            duration_ms: 2000,
            size: 1000,
            hash: ContentId::of(b"not the segment"),
            container: Container::Ts,
            init: None,
            discontinuity: false,
            ingested_at: 0,
        };
        let mut signed = Signed::sign(key, &a).unwrap();
        // Claimed for another signer: the signature no longer matches.
        signed.tamper_payload(|p| *p.last_mut().unwrap() ^= 1);
        out.push((
            media.clone(),
            codec::encode(&Gossip::Segment(signed)).unwrap(),
        ));
    }
    let mut s = Status {
        version: 1,
        issued_at: 0,
        data_addr: "127.0.0.1:1".parse().unwrap(),
        cert_fingerprint: ContentId::of(b"cert"),
        http_addr: "127.0.0.1:2".parse().unwrap(),
        p2p_addrs: vec![],
        streams: vec![],
        ingesting: vec![],
        load: Load::default(),
        draining: false,
        warm: vec![],
    };
    let mut tampered = Signed::sign(key, &s).unwrap();
    tampered.tamper_payload(|p| p[0] ^= 1);
    out.push((
        status.clone(),
        codec::encode(&Gossip::Status(tampered)).unwrap(),
    ));
    // Validly signed, but out of bounds: a reversed stream range.
    s.streams.push(shoal_protocol::status::StreamHeld {
        name: stream::Name::new("live").unwrap(),
        first_seq: 9,
        last_seq: 1,
        ingest: false,
        ended: false,
        viewers: 0,
        bitrate_bps: 0,
    });
    out.push((
        status,
        codec::encode(&Gossip::Status(Signed::sign(key, &s).unwrap())).unwrap(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_forged_gossip_is_banned_and_the_mesh_keeps_serving() {
    init_logging();
    let nodes = mesh(vec![config("honest-a"), config("honest-b")])
        .await
        .unwrap();
    let (a, b) = (nodes[0].http_addr(), nodes[1].http_addr());
    let target: Multiaddr = nodes[0].p2p_addrs()[0].clone();
    let target_id = nodes[0].peer_id();
    wait_known(b, &[&target_id.to_string()]).await.unwrap();
    for seq in 0..3 {
        push_segment(a, "live", seq).await;
    }

    // The rogue joins through A and waits until A takes its messages on both topics.
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = rogue();
    let rogue_id = *swarm.local_peer_id();
    for t in [media_topic(), gossip::STATUS_TOPIC.to_string()] {
        swarm
            .behaviour_mut()
            .subscribe(&IdentTopic::new(t))
            .unwrap();
    }
    swarm.dial(target.clone()).unwrap();
    let mut subscribed = 0;
    let joined = drive(&mut swarm, Duration::from_secs(15), |_, e| {
        if let Some(SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. })) = e
            && *peer_id == target_id
        {
            subscribed += 1;
        }
        subscribed >= 2
    })
    .await;
    assert!(joined, "the rogue never saw A subscribe");

    // Its bad messages, one every 100 ms; A cuts it before it has sent them all.
    let messages = bad_messages(&key);
    let sent_at = Instant::now();
    let mut cut = false;
    for (topic, bytes) in messages.iter().cloned() {
        if !swarm.is_connected(&target_id) {
            cut = true;
            break;
        }
        swarm
            .behaviour_mut()
            .publish(topic, bytes)
            .expect("published");
        drive(&mut swarm, Duration::from_millis(100), |_, _| false).await;
    }
    cut |= drive(&mut swarm, Duration::from_secs(10), |s, _| {
        !s.is_connected(&target_id)
    })
    .await;
    assert!(cut, "A did not disconnect the rogue");
    println!(
        "rogue cut {:?} after its first bad message",
        sent_at.elapsed()
    );

    // Status and metrics name it.
    let s = status(a).await.unwrap();
    let struck = s["misbehaving_peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer_id"] == rogue_id.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("rogue not listed: {}", s["misbehaving_peers"]));
    assert!(struck["gossip_rejected"].as_u64().unwrap() >= 5, "{struck}");
    assert!(struck["banned_for_ms"].as_u64().unwrap() > 0, "{struck}");
    let metrics = http::get(a, "/metrics", &[]).await.unwrap().text();
    assert!(metrics.contains("shoal_peers_banned_total 1"), "{metrics}");
    // Nothing it sent reached B: rejected messages are not forwarded.
    let sb = status(b).await.unwrap();
    assert_eq!(
        sb["counters"]["gossip_rejected_total"], 0,
        "{}",
        sb["counters"]
    );

    // It cannot come back while banned: A refuses the connection (the rogue may see it
    // open for an instant before A closes it).
    swarm.dial(target).unwrap();
    drive(&mut swarm, Duration::from_secs(3), |_, _| false).await;
    assert!(
        !swarm.is_connected(&target_id),
        "a banned peer stayed connected"
    );

    // The honest mesh still serves: a new segment at A plays from B.
    push_segment(a, "live", 3).await;
    wait_for("segment 3 on B", Duration::from_secs(10), || async {
        let r = http::get(b, "/live/live/3.ts", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok((r.status == 200 && r.body.len() == SYNTHETIC_SEGMENT).then_some(()))
    })
    .await
    .unwrap();
}
