//! Fuzz targets: every parser of network input, fed arbitrary bytes, with the
//! properties each must keep (no panic, bounded output, nothing forged accepted, nothing
//! written into a playlist or URL that could break it).
//!
//! Two drivers run them: `cargo fuzz` (libFuzzer, coverage-guided, nightly; the crate in
//! `tests/fuzz/`) and a seeded mutator on stable (`tests/fuzz.rs`, part of the test
//! suite). `scripts/fuzz.sh` runs either for a given number of executions per target.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use bytes::Bytes;
use shoal_core::{Config as CoreConfig, Core};
use shoal_node::http::{ingest, live, query::Query, range, session, viewer_token};
use shoal_node::media::segmenter::{Frame, Limits, Segmenter};
use shoal_node::media::{aac, avc, flv};
use shoal_node::members::{Closed, Members, issue_credential, issue_revocations};
use shoal_node::tokens::{SigningKey, Verifier};
use shoal_node::{control, data, hls};
use shoal_protocol::content::ContentId;
use shoal_protocol::identity::Keypair;
use shoal_protocol::membership::{Credential, Hello, MAX_HELLO, MeshCa, Revocations, from_text};
use shoal_protocol::segment::{self, Announcement, Container, StreamEnd};
use shoal_protocol::signed::Signed;
use shoal_protocol::status::{Load, Status, StreamHeld};
use shoal_protocol::{PeerId, codec, data as wire, gossip, stream};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A fuzz target: a name (its corpus directory under `tests/fuzz/corpus/`) and the
/// function that checks one input.
pub struct Target {
    /// Name.
    pub name: &'static str,
    /// Checks one input; panics on a violated property.
    pub run: fn(&[u8]),
    /// Seeds made in code (valid messages the mutator starts from).
    pub seeds: fn() -> Vec<Vec<u8>>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gossip",
        run: gossip,
        seeds: gossip_seeds,
    },
    Target {
        name: "data_request",
        run: data_request,
        seeds: data_request_seeds,
    },
    Target {
        name: "data_response",
        run: data_response,
        seeds: data_response_seeds,
    },
    Target {
        name: "playlist",
        run: playlist,
        seeds: playlist_seeds,
    },
    Target {
        name: "viewer_url",
        run: viewer_url,
        seeds: viewer_url_seeds,
    },
    Target {
        name: "ingest_path",
        run: ingest_path,
        seeds: ingest_path_seeds,
    },
    Target {
        name: "range",
        run: range_header,
        seeds: range_seeds,
    },
    Target {
        name: "token",
        run: token,
        seeds: token_seeds,
    },
    Target {
        name: "core",
        run: core_events,
        seeds: core_seeds,
    },
    Target {
        name: "hello",
        run: hello,
        seeds: hello_seeds,
    },
    Target {
        name: "flv",
        run: flv_media,
        seeds: flv_seeds,
    },
    Target {
        name: "rtmp",
        run: rtmp,
        seeds: rtmp_seeds,
    },
    Target {
        name: "ts_demux",
        run: ts_demux,
        seeds: ts_demux_seeds,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// The peer whose signed messages the seeds carry.
fn signer() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::ed25519_from_bytes([7u8; 32]).expect("valid key"))
}

fn name(s: &str) -> stream::Name {
    stream::Name::new(s).expect("valid name")
}

fn sample_announcement(seq: u64) -> Announcement {
    Announcement {
        id: segment::Id {
            stream: name("live"),
            seq,
        },
        duration_ms: 2000,
        size: 1000,
        hash: ContentId::of(&seq.to_le_bytes()),
        container: Container::Ts,
        init: None,
        discontinuity: false,
        ingested_at: 0,
    }
}

fn sample_status() -> Status {
    Status {
        version: 1,
        issued_at: 0,
        data_addr: "127.0.0.1:1".parse().expect("valid"),
        cert_fingerprint: ContentId::of(b"cert"),
        http_addr: "127.0.0.1:2".parse().expect("valid"),
        p2p_addrs: vec![],
        streams: vec![StreamHeld {
            name: name("live"),
            first_seq: 0,
            last_seq: 3,
            ingest: true,
            ended: false,
            viewers: 2,
            bitrate_bps: 1_000_000,
        }],
        ingesting: vec![],
        load: Load::default(),
        draining: false,
        warm: vec![],
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("encodable")
}

/// The mesh CA of the `hello` target, the member whose credential its seeds carry, and
/// the time it checks at.
fn mesh_ca() -> &'static (SigningKey, MeshCa, PeerId) {
    static CA: OnceLock<(SigningKey, MeshCa, PeerId)> = OnceLock::new();
    CA.get_or_init(|| {
        let key = SigningKey::generate();
        let ca = MeshCa::parse(&key.viewer_key_arg()).expect("valid key arg");
        (key, ca, signer().public().to_peer_id())
    })
}
const HELLO_NOW: u64 = 1_000_000;

/// A peer's hello on a control-plane connection of a closed mesh: decoded within its
/// limit; the peer is admitted only with a credential the mesh CA signed for its own
/// peer id, unexpired, and only the CA's revocation lists are taken.
pub fn hello(data: &[u8]) {
    static OWN: OnceLock<Closed> = OnceLock::new();
    let Ok(hello) = codec::decode_limited::<Hello>(data, MAX_HELLO) else {
        return;
    };
    let (key, ca, peer) = mesh_ca();
    let own = OWN.get_or_init(|| {
        let me = PeerId::random();
        let text = issue_credential(key, me, Duration::from_secs(3600), HELLO_NOW).expect("issued");
        Closed::new(*ca, from_text(&text).expect("text"), &me, HELLO_NOW).expect("own credential")
    });
    let mut members = Members::closed(own.clone());
    if let Some(list) = &hello.revocations
        && members.take_revocations(list).is_ok()
    {
        let v = list.verify().expect("taken, so verified");
        assert_eq!(
            v.signer,
            ca_peer(key),
            "a revocation list not signed by the CA was taken"
        );
    }
    if members.on_hello(*peer, &hello, HELLO_NOW).is_ok() {
        let c = hello
            .credential
            .as_ref()
            .expect("admitted")
            .verify()
            .expect("verified");
        assert_eq!(
            c.signer,
            ca_peer(key),
            "admitted on a credential not signed by the CA"
        );
        assert_eq!(c.value.peer, *peer, "admitted on another peer's credential");
        assert!(
            c.value.expires > HELLO_NOW,
            "admitted on an expired credential"
        );
        assert!(!members.is_revoked(peer), "admitted though revoked");
    }
}

fn ca_peer(key: &SigningKey) -> PeerId {
    key.keypair().public().to_peer_id()
}

fn hello_seeds() -> Vec<Vec<u8>> {
    let (key, _, peer) = mesh_ca();
    let credential: Signed<Credential> = from_text(
        &issue_credential(key, *peer, Duration::from_secs(60), HELLO_NOW).expect("issued"),
    )
    .expect("text");
    let list: Signed<Revocations> =
        from_text(&issue_revocations(key, vec![PeerId::random()], HELLO_NOW).expect("issued"))
            .expect("text");
    vec![
        encode(&Hello::default()),
        encode(&Hello {
            credential: Some(credential.clone()),
            revocations: None,
        }),
        encode(&Hello {
            credential: Some(credential),
            revocations: Some(list),
        }),
    ]
}

/// A gossip message: decoded within its size limit and verified, as the control plane
/// does; a verified status must then pass or fail its bounds check without panicking.
pub fn gossip(data: &[u8]) {
    let live = shoal_protocol::stream::Name::new("live").expect("valid");
    let media = gossip::MediaShard::of(&live).topic();
    for topic in [gossip::STATUS_TOPIC, media.as_str()] {
        if let Ok(control::Event::Status(s)) = control::verify(topic, data) {
            let _ = s.value.check_bounds();
        }
    }
}

fn gossip_seeds() -> Vec<Vec<u8>> {
    let k = signer();
    vec![
        encode(&gossip::Gossip::Status(
            Signed::sign(k, &sample_status()).expect("signs"),
        )),
        encode(&gossip::Gossip::Segment(
            Signed::sign(k, &sample_announcement(5)).expect("signs"),
        )),
        encode(&gossip::Gossip::End(
            Signed::sign(
                k,
                &StreamEnd {
                    stream: name("live"),
                    last_seq: 9,
                },
            )
            .expect("signs"),
        )),
    ]
}

/// A data-plane request frame; whatever parses re-encodes to a frame that parses to the
/// same request.
pub fn data_request(data: &[u8]) {
    if let Ok(request) = data::server::parse_request(data) {
        let again = wire::frame(&encode(&request));
        assert_eq!(
            data::server::parse_request(&again).as_ref(),
            Ok(&request),
            "a request does not survive re-encoding"
        );
    }
}

fn data_request_seeds() -> Vec<Vec<u8>> {
    [
        wire::Request::Segment {
            stream: name("live"),
            seq: 12,
        },
        wire::Request::Init {
            stream: name("live"),
            hash: ContentId::of(b"init"),
        },
        wire::Request::Manifest {
            stream: name("live"),
        },
    ]
    .iter()
    .map(|r| wire::frame(&encode(r)))
    .collect()
}

/// A data-plane response header, as a pulling node decodes it; the announcements of a
/// manifest are verified and the peers a busy answer names parsed.
pub fn data_response(data: &[u8]) {
    let Ok(response) = codec::decode_limited::<wire::Response>(data, wire::MAX_RESPONSE_HEADER)
    else {
        return;
    };
    match response {
        wire::Response::Manifest { announcements, end } => {
            for a in announcements {
                let _ = a.verify();
            }
            if let Some(e) = end {
                let _ = e.verify();
            }
        }
        wire::Response::Busy { fed, .. } => {
            for p in fed {
                let _ = PeerId::from_bytes(&p);
            }
        }
        _ => {}
    }
}

fn data_response_seeds() -> Vec<Vec<u8>> {
    let k = signer();
    vec![
        encode(&wire::Response::Bytes { size: 1000 }),
        encode(&wire::Response::NotFound),
        encode(&wire::Response::Manifest {
            announcements: (0..3)
                .map(|s| Signed::sign(k, &sample_announcement(s)).expect("signs"))
                .collect(),
            end: None,
        }),
        encode(&wire::Response::Busy {
            fed: vec![PeerId::from(k.public()).to_bytes()],
        }),
    ]
}

/// An encoder's media playlist. What parses names only plain files, has sane durations,
/// and its sequence numbers fit.
pub fn playlist(data: &[u8]) {
    let Ok(p) = hls::parse_media_playlist(data) else {
        return;
    };
    for e in &p.entries {
        assert!(hls::valid_file_name(&e.file), "entry file {:?}", e.file);
        assert!(
            e.duration_ms > 0 && f64::from(e.duration_ms) <= hls::MAX_SEGMENT_SECS * 1000.0,
            "duration {}",
            e.duration_ms
        );
        if let Some(init) = &e.init {
            assert!(hls::valid_file_name(init), "init file {init:?}");
        }
    }
    if let Some((first, last)) = p.seq_range() {
        assert!(first <= last);
    }
}

fn playlist_seeds() -> Vec<Vec<u8>> {
    vec![
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
          #EXTINF:2.000000,\nlive7.ts\n#EXTINF:2.0,\nlive8.ts\n#EXT-X-ENDLIST\n"
            .to_vec(),
        b"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"init.mp4\"\n\
          #EXT-X-DISCONTINUITY\n#EXTINF:1.5,title\nhttp://x/a/0.m4s?x=1\n"
            .to_vec(),
    ]
}

/// A viewer's URL after hyper has parsed it: the file name and the query. What a node
/// writes back (session id, token, carried parameters) has no character that could end
/// a playlist line or a URL.
pub fn viewer_url(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/live/s/{text}").parse::<Uri>() else {
        return;
    };
    let file = uri.path().rsplit('/').next().unwrap_or("");
    let _ = live::wanted(file);
    let Ok(q) = Query::parse(uri.query()) else {
        return;
    };
    if let Some(sid) = &q.sid {
        assert!(session::valid(sid), "an invalid session id kept: {sid:?}");
    }
    for written in [q.media_params(), q.carried()] {
        assert!(
            !written
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || b == b'"'),
            "unsafe character written back: {written:?}"
        );
    }
}

fn viewer_url_seeds() -> Vec<Vec<u8>> {
    [
        "index.m3u8",
        "index.m3u8?sid=abcdefghijklmnopqrst&token=eyJ.eyJ.sig",
        "12.ts?redirected=1&sid=abcdefghijklmnopqrst",
        "init-0011223344556677889900112233445566778899001122334455667788990011.mp4",
        "18446744073709551615.m4s",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

/// `PUT /ingest/{stream}/{file}`: the names a node accepts are valid stream and file
/// names.
pub fn ingest_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (stream, file) = text.split_once('/').unwrap_or((text, ""));
    if let Ok(n) = ingest::validate(stream, file) {
        assert!(stream::Name::new(n.as_str()).is_ok());
        assert!(hls::valid_file_name(file));
    }
}

fn ingest_path_seeds() -> Vec<Vec<u8>> {
    vec![b"live/index.m3u8".to_vec(), b"cam-1/seg_00012.ts".to_vec()]
}

/// A `Range` header against a length from the first bytes: a satisfiable range lies
/// within the content.
pub fn range_header(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let Ok(text) = std::str::from_utf8(&data[8..]) else {
        return;
    };
    match range::parse(Some(text), len) {
        range::Range::Part(s, e) => assert!(s <= e && e < len, "{s}-{e} of {len}"),
        range::Range::Full | range::Range::Unsatisfiable => {}
    }
}

fn range_seeds() -> Vec<Vec<u8>> {
    ["bytes=0-99", "bytes=-500", "bytes=100-", "bytes=5-1,7-9"]
        .iter()
        .map(|r| {
            let mut v = 1000u64.to_le_bytes().to_vec();
            v.extend_from_slice(r.as_bytes());
            v
        })
        .collect()
}

/// The key the token target's verifier trusts (a fixed one: seeds signed with it are
/// valid, so mutants start deep in the format).
fn token_key() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::from_pem(TOKEN_KEY_PEM).expect("valid key"))
}

fn valid_tokens() -> &'static Vec<String> {
    static T: OnceLock<Vec<String>> = OnceLock::new();
    T.get_or_init(|| {
        let k = token_key();
        // Expiring in 2100, so the seeds stay valid.
        let now = 4_102_444_800 - 3600;
        vec![
            k.token("live", Duration::from_secs(3600), None, now)
                .expect("signs"),
            k.token(
                "live",
                Duration::from_secs(3600),
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                now,
            )
            .expect("signs"),
        ]
    })
}

/// A viewer token from a query, a header or a cookie: only tokens signed by the trusted
/// key are accepted, and extracting one from headers never panics.
pub fn token(data: &[u8]) {
    static V: OnceLock<Verifier> = OnceLock::new();
    let verifier = V.get_or_init(|| {
        Verifier::new(&[token_key().viewer_key_arg().parse().expect("valid key arg")])
    });
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(data) {
        headers.insert(HeaderName::from_static("cookie"), v.clone());
        headers.insert(HeaderName::from_static("authorization"), v);
    }
    let from_headers = viewer_token::carried(None, &headers);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [Some(text), from_headers.as_deref()] {
        if verifier
            .check(candidate, "live", IpAddr::V4(Ipv4Addr::LOCALHOST))
            .is_ok()
        {
            let t = candidate.expect("checked");
            assert!(
                valid_tokens().iter().any(|v| v == t),
                "a token not signed by the key was accepted: {t:?}"
            );
        }
    }
}

fn token_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = valid_tokens()
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect();
    seeds.push(format!("Bearer {}", valid_tokens()[0]).into_bytes());
    seeds.push(format!("a=b; shoal_token={}", valid_tokens()[1]).into_bytes());
    seeds
}

/// The sans-io core driven by a hostile peer: statuses, announcements and ends that the
/// peer signed itself (so they verify) with arbitrary contents, interleaved with viewers
/// and time. The core must neither panic nor let its tables grow without bound.
pub fn core_events(data: &[u8]) {
    let k = signer();
    let peer = PeerId::from(k.public());
    let me = PeerId::from(
        Keypair::ed25519_from_bytes([9u8; 32])
            .expect("key")
            .public(),
    );
    let mut core = Core::new(me, CoreConfig::default());
    let mut now = Instant::now();
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        rest = next;
        match kind % 7 {
            0 => {
                if let Ok(s) = codec::decode_limited::<Status>(chunk, gossip::MAX_GOSSIP)
                    && s.check_bounds().is_ok()
                {
                    core.handle_status(peer, s, now);
                }
            }
            1 => {
                if let Ok(a) = codec::decode_limited::<Announcement>(chunk, gossip::MAX_GOSSIP)
                    && let Ok(v) = Signed::sign(k, &a).and_then(|s| s.verify())
                {
                    let _ = core.handle_announcement(v, now);
                }
            }
            2 => {
                if let Ok(e) = codec::decode_limited::<StreamEnd>(chunk, gossip::MAX_GOSSIP)
                    && let Ok(v) = Signed::sign(k, &e).and_then(|s| s.verify())
                {
                    core.handle_end(v);
                }
            }
            3 => {
                let ms = chunk.first().copied().unwrap_or(0);
                now += Duration::from_millis(u64::from(ms) * 40);
                core.handle_tick(now);
            }
            4 => {
                let ip = chunk.first().copied().unwrap_or(1);
                let viewer = session::viewer(IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)), None, true);
                let _ = core.admit_viewer(&name("live"), viewer, false, now);
                core.handle_media(&name("live"), viewer, now);
            }
            5 => {
                // An announcement laid out raw, so numbers reach their extremes:
                // [stream][seq: 8 bytes LE][size: 4 bytes LE].
                if let [stream, seq @ .., s0, s1, s2, s3] = chunk
                    && let Ok(seq) = <[u8; 8]>::try_from(seq)
                {
                    let mut a = sample_announcement(u64::from_le_bytes(seq));
                    a.id.stream = name(["live", "b", "c"][usize::from(*stream) % 3]);
                    a.size = u64::from(u32::from_le_bytes([*s0, *s1, *s2, *s3]));
                    if let Ok(v) = Signed::sign(k, &a).and_then(|s| s.verify()) {
                        let _ = core.handle_announcement(v, now);
                    }
                }
            }
            _ => {
                let _ = core.route(&name("live"), now);
                core.handle_busy(peer, now);
                let _ = core.held_streams();
            }
        }
        while core.poll_action().is_some() {}
    }
    assert!(core.streams().count() <= 4096, "streams grew without bound");
}

fn core_seeds() -> Vec<Vec<u8>> {
    let chunk = |kind: u8, bytes: Vec<u8>| {
        let mut v = vec![kind, bytes.len().min(255) as u8];
        v.extend_from_slice(&bytes[..bytes.len().min(255)]);
        v
    };
    let mut seed = vec![];
    seed.extend(chunk(0, encode(&sample_status())));
    for s in 0..4 {
        seed.extend(chunk(1, encode(&sample_announcement(s))));
        seed.extend(chunk(4, vec![s as u8]));
        seed.extend(chunk(3, vec![50]));
    }
    let mut raw = vec![0u8];
    raw.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
    raw.extend_from_slice(&1000u32.to_le_bytes());
    seed.extend(chunk(5, raw));
    seed.extend(chunk(6, vec![]));
    seed.extend(chunk(
        2,
        encode(&StreamEnd {
            stream: name("live"),
            last_seq: 3,
        }),
    ));
    vec![seed]
}

/// An x264 SPS (1280x720, High) and PPS: the AVC config the `flv` target converts
/// access units with when the input carries none.
const FLV_SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
    0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
];
const FLV_PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

/// An AVCDecoderConfigurationRecord of [`FLV_SPS`] and [`FLV_PPS`].
fn flv_record() -> Vec<u8> {
    let mut r = vec![1, FLV_SPS[1], FLV_SPS[2], FLV_SPS[3], 0xFF, 0xE1];
    r.extend_from_slice(&(FLV_SPS.len() as u16).to_be_bytes());
    r.extend_from_slice(FLV_SPS);
    r.push(1);
    r.extend_from_slice(&(FLV_PPS.len() as u16).to_be_bytes());
    r.extend_from_slice(FLV_PPS);
    r
}

fn flv_config() -> &'static avc::AvcConfig {
    static C: OnceLock<avc::AvcConfig> = OnceLock::new();
    C.get_or_init(|| avc::parse_config(&flv_record()).expect("valid record"))
}

/// Converts an access unit to Annex B: on success the output is bounded by the input
/// (twice it, plus the parameter sets and a delimiter); on error nothing is written.
fn check_annex_b(au: &[u8], config: &avc::AvcConfig, keyframe: bool) {
    let mut out = vec![];
    if avc::to_annex_b(au, config, keyframe, &mut out).is_ok() {
        let sets: usize = config
            .sps
            .iter()
            .chain(&config.pps)
            .map(|s| s.len() + 4)
            .sum();
        assert!(
            out.len() <= au.len() * 2 + sets + 64,
            "{} bytes of Annex B from {} bytes of AVCC",
            out.len(),
            au.len()
        );
    } else {
        assert!(out.is_empty(), "written on error");
    }
}

/// An RTMP encoder's audio and video tag bodies, the codec configs in them (and the
/// input read as a config directly), the access units converted to Annex B: no panic,
/// bounded output. Then the input laid out as frames for the segmenter
/// (`[kind][timestamp: 4 bytes BE][len][body]`): no panic, segments whole transport
/// packets within the size limit.
pub fn flv_media(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    if let Ok(flv::AudioTag::AacConfig(asc)) = flv::parse_audio(&body)
        && let Ok(c) = aac::parse_config(&asc)
    {
        let _ = (c.codec(), c.adts_header(data.len()));
    }
    if let Ok(c) = aac::parse_config(data) {
        let _ = (c.codec(), c.adts_header(data.len()));
    }
    match flv::parse_video(&body) {
        Ok(flv::VideoTag::AvcConfig(record)) => {
            if let Ok(c) = avc::parse_config(&record) {
                let _ = c.codec();
                check_annex_b(&record, &c, true);
            }
        }
        Ok(flv::VideoTag::AvcFrame {
            keyframe, data: au, ..
        }) => check_annex_b(&au, flv_config(), keyframe),
        _ => {}
    }
    if let Ok(c) = avc::parse_config(data) {
        let _ = c.codec();
        check_annex_b(data, &c, true);
    }
    for size in [1, 2, 4] {
        let mut c = flv_config().clone();
        c.nal_length_size = size;
        check_annex_b(data, &c, true);
    }

    const MAX_BYTES: u64 = 64 * 1024;
    let mut s = Segmenter::new(Limits {
        target: Duration::from_secs(1),
        max_bytes: MAX_BYTES,
        max_duration: Duration::from_secs(4),
        format: shoal_node::media::segmenter::SegmentFormat::Ts,
    });
    s.set_video_config(flv_config().clone());
    s.set_audio_config(aac::parse_config(&[0x12, 0x10]).expect("valid config"));
    let check = |segment: Option<shoal_node::media::segmenter::Segment>| {
        if let Some(seg) = segment {
            assert!(seg.duration_ms > 0, "empty segment");
            assert!(
                seg.bytes.len() as u64 <= MAX_BYTES,
                "segment over the limit"
            );
            assert!(
                seg.bytes.len() % 188 == 0 && seg.bytes.chunks(188).all(|p| p[0] == 0x47),
                "not whole transport packets"
            );
        }
    };
    let mut rest = data;
    while let [kind, t0, t1, t2, t3, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let ts = u64::from(u32::from_be_bytes([*t0, *t1, *t2, *t3]));
        // High bit: timestamps near the end of the 64-bit range.
        let ts = if kind & 0x80 != 0 { u64::MAX - ts } else { ts };
        if kind & 0x40 != 0 {
            s.discontinuity();
        }
        let frame = if kind & 1 == 0 {
            Frame::Video {
                dts_ms: ts,
                pts_ms: ts.saturating_add(u64::from(kind >> 2 & 0x0F) * 33),
                keyframe: kind & 2 != 0,
                avcc: Bytes::copy_from_slice(body),
            }
        } else {
            Frame::Audio {
                pts_ms: ts,
                raw: Bytes::copy_from_slice(body),
            }
        };
        if let Ok(segment) = s.push(frame) {
            check(segment);
        }
        assert!(
            s.buffered() as u64 <= MAX_BYTES,
            "open segment over the limit"
        );
    }
    check(s.finish());
}

fn flv_seeds() -> Vec<Vec<u8>> {
    let record = flv_record();
    let nal = |bytes: &[u8]| {
        let mut v = (bytes.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(bytes);
        v
    };
    let tag = |head: &[u8], parts: &[Vec<u8>]| {
        let mut v = head.to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    };
    let idr = nal(&[0x65, 0x88, 0x84, 0x00, 0x33, 0xff]);
    let sei = nal(&[0x06, 0x05, 0x02, 0xdc, 0x45, 0x80]);
    let slice = nal(&[0x41, 0x9a, 0x21, 0x6c, 0x42]);
    // Frames for the segmenter: [kind][timestamp][len][body].
    let mut frames = vec![];
    for (kind, ts, body) in [
        (2u8, 0u32, idr.clone()),
        (1, 0, vec![0x21, 0x1b, 0x94]),
        (0, 33, slice.clone()),
        (6, 1000, idr.clone()),
        (0x41, 5, vec![0x21]),
    ] {
        frames.push(kind);
        frames.extend_from_slice(&ts.to_be_bytes());
        frames.push(body.len() as u8);
        frames.extend_from_slice(&body);
    }
    vec![
        tag(&[0x17, 0, 0, 0, 0], std::slice::from_ref(&record)),
        tag(&[0x17, 1, 0, 0, 0x43], &[sei, idr]),
        tag(&[0x27, 1, 0xff, 0xff, 0xdf], &[slice]),
        vec![0x17, 2, 0, 0, 0],
        vec![0xaf, 0, 0x12, 0x10],
        vec![0xaf, 1, 0x21, 0x1b, 0x94, 0x05],
        record,
        vec![0x12, 0x10],
        vec![0x90, b'h', b'v', b'c', b'1', 0, 0, 0],
        vec![0x2f, 0xff, 0xfb],
        frames,
    ]
}

/// A fixed Ed25519 key for the token target (PKCS#8 PEM, made by `shoal keygen`); it
/// signs nothing outside the fuzz targets.
const TOKEN_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGtzEXjAgmfl0vM02iANUzH1nx6fXzNFsV9UzLQgj4Tt\n-----END PRIVATE KEY-----\n";

/// Longest RTMP message the `rtmp` target's session takes: small, so the limits on
/// half-received messages are reached within one input.
const RTMP_MAX_MESSAGE: usize = 8192;

/// RTMP after the handshake (chunking, AMF0, the publish command flow), the bytes
/// arriving in a few pieces, every publish request accepted: no panic, at most two
/// messages' worth held, replies bounded by what came in. And AMF0 alone: what decodes
/// re-encodes to bytes that decode to the same.
fn rtmp(data: &[u8]) {
    use shoal_node::rtmp::amf;
    use shoal_node::rtmp::session::{Event, Session};

    if let Ok(values) = amf::decode_all(Bytes::copy_from_slice(data)) {
        assert!(values.len() <= data.len(), "more values than bytes");
        let encode = |values: &[amf::Value]| {
            let mut out = Vec::new();
            for v in values {
                amf::encode(v, &mut out);
            }
            out
        };
        let once = encode(&values);
        let again = amf::decode_all(Bytes::from(once.clone())).expect("re-encoded AMF0 decodes");
        assert_eq!(encode(&again), once, "AMF0 re-encoding not stable");
    }

    // Split points from the input's own bytes, so a seed stays whole when mutated.
    let len = data.len();
    let mut cuts = [
        len / 3,
        len * usize::from(data.get(len / 2).copied().unwrap_or(0)) / 256,
        len - len / 7,
    ];
    cuts.sort_unstable();
    let mut s = Session::new(RTMP_MAX_MESSAGE);
    let mut buf = bytes::BytesMut::new();
    let mut output = 0usize;
    let mut from = 0;
    for to in cuts.into_iter().chain([len]) {
        buf.extend_from_slice(&data[from..to]);
        from = to;
        loop {
            let before = buf.len();
            let result = s.receive(&mut buf);
            assert!(
                s.buffered() <= 2 * RTMP_MAX_MESSAGE,
                "{} bytes held in half-received messages",
                s.buffered()
            );
            let Ok(events) = result else {
                output += s.take_output().len();
                assert!(output <= 64 * 1024 + 64 * len, "{output} bytes of replies");
                return;
            };
            for event in events {
                match event {
                    Event::Publish {
                        name, stream_id, ..
                    } => s.accept_publish(stream_id, &name),
                    Event::Media { body, .. } => assert!(!body.is_empty(), "empty media"),
                    Event::Metadata(_) | Event::Unpublish => {}
                }
            }
            output += s.take_output().len();
            assert!(output <= 64 * 1024 + 64 * len, "{output} bytes of replies");
            if buf.len() == before || buf.is_empty() {
                break;
            }
        }
    }
}

fn rtmp_seeds() -> Vec<Vec<u8>> {
    use shoal_node::rtmp::amf::{self, Value};
    use shoal_node::rtmp::chunk::{Encoder, Message};

    let message =
        |csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: Vec<u8>| Message {
            csid,
            timestamp,
            type_id,
            stream_id,
            payload: payload.into(),
        };
    let command = |values: &[Value]| {
        let mut p = Vec::new();
        for v in values {
            amf::encode(v, &mut p);
        }
        p
    };
    let key = || amf::string("cam?key=k");

    // A publish as OBS runs it: Set Chunk Size, connect, releaseStream, FCPublish,
    // createStream, publish, metadata, media (a keyframe longer than a chunk, past 2^24
    // ms: extended timestamps on its type 3 chunk too), FCUnpublish, deleteStream.
    let mut enc = Encoder::default();
    let mut flow = Vec::new();
    enc.encode(
        &message(2, 0, 1, 0, 4096u32.to_be_bytes().to_vec()),
        &mut flow,
    );
    enc.set_chunk_size(4096);
    let calls = [
        vec![
            amf::string("connect"),
            Value::Number(1.0),
            amf::object([
                ("app", amf::string("live")),
                ("type", amf::string("nonprivate")),
                ("flashVer", amf::string("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("tcUrl", amf::string("rtmp://127.0.0.1:1935/live")),
            ]),
        ],
        vec![
            amf::string("releaseStream"),
            Value::Number(2.0),
            Value::Null,
            key(),
        ],
        vec![
            amf::string("FCPublish"),
            Value::Number(3.0),
            Value::Null,
            key(),
        ],
        vec![amf::string("createStream"), Value::Number(4.0), Value::Null],
    ];
    for call in &calls {
        enc.encode(&message(3, 0, 20, 0, command(call)), &mut flow);
    }
    let publish = command(&[
        amf::string("publish"),
        Value::Number(5.0),
        Value::Null,
        key(),
        amf::string("live"),
    ]);
    enc.encode(&message(8, 0, 20, 1, publish), &mut flow);
    // @setDataFrame("onMetaData", ECMA array) as ffmpeg writes it.
    let mut meta = command(&[amf::string("@setDataFrame"), amf::string("onMetaData")]);
    meta.extend_from_slice(&[0x08, 0, 0, 0, 2]);
    for (k, v) in [("width", 1280.0f64), ("height", 720.0)] {
        meta.extend_from_slice(&(k.len() as u16).to_be_bytes());
        meta.extend_from_slice(k.as_bytes());
        meta.push(0x00);
        meta.extend_from_slice(&v.to_be_bytes());
    }
    meta.extend_from_slice(&[0, 0, 9]);
    enc.encode(&message(4, 0, 18, 1, meta), &mut flow);
    let config = vec![
        0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 4, 0x68,
        0xee, 0x3c, 0x80,
    ];
    enc.encode(&message(6, 0, 9, 1, config), &mut flow);
    enc.encode(&message(4, 0, 8, 1, vec![0xaf, 0, 0x12, 0x10]), &mut flow);
    let mut keyframe = vec![0x17, 1, 0, 0, 0, 0, 0, 0x13, 0x83, 0x65];
    keyframe.extend((0..5000u32).map(|i| (i * 7) as u8));
    enc.encode(&message(6, 0x0100_0000, 9, 1, keyframe), &mut flow);
    enc.encode(
        &message(4, 0x0100_0010, 8, 1, vec![0xaf, 1, 0x21, 0x1b, 0x94]),
        &mut flow,
    );
    let unpublish = [
        vec![
            amf::string("FCUnpublish"),
            Value::Number(6.0),
            Value::Null,
            key(),
        ],
        vec![
            amf::string("deleteStream"),
            Value::Number(7.0),
            Value::Null,
            Value::Number(1.0),
        ],
    ];
    for call in &unpublish {
        enc.encode(&message(3, 0, 20, 0, command(call)), &mut flow);
    }

    // Compressed headers and the long chunk stream ids: a connect, a Window Ack Size
    // (acknowledgements), a ping, audio on chunk stream 74 (two-byte basic header) as
    // type 0, 2 and 3, a message on chunk stream 400 (three bytes) aborted half way, an
    // AMF3 command, and a type 3 chunk starting a message after a type 0.
    let mut odd = Vec::new();
    let enc = Encoder::default();
    enc.encode(&message(3, 0, 20, 0, command(&calls[0])), &mut odd);
    enc.encode(
        &message(2, 0, 5, 0, 100u32.to_be_bytes().to_vec()),
        &mut odd,
    );
    enc.encode(&message(2, 0, 4, 0, vec![0, 6, 0, 0, 0, 9]), &mut odd);
    odd.extend_from_slice(&[0x00, 10, 0, 0, 5, 0, 0, 4, 8, 1, 0, 0, 0, 0xaf, 1, 2, 3]);
    odd.extend_from_slice(&[0x80, 10, 0, 0, 23, 0xaf, 1, 4, 5]);
    odd.extend_from_slice(&[0xc0, 10, 0xaf, 1, 6, 7]);
    odd.extend_from_slice(&[0x01, 0x50, 0x01, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0]);
    odd.extend_from_slice(&[0x17; 128]);
    enc.encode(
        &message(2, 0, 2, 0, 400u32.to_be_bytes().to_vec()),
        &mut odd,
    );
    let mut amf3 = vec![0];
    amf3.extend(command(&calls[3]));
    enc.encode(&message(3, 0, 17, 0, amf3), &mut odd);
    odd.extend_from_slice(&[0x07, 0, 0, 40, 0, 0, 2, 8, 1, 0, 0, 0, 0xaf, 1]);
    odd.extend_from_slice(&[0xc7, 0xaf, 1]);

    vec![
        flow,
        odd,
        command(&calls[0]),
        command(&[amf::string("x"), Value::Array(vec![Value::Bool(true)])]),
    ]
}

/// Largest PES the `ts_demux` target's demuxer takes: small, so inputs reach the limit.
const TS_MAX_PES: usize = 4096;

/// Everything a demuxer gives for `data` pushed in pieces of the sizes `sizes` cycles
/// through, then finished; checks after each push that the bytes held stay within the
/// limit and the frame data within what came in.
fn ts_demux_run(
    data: &[u8],
    sizes: &[usize],
) -> (
    Vec<shoal_node::media::demux::Demuxed>,
    Vec<shoal_node::media::MediaError>,
) {
    use shoal_node::media::demux::{Demuxed, TsDemuxer};
    let mut d = TsDemuxer::new(TS_MAX_PES);
    let (mut items, mut errors) = (Vec::new(), Vec::new());
    let (mut fed, mut frame_bytes, mut configs) = (0usize, 0usize, 0usize);
    let mut take = |(found, errs): (Vec<Demuxed>, Vec<_>), fed: usize, d: &TsDemuxer| {
        for item in &found {
            match item {
                Demuxed::Frame(Frame::Video { avcc, .. }) => frame_bytes += avcc.len(),
                Demuxed::Frame(Frame::Audio { raw, .. }) => frame_bytes += raw.len(),
                Demuxed::VideoConfig(_) | Demuxed::AudioConfig(_) => configs += 1,
            }
        }
        // A NAL unit's 4-byte length replaces a start code of at least 3 bytes, and a
        // NAL unit has at least 1: 5 bytes out for 4 in at most.
        assert!(
            frame_bytes <= fed + fed / 4 + 8,
            "{frame_bytes} bytes of frames from {fed} bytes"
        );
        // A config comes with a PES (a transport packet at least) or an ADTS frame (8
        // bytes at least).
        assert!(configs <= fed / 8 + 2, "{configs} configs from {fed} bytes");
        assert!(
            d.buffered() <= TS_MAX_PES * 3 + 188,
            "{} bytes buffered",
            d.buffered()
        );
        items.extend(found);
        errors.extend(errs);
    };
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        rest = tail;
        fed += piece.len();
        let found = d.push(piece);
        take(found, fed, &d);
    }
    let found = d.finish();
    take(found, fed, &d);
    assert_eq!(d.buffered(), 0, "held after finish");
    (items, errors)
}

/// An encoder's MPEG-TS, as SRT ingest takes it: no panic, at most a partial packet,
/// two PES and the frames held at the start buffered at any time, frame data bounded by
/// the input, and the same result whatever the split (whole; in pieces whose sizes come
/// from the input).
pub fn ts_demux(data: &[u8]) {
    let whole = ts_demux_run(data, &[data.len().max(1)]);
    let first = usize::from(data.first().copied().unwrap_or(0));
    let sizes = [1 + first % 13, 188, 1316, 7, 189, 1 + first];
    let pieces = ts_demux_run(data, &sizes);
    assert!(whole == pieces, "a different result in pieces");
}

/// Transport streams from the muxer: video and audio with tables repeated, audio only,
/// a PMT listing streams Shoal does not carry, and a PES over the limit.
fn ts_demux_seeds() -> Vec<Vec<u8>> {
    use shoal_node::media::ts::{TsMuxer, crc32};
    let annex_b = |nals: &[&[u8]]| {
        let mut v = vec![0, 0, 0, 1, 0x09, 0xF0];
        for nal in nals {
            v.extend_from_slice(&[0, 0, 1]);
            v.extend_from_slice(nal);
        }
        v
    };
    let idr: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    let sei: &[u8] = &[0x06, 0x05, 0x02, 0xdc, 0x45, 0x80];
    let slice: &[u8] = &[0x41, 0x9a, 0x21, 0x6c, 0x42];
    let keyframe = annex_b(&[FLV_SPS, FLV_PPS, sei, idr]);
    let config = aac::parse_config(&[0x12, 0x10]).expect("valid config");
    let adts = |sizes: &[usize]| {
        let mut v = Vec::new();
        for &size in sizes {
            v.extend_from_slice(&config.adts_header(size).expect("fits"));
            v.extend(std::iter::repeat_n(0x21, size));
        }
        v
    };

    let mut av = Vec::new();
    let mut m = TsMuxer::new(true, true);
    m.write_tables(&mut av);
    m.write_video(129_000, 126_000, true, &keyframe, &mut av);
    m.write_audio(125_000, &adts(&[20, 30]), &mut av);
    m.write_video(135_000, 129_000, false, &annex_b(&[slice]), &mut av);
    m.write_audio(129_600, &adts(&[25]), &mut av);
    m.write_tables(&mut av);
    m.write_video(132_000, 132_000, true, &keyframe, &mut av);
    m.write_video(
        (1 << 33) - 10,
        (1 << 33) - 10,
        false,
        &annex_b(&[slice]),
        &mut av,
    );

    let mut audio = Vec::new();
    let mut m = TsMuxer::new(false, true);
    m.write_tables(&mut audio);
    m.write_audio(0, &adts(&[10, 10, 10]), &mut audio);
    m.write_audio(6270, &adts(&[40]), &mut audio);

    // PAT of program 1 on PID 0x1000, and a PMT listing HEVC, H.264, AC-3 and AAC.
    let mut others = Vec::new();
    let mut m = TsMuxer::new(true, true);
    m.write_tables(&mut others);
    others.truncate(188);
    let mut pmt = vec![0x02, 0, 0, 0, 1, 0xC1, 0, 0, 0xE1, 0x00, 0xF0, 0x00];
    for (stream_type, pid, descriptors) in [
        (0x24u8, 0x200u16, &[][..]),
        (0x1B, 0x100, &[]),
        (0x06, 0x201, &[0x6A, 0x01, 0x00]),
        (0x0F, 0x101, &[]),
    ] {
        pmt.push(stream_type);
        pmt.extend_from_slice(&(0xE000 | pid).to_be_bytes());
        pmt.extend_from_slice(&(0xF000 | descriptors.len() as u16).to_be_bytes());
        pmt.extend_from_slice(descriptors);
    }
    let len = (pmt.len() - 3 + 4) as u16;
    pmt[1] = 0xB0 | (len >> 8) as u8;
    pmt[2] = len as u8;
    let crc = crc32(&pmt);
    pmt.extend_from_slice(&crc.to_be_bytes());
    let mut packet = vec![0x47, 0x50, 0x00, 0x10, 0x00];
    packet.extend_from_slice(&pmt);
    packet.resize(188, 0xFF);
    others.extend_from_slice(&packet);
    let mut m = TsMuxer::new(true, true);
    let mut media = Vec::new();
    m.write_video(0, 0, true, &keyframe, &mut media);
    m.write_audio(0, &adts(&[20]), &mut media);
    others.extend_from_slice(&media);

    let mut large = Vec::new();
    let mut m = TsMuxer::new(true, false);
    m.write_tables(&mut large);
    m.write_video(0, 0, true, &keyframe, &mut large);
    let big: Vec<u8> = [&annex_b(&[slice])[..], &[0x5A; 5000]].concat();
    m.write_video(3000, 3000, false, &big, &mut large);
    m.write_video(6000, 6000, false, &annex_b(&[slice]), &mut large);

    vec![av, audio, others, large]
}
