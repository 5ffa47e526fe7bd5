//! Stream-scoped announcements on real nodes: a stream's announcements reach only the
//! nodes that carry it (its media shard's gossipsub topic), and a node that starts
//! carrying it for a viewer catches up from a holder and then takes them by gossip.

use shoal_tests::http;
use shoal_tests::*;
use std::time::Duration;

/// A node that carries only the streams it needs, however small the mesh.
fn scoped(tag: &str) -> shoal_node::NodeConfig {
    let mut c = config(tag);
    c.core.carry_all_below = 0;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn announcements_reach_only_the_nodes_that_carry_the_stream() {
    init_logging();
    let nodes = mesh(vec![
        scoped("carry-a"),
        scoped("carry-b"),
        scoped("carry-c"),
    ])
    .await
    .unwrap();
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id().to_string()).collect();
    let (a, b, c) = (
        nodes[0].http_addr(),
        nodes[1].http_addr(),
        nodes[2].http_addr(),
    );
    wait_known(b, &[&ids[0], &ids[2]]).await.unwrap();
    wait_known(c, &[&ids[0], &ids[1]]).await.unwrap();
    for seq in 0..3 {
        push_segment(a, "live", seq).await;
    }
    // A carries what its encoder pushes: subscribed to that shard alone.
    let a_status = status(a).await.unwrap();
    assert_eq!(a_status["media_shards"].as_array().map(Vec::len), Some(1));

    // A viewer asks C: C learns the stream from A's status, catches up from its
    // manifest, and carries it from now on.
    let playlist = wait_for("C's playlist", Duration::from_secs(10), || async {
        let r = http::get(c, "/live/live/index.m3u8", &[])
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((r.status == 200).then(|| r.text()))
    })
    .await
    .unwrap();
    assert!(playlist.contains("2.ts"), "{playlist}");
    let c_status = status(c).await.unwrap();
    assert_eq!(stream_status(&c_status, "live").unwrap()["carried"], true);

    // New segments reach C by gossip on the stream's shard, with no further request.
    for seq in 3..6 {
        push_segment(a, "live", seq).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(
        "C to hear of segment 5",
        Duration::from_secs(10),
        || async {
            let s = status(c).await.map_err(|e| e.to_string())?;
            let last = stream_status(&s, "live").map(|l| l["last_seq"].clone());
            Ok::<_, String>((last == Some(serde_json::json!(5))).then_some(()))
        },
    )
    .await
    .unwrap();

    // B has no viewer and no encoder for it: it never took one of its announcements.
    let b_status = status(b).await.unwrap();
    assert!(stream_status(&b_status, "live").is_none(), "{b_status}");
    assert_eq!(b_status["media_shards"].as_array().map(Vec::len), Some(0));
}
