//! RTMP's handshake, the plain version (C0 C1 C2 / S0 S1 S2) that OBS, ffmpeg and
//! hardware encoders use to publish. The digest ("complex") variant exists for Flash
//! players; a publisher does not check for it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of C1, C2, S1 and S2.
pub const PACKET: usize = 1536;
/// The only RTMP version: 3 (6 is RTMPE, encrypted, which Shoal does not take).
pub const VERSION: u8 = 3;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// C0 named another version (6: RTMPE; anything else: not RTMP at all).
    #[error("RTMP version {0} not supported (plain RTMP is version 3)")]
    Version(u8),
    /// The socket failed or closed.
    #[error("handshake i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the server side of the handshake on `io`.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    epoch_ms: u32,
) -> Result<(), HandshakeError> {
    let mut c0c1 = vec![0u8; 1 + PACKET];
    io.read_exact(&mut c0c1[..1]).await?;
    if c0c1[0] != VERSION {
        return Err(HandshakeError::Version(c0c1[0]));
    }
    io.read_exact(&mut c0c1[1..]).await?;
    let c1 = &c0c1[1..];
    let mut reply = Vec::with_capacity(1 + 2 * PACKET);
    reply.push(VERSION);
    // S1: our time, four zero bytes (no digest), then "random" bytes. Nothing checks
    // them; derive them from C1 so no randomness source is needed.
    reply.extend_from_slice(&epoch_ms.to_be_bytes());
    reply.extend_from_slice(&[0; 4]);
    reply.extend(blake3::hash(c1).as_bytes().iter().cycle().take(PACKET - 8));
    // S2: an echo of C1 with our receipt time in the second field.
    reply.extend_from_slice(&c1[..4]);
    reply.extend_from_slice(&epoch_ms.to_be_bytes());
    reply.extend_from_slice(&c1[8..]);
    io.write_all(&reply).await?;
    io.flush().await?;
    let mut c2 = vec![0u8; PACKET];
    io.read_exact(&mut c2).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_handshake_and_wrong_version() {
        let (mut client, mut server) = tokio::io::duplex(8192);
        let srv = tokio::spawn(async move { accept(&mut server, 7).await });
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..PACKET).map(|i| i as u8));
        client.write_all(&c0c1).await.unwrap();
        let mut s = vec![0u8; 1 + 2 * PACKET];
        client.read_exact(&mut s).await.unwrap();
        assert_eq!(s[0], 3);
        assert_eq!(&s[1 + PACKET + 8..], &c0c1[9..], "S2 echoes C1");
        client.write_all(&s[1..1 + PACKET]).await.unwrap();
        srv.await.unwrap().unwrap();

        let (mut client, mut server) = tokio::io::duplex(8192);
        client.write_all(&[6u8]).await.unwrap();
        assert!(matches!(
            accept(&mut server, 0).await,
            Err(HandshakeError::Version(6))
        ));
    }
}
