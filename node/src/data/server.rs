//! The data-plane server: answers segment, init and manifest requests.

use super::{Provider, Supply};
use bytes::Bytes;
use shoal_protocol::codec;
use shoal_protocol::content::ContentId;
use shoal_protocol::data::{self, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::{debug, warn};

/// Test-only fault injection: flip a byte in every media body served (a peer gone bad).
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Corrupt served segment bytes.
    pub corrupt_egress: bool,
}

/// Accepts connections until the endpoint closes.
pub async fn run(endpoint: quinn::Endpoint, provider: Arc<dyn Provider>, faults: Faults) {
    while let Some(incoming) = endpoint.accept().await {
        let provider = provider.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, provider, faults).await,
                Err(e) => debug!(%remote, error = %e, "data-plane handshake failed"),
            }
        });
    }
}

async fn serve_connection(conn: quinn::Connection, provider: Arc<dyn Provider>, faults: Faults) {
    let remote = conn.remote_address();
    let client = super::tls::peer_fingerprint(&conn);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let provider = provider.clone();
                tokio::spawn(async move {
                    let served = serve_stream(send, recv, remote, client, &*provider, faults);
                    if let Err(e) = served.await {
                        debug!(%remote, error = %e, "data-plane request failed");
                    }
                });
            }
            Err(e) => {
                debug!(%remote, reason = %e, "data-plane connection closed");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    remote: SocketAddr,
    client: Option<ContentId>,
    provider: &dyn Provider,
    faults: Faults,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let raw = recv.read_to_end(4 + data::MAX_REQUEST).await?;
    // Checked per request, not per connection: a member's first pull may come before
    // its status (which binds its certificate to it) arrived, and a member revoked
    // since its connection opened is refused from then on.
    if !provider.admits(client.as_ref()) {
        debug!(%remote, "data-plane request from a non-member refused");
        let refusal = Response::Error("not a member of this mesh".into());
        respond(&mut send, &refusal, None).await?;
        return Ok(());
    }
    let request = match parse_request(&raw) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "malformed data-plane request");
            respond(&mut send, &Response::Error(e), None).await?;
            return Ok(());
        }
    };
    let (response, body) = match request {
        Request::Segment { stream, seq } => match provider.segment(stream, seq, remote).await {
            Supply::Bytes(b) => bytes_response(Some(b)),
            Supply::Busy(fed) => {
                let fed = fed
                    .iter()
                    .take(data::MAX_HINTS)
                    .map(|p| p.to_bytes())
                    .collect();
                (Response::Busy { fed }, None)
            }
            Supply::NotFound => (Response::NotFound, None),
        },
        Request::Init { stream, hash } => bytes_response(provider.init(&stream, &hash)),
        Request::Manifest { stream } => match provider.manifest(&stream) {
            Some((mut announcements, end)) => {
                let skip = announcements.len().saturating_sub(data::MAX_MANIFEST);
                announcements.drain(..skip);
                (Response::Manifest { announcements, end }, None)
            }
            None => (Response::NotFound, None),
        },
    };
    let body = match (body, faults.corrupt_egress) {
        (Some(b), true) if !b.is_empty() => {
            let mut v = b.to_vec();
            v[0] ^= 0xff;
            Some(Bytes::from(v))
        }
        (b, _) => b,
    };
    if let Some(b) = &body {
        provider.served(b.len() as u64);
    }
    respond(&mut send, &response, body).await
}

fn bytes_response(bytes: Option<Bytes>) -> (Response, Option<Bytes>) {
    match bytes {
        Some(b) => (
            Response::Bytes {
                size: b.len() as u64,
            },
            Some(b),
        ),
        None => (Response::NotFound, None),
    }
}

/// Parses a request frame (a big-endian length, then the encoded [`Request`]).
pub fn parse_request(raw: &[u8]) -> Result<Request, String> {
    let (len, body) = raw.split_at_checked(4).ok_or("short frame")?;
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len != body.len() {
        return Err(format!("frame says {len} bytes, got {}", body.len()));
    }
    codec::decode_limited(body, data::MAX_REQUEST).map_err(|e| e.to_string())
}

async fn respond(
    send: &mut quinn::SendStream,
    response: &Response,
    body: Option<Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let header = codec::encode(response)?;
    send.write_all(&data::frame(&header)).await?;
    if let Some(body) = body {
        send.write_chunk(body).await?;
    }
    send.finish()?;
    // Wait until the peer has read everything (or gone), so the bytes are not cut off.
    let _ = send.stopped().await;
    Ok(())
}
