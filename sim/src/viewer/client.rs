//! A simulated HLS viewer over real HTTP: it follows redirects, starts three segments
//! behind the live edge (as hls.js does), downloads segments in order, reloads the
//! playlist, and feeds a [`Playout`] that records startup and stalls.

use super::playout::{Figures, Playout};
use crate::http::{get_from, parse_url};
use shoal_node::hls::parse_media_playlist;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Redirects followed in a row before giving up (Shoal's never chain; 3 is generous).
const MAX_REDIRECTS: u32 = 3;
/// Segments behind the live edge a player starts at.
const LIVE_OFFSET: u64 = 3;

/// What one viewer saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Playout figures.
    pub figures: Figures,
    /// Redirects followed.
    pub redirects: u32,
    /// Failed requests.
    pub errors: u32,
    /// Playlist requests refused with 503 (no room anywhere).
    pub refused: u32,
    /// Times it gave up on its node and asked its front end again.
    pub rejoins: u32,
    /// The node that served it.
    pub node: Option<SocketAddr>,
}

/// A distinct loopback source address for viewer `n` (127.1.0.0/16 onwards), so nodes
/// count viewers apart as they would real ones.
pub fn viewer_ip(n: usize) -> IpAddr {
    let n = n as u32;
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8,
    ))
}

/// Failed playlist requests in a row after which a player gives up on its node and
/// asks its front end again (a page reload).
const REJOIN_AFTER: u32 = 3;

/// Watches a live playlist for `duration`, from source address `from`. `url_for(n)` is
/// the playlist URL to (re)join at: 0 first, then once per rejoin after [`REJOIN_AFTER`]
/// failures in a row.
pub async fn watch(
    url_for: impl Fn(usize) -> String,
    duration: Duration,
    from: Option<IpAddr>,
) -> Outcome {
    let get = |addr, path: String| async move { get_from(from, addr, &path).await };
    let joined = Instant::now();
    let mut playout = Playout::new(joined);
    let mut outcome = Outcome {
        figures: playout.figures(joined),
        redirects: 0,
        errors: 0,
        refused: 0,
        rejoins: 0,
        node: None,
    };
    let Ok((mut addr, mut path)) = parse_url(&url_for(0)) else {
        outcome.errors += 1;
        return outcome;
    };
    let mut next: Option<u64> = None;
    let (mut chain, mut failed) = (0, 0);
    while joined.elapsed() < duration {
        if failed >= REJOIN_AFTER {
            outcome.rejoins += 1;
            failed = 0;
            if let Ok((a, p)) = parse_url(&url_for(outcome.rejoins as usize)) {
                (addr, path) = (a, p);
            }
        }
        let response = match get(addr, path.clone()).await {
            Ok(r) => r,
            Err(_) => {
                outcome.errors += 1;
                failed += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let redirect = matches!(response.status, 301 | 302 | 307) && chain < MAX_REDIRECTS;
        if redirect && let Some(Ok((a, p))) = response.header("location").map(parse_url) {
            (addr, path) = (a, p);
            outcome.redirects += 1;
            chain += 1;
            continue;
        }
        chain = 0;
        if response.status == 503 {
            // No room anywhere: wait as told, as a player's retry would.
            outcome.refused += 1;
            let wait = response
                .header("retry-after")
                .and_then(|s| s.parse().ok())
                .unwrap_or(2);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        if response.status != 200 {
            outcome.errors += 1;
            failed += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        failed = 0;
        outcome.node = Some(addr);
        let text = String::from_utf8_lossy(&response.body).into_owned();
        let Ok(playlist) = parse_media_playlist(text.as_bytes()) else {
            outcome.errors += 1;
            continue;
        };
        let first = playlist.media_sequence;
        let last = first + playlist.entries.len() as u64;
        next.get_or_insert(last.saturating_sub(LIVE_OFFSET).max(first));
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let mut fetched = false;
        for (i, entry) in playlist.entries.iter().enumerate() {
            let seq = first + i as u64;
            if Some(seq) < next || joined.elapsed() >= duration {
                continue;
            }
            match get(addr, format!("{dir}{}", entry.uri)).await {
                Ok(r) if r.status == 200 => {
                    playout.segment(
                        Duration::from_millis(entry.duration_ms as u64),
                        Instant::now(),
                    );
                    next = Some(seq + 1);
                    fetched = true;
                }
                _ => {
                    outcome.errors += 1;
                    break;
                }
            }
        }
        playout.tick(Instant::now());
        // Reload about once per segment while the stream advances, sooner if it did not.
        let target = playlist
            .entries
            .last()
            .map_or(2000, |e| e.duration_ms as u64);
        let pause = if fetched { target / 2 } else { target / 4 };
        tokio::time::sleep(Duration::from_millis(pause.max(100))).await;
    }
    outcome.figures = playout.figures(Instant::now());
    outcome
}
