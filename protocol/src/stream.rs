//! Stream names, validated wherever they enter: `[a-z0-9_-]{1,64}`.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Longest accepted stream name.
pub const MAX_NAME_LEN: usize = 64;

/// A validated stream name. The only way to build one is [`Name::new`] (or deserializing,
/// which calls it), so every `Name` in the program is safe to put in a URL, a path or a
/// log line.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a stream name.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Empty string.
    #[error("stream name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("stream name is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A character outside `[a-z0-9_-]`.
    #[error("stream name may only contain a-z, 0-9, '_' and '-'")]
    BadChar,
}

impl Name {
    /// Validates `s` as a stream name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(NameError::BadChar);
        }
        Ok(Self(s))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn validates() {
        assert!(Name::new("live_1-a").is_ok());
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("A"), Err(NameError::BadChar));
        assert_eq!(Name::new("a/b"), Err(NameError::BadChar));
        assert_eq!(Name::new("..").unwrap_err(), NameError::BadChar);
        assert_eq!(Name::new("a".repeat(65)), Err(NameError::TooLong));
        assert!(Name::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn decoding_validates_too() {
        let bad = codec::encode(&"Bad/Name".to_string()).unwrap();
        assert!(codec::decode::<Name>(&bad).is_err());
        let good = codec::encode(&Name::new("ok").unwrap()).unwrap();
        assert_eq!(codec::decode::<Name>(&good).unwrap().as_str(), "ok");
    }
}
