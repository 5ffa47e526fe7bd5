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
