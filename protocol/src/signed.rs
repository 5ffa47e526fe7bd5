//! Signed envelopes: a message plus the ed25519 signature of the node that made it.
//!
//! A `Signed<T>` keeps the exact encoded bytes that were signed, so it can be relayed
//! (over gossip or inside a data-plane manifest) and checked again by anyone without
//! re-encoding. Each message kind signs under its own domain string, so a signature over
//! a status can never be replayed as a signature over an announcement.

use crate::codec::{self, CodecError};
use libp2p_identity::{Keypair, PeerId, PublicKey};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::marker::PhantomData;
use thiserror::Error;

/// A message kind that can be signed. `DOMAIN` separates the signatures of different kinds.
pub trait Signable: Serialize + DeserializeOwned {
    /// Domain-separation tag, unique per message kind.
    const DOMAIN: &'static [u8];
}

/// Largest accepted encoded public key (ed25519 in protobuf form is 36 bytes).
const MAX_PUBLIC_KEY: usize = 128;
/// Largest accepted signature (ed25519 signatures are 64 bytes).
const MAX_SIGNATURE: usize = 128;

/// An encoded message, its signer's public key and the signature.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    payload: Vec<u8>,
    public_key: Vec<u8>,
    signature: Vec<u8>,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            payload: self.payload.clone(),
            public_key: self.public_key.clone(),
            signature: self.signature.clone(),
            kind: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// Why a signed message was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key is not a valid libp2p key.
    #[error("invalid public key")]
    PublicKey,
    /// Key or signature longer than any valid one.
    #[error("public key or signature too long")]
    TooLong,
    /// The signature does not match the payload and key.
    #[error("bad signature")]
    BadSignature,
    /// Signing failed locally.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The payload is not a valid message of this kind.
    #[error("payload: {0}")]
    Payload(#[from] CodecError),
}

/// A signed message whose signature has been checked, with its decoded value.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    /// The node that signed it.
    pub signer: PeerId,
    /// The decoded message.
    pub value: T,
    /// The original envelope, for relaying.
    pub envelope: Signed<T>,
}

fn signing_input(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(domain.len() + 1 + payload.len());
    input.extend_from_slice(domain);
    input.push(0);
    input.extend_from_slice(payload);
    input
}

impl<T: Signable> Signed<T> {
    /// Encodes and signs `value` with `keypair`.
    pub fn sign(keypair: &Keypair, value: &T) -> Result<Self, SignatureError> {
        let payload = codec::encode(value)?;
        let signature = keypair
            .sign(&signing_input(T::DOMAIN, &payload))
            .map_err(|e| SignatureError::Signing(e.to_string()))?;
        Ok(Self {
            payload,
            public_key: keypair.public().encode_protobuf(),
            signature,
            kind: PhantomData,
        })
    }

    /// Checks the signature and decodes the payload.
    pub fn verify(&self) -> Result<Verified<T>, SignatureError> {
        if self.public_key.len() > MAX_PUBLIC_KEY || self.signature.len() > MAX_SIGNATURE {
            return Err(SignatureError::TooLong);
        }
        let key = PublicKey::try_decode_protobuf(&self.public_key)
            .map_err(|_| SignatureError::PublicKey)?;
        if !key.verify(&signing_input(T::DOMAIN, &self.payload), &self.signature) {
            return Err(SignatureError::BadSignature);
        }
        let value = codec::decode(&self.payload)?;
        Ok(Verified {
            signer: key.to_peer_id(),
            value,
            envelope: self.clone(),
        })
    }

    /// Decodes the payload without checking the signature: for routing a message one
    /// is about to send (which topic it goes on), never for trusting it.
    pub fn peek(&self) -> Result<T, CodecError> {
        codec::decode(&self.payload)
    }

    /// Size of the envelope on the wire, roughly.
    pub fn encoded_len(&self) -> usize {
        self.payload.len() + self.public_key.len() + self.signature.len() + 8
    }

    /// Replaces the payload bytes (for tests of tampering).
    #[doc(hidden)]
    pub fn tamper_payload(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg(u32);
    impl Signable for Msg {
        const DOMAIN: &'static [u8] = b"shoal/test/msg";
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Other(u32);
    impl Signable for Other {
        const DOMAIN: &'static [u8] = b"shoal/test/other";
    }

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::generate_ed25519();
        let s = Signed::sign(&kp, &Msg(5)).unwrap();
        let v = s.verify().unwrap();
        assert_eq!(v.value, Msg(5));
        assert_eq!(v.signer, kp.public().to_peer_id());
        // Survives a trip through the codec.
        let bytes = codec::encode(&s).unwrap();
        let back: Signed<Msg> = codec::decode(&bytes).unwrap();
        assert_eq!(back.verify().unwrap().value, Msg(5));
    }

    #[test]
    fn tampering_is_caught() {
        let kp = Keypair::generate_ed25519();
        let mut s = Signed::sign(&kp, &Msg(5)).unwrap();
        s.tamper_payload(|p| *p.last_mut().unwrap() ^= 1);
        assert_eq!(s.verify().unwrap_err(), SignatureError::BadSignature);
    }

    #[test]
    fn domains_do_not_mix() {
        let kp = Keypair::generate_ed25519();
        let s = Signed::sign(&kp, &Msg(5)).unwrap();
        let bytes = codec::encode(&s).unwrap();
        let as_other: Signed<Other> = codec::decode(&bytes).unwrap();
        assert_eq!(as_other.verify().unwrap_err(), SignatureError::BadSignature);
    }
}
