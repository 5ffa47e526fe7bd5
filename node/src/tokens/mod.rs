//! Viewer tokens: signed, expiring grants to watch one stream.
//!
//! A token is a JWT signed with Ed25519 (`EdDSA`), naming its key in the header (`kid`)
//! and carrying the stream (`sub`), an expiry (`exp`, Unix seconds) and optionally the
//! viewer's address (`ip`). A node started with `--viewer-key KID:PUBLIC` (repeatable, so
//! keys rotate without downtime) serves playlists and media only to requests with a
//! valid token, and checks it alone: no call to any central service. Operators sign
//! tokens in their own services with the key `shoal keygen` writes (PKCS#8 PEM, usable
//! by any JWT library), or with `shoal token`. A token that verified once is
//! remembered ([`seen`]), so a player's later requests skip the signature check.

mod seen;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use libp2p::identity::ed25519;
use seen::Seen;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN: usize = 2048;

/// The PKCS#8 v1 prefix of an Ed25519 private key (RFC 8410): the 32-byte seed follows.
const PKCS8_ED25519: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The stream.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The only client address it is good for, if bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No token (401).
    #[error("a viewer token is required")]
    Missing,
    /// Expired (403).
    #[error("the viewer token has expired")]
    Expired,
    /// Valid, for another stream (403).
    #[error("the viewer token is for another stream")]
    WrongStream,
    /// Valid, bound to another address (403).
    #[error("the viewer token is for another address")]
    WrongAddress,
    /// Malformed, unknown key or bad signature (403).
    #[error("invalid viewer token: {0}")]
    Invalid(String),
}

/// A public key that signs viewer tokens, with its id: `KID:PUBLIC` on the command line
/// (`PUBLIC` is the 32-byte key in unpadded base64url, as in a JWK's `x`).
#[derive(Clone)]
pub struct ViewerKey {
    /// Its id (`kid` in tokens).
    pub id: String,
    key: DecodingKey,
}

impl std::fmt::Debug for ViewerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ViewerKey({})", self.id)
    }
}

impl std::str::FromStr for ViewerKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, public) = s
            .split_once(':')
            .ok_or("a viewer key is KID:PUBLIC (as `shoal keygen` prints it)")?;
        if id.is_empty() || id.len() > 64 {
            return Err("a key id is 1-64 characters".into());
        }
        let raw = URL_SAFE_NO_PAD
            .decode(public)
            .map_err(|e| format!("public key is not base64url: {e}"))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
        ed25519::PublicKey::try_from_bytes(&raw).map_err(|e| format!("bad public key: {e}"))?;
        Ok(ViewerKey {
            id: id.to_string(),
            key: DecodingKey::from_ed_der(&raw),
        })
    }
}

/// Seconds of clock skew allowed on a token's expiry.
const LEEWAY: u64 = 5;

/// Checks viewer tokens against the configured keys.
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
    seen: Seen,
    signature_checks: AtomicU64,
}

impl Verifier {
    /// A verifier accepting tokens signed by any of `keys`.
    pub fn new(keys: &[ViewerKey]) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = LEEWAY;
        Self {
            keys: keys.iter().map(|k| (k.id.clone(), k.key.clone())).collect(),
            validation,
            seen: Seen::default(),
            signature_checks: AtomicU64::new(0),
        }
    }

    /// Whether `token` lets the client at `ip` watch `stream`.
    pub fn check(&self, token: Option<&str>, stream: &str, ip: IpAddr) -> Result<(), Refusal> {
        self.check_at(token, stream, ip, unix_now())
    }

    /// [`Verifier::check`] at `now_unix` for tokens seen before (a new token's signature
    /// and expiry are checked against the system clock).
    fn check_at(
        &self,
        token: Option<&str>,
        stream: &str,
        ip: IpAddr,
        now_unix: u64,
    ) -> Result<(), Refusal> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Refusal::Missing)?;
        if token.len() > MAX_TOKEN {
            return Err(Refusal::Invalid(format!("over {MAX_TOKEN} bytes")));
        }
        let key = Seen::hash(token);
        if let Some(verdict) = self.seen.judge(&key, |claims| {
            if claims.exp.saturating_add(LEEWAY) <= now_unix {
                return Err(Refusal::Expired);
            }
            grants(claims, stream, ip)
        }) {
            return verdict;
        }
        let claims = self.verify(token)?;
        let verdict = grants(&claims, stream, ip);
        self.seen.insert(key, claims, now_unix, LEEWAY);
        verdict
    }

    /// Tokens remembered as verified.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Signatures checked so far (tokens seen before are not checked again).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Checks `token`'s key, signature and expiry, and returns its claims.
    fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| Refusal::Invalid("no key id (kid)".into()))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| Refusal::Invalid(format!("unknown key id {kid:?}")))?;
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        Ok(jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Refusal::Expired,
                _ => Refusal::Invalid(e.to_string()),
            })?
            .claims)
    }
}

/// A private key that signs viewer tokens.
pub struct SigningKey {
    seed: [u8; 32],
    public: [u8; 32],
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_keypair(ed25519::Keypair::generate())
    }

    fn from_keypair(kp: ed25519::Keypair) -> Self {
        let bytes = kp.to_bytes();
        let mut seed = [0; 32];
        seed.copy_from_slice(&bytes[..32]);
        Self {
            seed,
            public: kp.public().to_bytes(),
        }
    }

    /// The key as a PKCS#8 PEM document.
    pub fn to_pem(&self) -> String {
        let mut der = PKCS8_ED25519.to_vec();
        der.extend_from_slice(&self.seed);
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(der)
        )
    }

    /// Reads a key written by [`SigningKey::to_pem`] (or any PKCS#8 v1 Ed25519 PEM).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = STANDARD
            .decode(body)
            .map_err(|e| format!("not a PEM document: {e}"))?;
        let seed = der
            .strip_prefix(&PKCS8_ED25519[..])
            .filter(|s| s.len() == 32)
            .ok_or("not a PKCS#8 Ed25519 private key")?;
        let secret = ed25519::SecretKey::try_from_bytes(seed.to_vec())
            .map_err(|e| format!("bad private key: {e}"))?;
        Ok(Self::from_keypair(ed25519::Keypair::from(secret)))
    }

    /// The key as a libp2p keypair, to sign mesh credentials and revocation lists when
    /// it is a mesh CA's key.
    pub fn keypair(&self) -> shoal_protocol::identity::Keypair {
        let secret = ed25519::SecretKey::try_from_bytes(self.seed).expect("32-byte seed");
        ed25519::Keypair::from(secret).into()
    }

    /// Its id: derived from the public key.
    pub fn id(&self) -> String {
        hex::encode(&blake3::hash(&self.public).as_bytes()[..4])
    }

    /// The `--viewer-key` argument that accepts its tokens: `KID:PUBLIC`.
    pub fn viewer_key_arg(&self) -> String {
        format!("{}:{}", self.id(), URL_SAFE_NO_PAD.encode(self.public))
    }

    /// A token for `stream`, valid for `ttl` from `now_unix` (Unix seconds), optionally
    /// bound to the address `ip`.
    pub fn token(
        &self,
        stream: &str,
        ttl: Duration,
        ip: Option<IpAddr>,
        now_unix: u64,
    ) -> Result<String, String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.id());
        let mut der = PKCS8_ED25519.to_vec();
        der.extend_from_slice(&self.seed);
        let claims = Claims {
            sub: stream.to_string(),
            exp: now_unix + ttl.as_secs(),
            ip,
        };
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&der))
            .map_err(|e| e.to_string())
    }
}

/// Whether unexpired `claims` let the client at `ip` watch `stream`.
fn grants(claims: &Claims, stream: &str, ip: IpAddr) -> Result<(), Refusal> {
    if claims.sub != stream {
        return Err(Refusal::WrongStream);
    }
    if claims
        .ip
        .is_some_and(|bound| bound.to_canonical() != ip.to_canonical())
    {
        return Err(Refusal::WrongAddress);
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, Verifier) {
        let key = SigningKey::generate();
        let verifier = Verifier::new(&[key.viewer_key_arg().parse().unwrap()]);
        (key, verifier)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn a_valid_token_grants_its_stream_only() {
        let (key, v) = setup();
        let t = key
            .token("live", Duration::from_secs(60), None, unix_now())
            .unwrap();
        assert_eq!(v.check(Some(&t), "live", IP), Ok(()));
        assert_eq!(v.check(Some(&t), "other", IP), Err(Refusal::WrongStream));
        assert_eq!(v.check(None, "live", IP), Err(Refusal::Missing));
    }

    #[test]
    fn expired_forged_and_unknown_tokens_are_refused() {
        let (key, v) = setup();
        let old = key
            .token("live", Duration::from_secs(1), None, unix_now() - 3600)
            .unwrap();
        assert_eq!(v.check(Some(&old), "live", IP), Err(Refusal::Expired));
        // Signed by a key this node does not know.
        let stranger = SigningKey::generate()
            .token("live", Duration::from_secs(60), None, unix_now())
            .unwrap();
        assert!(matches!(
            v.check(Some(&stranger), "live", IP),
            Err(Refusal::Invalid(_))
        ));
        // A claim changed after signing.
        let t = key
            .token("live", Duration::from_secs(60), None, unix_now())
            .unwrap();
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let forged = Claims {
            sub: "live".into(),
            exp: unix_now() + 999_999,
            ip: None,
        };
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert!(matches!(
            v.check(Some(&parts.join(".")), "live", IP),
            Err(Refusal::Invalid(_))
        ));
        for junk in ["x", "a.b.c", &"a".repeat(MAX_TOKEN + 1)] {
            assert!(matches!(
                v.check(Some(junk), "live", IP),
                Err(Refusal::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_token_bound_to_an_address_is_good_there_only() {
        let (key, v) = setup();
        let t = key
            .token("live", Duration::from_secs(60), Some(IP), unix_now())
            .unwrap();
        assert_eq!(v.check(Some(&t), "live", IP), Ok(()));
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(v.check(Some(&t), "live", other), Err(Refusal::WrongAddress));
    }

    #[test]
    fn a_token_seen_before_skips_the_signature_but_not_its_limits() {
        let (key, v) = setup();
        let now = unix_now();
        let t = key
            .token("live", Duration::from_secs(60), Some(IP), now)
            .unwrap();
        for _ in 0..5 {
            assert_eq!(v.check_at(Some(&t), "live", IP, now), Ok(()));
        }
        assert_eq!(v.signature_checks(), 1, "one check for five requests");
        // Stream, address and expiry still hold for the remembered token.
        assert_eq!(
            v.check_at(Some(&t), "x", IP, now),
            Err(Refusal::WrongStream)
        );
        let other: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            v.check_at(Some(&t), "live", other, now),
            Err(Refusal::WrongAddress)
        );
        assert_eq!(
            v.check_at(Some(&t), "live", IP, now + 60 + LEEWAY),
            Err(Refusal::Expired)
        );
        // The same claims with another signature are not the remembered token.
        let mut parts: Vec<&str> = t.split('.').collect();
        let bad_sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
        parts[2] = &bad_sig;
        assert!(matches!(
            v.check_at(Some(&parts.join(".")), "live", IP, now),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(v.signature_checks(), 2);
    }

    #[test]
    fn the_memory_of_tokens_is_bounded_and_refusals_are_not_kept() {
        let (key, v) = setup();
        let now = unix_now();
        for i in 0..seen::CAPACITY + 50 {
            let t = key
                .token(&format!("s{i}"), Duration::from_secs(60), None, now)
                .unwrap();
            assert_eq!(v.check_at(Some(&t), &format!("s{i}"), IP, now), Ok(()));
        }
        assert!(v.remembered() <= seen::CAPACITY);
        let before = v.remembered();
        let stranger = SigningKey::generate()
            .token("live", Duration::from_secs(60), None, now)
            .unwrap();
        assert!(v.check_at(Some(&stranger), "live", IP, now).is_err());
        assert_eq!(v.remembered(), before);
    }

    #[test]
    fn keys_survive_their_pem_and_rotate_by_id() {
        let key = SigningKey::generate();
        let again = SigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.viewer_key_arg(), key.viewer_key_arg());
        let next = SigningKey::generate();
        // Both keys configured: tokens of either are accepted during the rotation.
        let v = Verifier::new(&[
            key.viewer_key_arg().parse().unwrap(),
            next.viewer_key_arg().parse().unwrap(),
        ]);
        for k in [&key, &next] {
            let t = k
                .token("live", Duration::from_secs(60), None, unix_now())
                .unwrap();
            assert_eq!(v.check(Some(&t), "live", IP), Ok(()));
        }
        assert!("nokey".parse::<ViewerKey>().is_err());
        assert!("k:abc".parse::<ViewerKey>().is_err());
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END").is_err());
    }
}
