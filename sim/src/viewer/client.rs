//! A simulated HLS viewer over real HTTP: it follows redirects, starts three segments
//! behind the live edge (as hls.js does), downloads segments in order, reloads the
//! playlist, and feeds a [`Playout`] that records startup and stalls.

use super::playout::{Figures, Playout};
use crate::http::{get, parse_url};
use shoal_node::hls::parse_media_playlist;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Redirects followed before giving up (Shoal's redirects never chain; 3 is generous).
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
    /// The node that served it.
    pub node: Option<SocketAddr>,
}

/// Watches the live playlist at `url` for `duration`.
pub async fn watch(url: &str, duration: Duration) -> Outcome {
    let joined = Instant::now();
    let mut playout = Playout::new(joined);
    let mut outcome = Outcome {
        figures: playout.figures(joined),
        redirects: 0,
        errors: 0,
        node: None,
    };
    let Ok((mut addr, mut path)) = parse_url(url) else {
        outcome.errors += 1;
        return outcome;
    };
    let mut next: Option<u64> = None;
    while joined.elapsed() < duration {
        let response = match get(addr, &path).await {
            Ok(r) => r,
            Err(_) => {
                outcome.errors += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let redirect =
            matches!(response.status, 301 | 302 | 307) && outcome.redirects < MAX_REDIRECTS;
        if redirect && let Some(Ok((a, p))) = response.header("location").map(parse_url) {
            (addr, path) = (a, p);
            outcome.redirects += 1;
            continue;
        }
        if response.status != 200 {
            outcome.errors += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
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
            match get(addr, &format!("{dir}{}", entry.file)).await {
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
