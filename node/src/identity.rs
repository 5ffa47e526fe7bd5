//! The node's identity: an ed25519 keypair kept in the data directory. Its PeerId is the
//! node id everywhere (libp2p, signatures, status).

use shoal_protocol::identity::Keypair;
use std::io::Write;
use std::path::Path;
use thiserror::Error;

/// File name of the keypair inside the data directory.
pub const KEY_FILE: &str = "identity.key";

/// Why the identity could not be loaded or created.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key file does not hold a valid keypair.
    #[error("identity file {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// Loads the keypair from `data_dir`, creating the directory and a new keypair on first
/// start. The file is written with mode 0600 and atomically (temp file + rename).
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| IdentityError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| IdentityError::Corrupt(path.display().to_string(), e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .map_err(|e| IdentityError::Corrupt(path.display().to_string(), e.to_string()))?;
            let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            Ok(keypair)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("shoal-id-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create(&dir).unwrap();
        let b = load_or_create(&dir).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        std::fs::write(dir.join(KEY_FILE), b"garbage").unwrap();
        assert!(matches!(
            load_or_create(&dir),
            Err(IdentityError::Corrupt(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
