//! The built-in test clip (made by `scripts/make-test-clip.sh`, committed under
//! `sim/assets/clip/`): six 2 s MPEG-TS segments, embedded in the binary so the demo
//! needs nothing installed.

use shoal_node::hls::parse_media_playlist;

const PLAYLIST: &str = include_str!("../assets/clip/clip.m3u8");
const SEGMENTS: [&[u8]; 6] = [
    include_bytes!("../assets/clip/seg0.ts"),
    include_bytes!("../assets/clip/seg1.ts"),
    include_bytes!("../assets/clip/seg2.ts"),
    include_bytes!("../assets/clip/seg3.ts"),
    include_bytes!("../assets/clip/seg4.ts"),
    include_bytes!("../assets/clip/seg5.ts"),
];

/// One segment of the clip.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Its bytes.
    pub bytes: &'static [u8],
    /// Its duration in milliseconds.
    pub duration_ms: u32,
}

/// The clip's segments in order.
pub fn segments() -> Vec<Segment> {
    let playlist = parse_media_playlist(PLAYLIST.as_bytes()).expect("committed clip playlist");
    assert_eq!(
        playlist.entries.len(),
        SEGMENTS.len(),
        "clip playlist and files agree"
    );
    playlist
        .entries
        .iter()
        .zip(SEGMENTS)
        .map(|(e, bytes)| Segment {
            bytes,
            duration_ms: e.duration_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_is_mpeg_ts_with_durations() {
        let segs = super::segments();
        assert_eq!(segs.len(), 6);
        for s in segs {
            assert_eq!(s.bytes[0], 0x47, "TS sync byte");
            assert_eq!(s.bytes.len() % 188, 0);
            assert!((1500..=2500).contains(&s.duration_ms));
        }
    }
}
