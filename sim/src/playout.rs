//! Plays the built-in clip out as an endless live stream into a node, through the node's
//! real HTTP ingest, the way an encoder does: each segment PUT when "encoded" (in real
//! time), then the sliding playlist. Each pass over the clip has its timestamps shifted
//! past the previous one ([`ts::retime`]), so the stream is continuous: no discontinuity,
//! nothing for a player to trip over.

use crate::http::put;
use crate::{clip, ts};
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Segments listed in the playout's playlist.
const LIST_SIZE: usize = 5;

/// Pushes the clip into `addr` as stream `stream`, forever (or until the task is dropped).
pub async fn run(addr: SocketAddr, stream: String, key: String) -> anyhow::Result<()> {
    let segments = clip::segments();
    // One pass spans from the earliest timestamp to the latest plus a frame (40 ms at
    // 25 fps), so the next pass starts after everything of this one, audio included.
    let (lo, hi) = segments
        .iter()
        .filter_map(|s| ts::timestamp_span(s.bytes))
        .reduce(|(a, b), (c, d)| (a.min(c), b.max(d)))
        .context("the clip has no timestamps")?;
    let pass = hi - lo + 3600;
    let mut counters = HashMap::new();
    let mut listed: Vec<(String, u32)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(segments[0].duration_ms as u64));
    for n in 0u64.. {
        tick.tick().await;
        let round = n / segments.len() as u64;
        let index = (n % segments.len() as u64) as usize;
        let segment = segments[index];
        let file = format!("r{round}s{index}.ts");
        let mut bytes = segment.bytes.to_vec();
        ts::retime(&mut bytes, round * pass, &mut counters);
        put(addr, &format!("/ingest/{stream}/{file}"), &key, &bytes)
            .await
            .with_context(|| format!("pushing {file}"))?;
        listed.push((file, segment.duration_ms));
        if listed.len() > LIST_SIZE {
            listed.remove(0);
        }
        let mut playlist = format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            n + 1 - listed.len() as u64
        );
        for (file, ms) in &listed {
            playlist.push_str(&format!(
                "#EXTINF:{}.{:03},\n{file}\n",
                ms / 1000,
                ms % 1000
            ));
        }
        put(
            addr,
            &format!("/ingest/{stream}/index.m3u8"),
            &key,
            playlist.as_bytes(),
        )
        .await
        .context("pushing the playlist")?;
    }
    Ok(())
}
