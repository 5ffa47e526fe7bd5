//! The hello exchange: the first message each side of a control-plane connection sends,
//! carrying its membership credential and the newest revocation list it holds
//! ([`shoal_protocol::membership`]). A libp2p request-response protocol whose request and
//! response are both a [`Hello`], each at most [`MAX_HELLO`] bytes.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, ProtocolSupport};
use shoal_protocol::codec;
use shoal_protocol::membership::{Hello, MAX_HELLO};
use std::io;
use std::time::Duration;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/hello/1");
/// How long a peer has to say hello on a new connection (and to answer ours). Peers
/// that send one without a valid credential are cut as soon as it arrives; this bounds
/// how long a silent one stays (it is taken for nothing meanwhile).
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The behaviour.
pub type Behaviour = request_response::Behaviour<Codec>;

/// Builds the behaviour.
pub fn behaviour() -> Behaviour {
    request_response::Behaviour::with_codec(
        Codec,
        [(PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(TIMEOUT)
            .with_max_concurrent_streams(16),
    )
}

/// Encodes hellos with Shoal's codec, bounded on read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Codec;

async fn read<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Hello> {
    let mut raw = Vec::new();
    io.take(MAX_HELLO as u64 + 1).read_to_end(&mut raw).await?;
    if raw.len() > MAX_HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("hello over {MAX_HELLO} bytes"),
        ));
    }
    codec::decode_limited(&raw, MAX_HELLO)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

async fn write<T: AsyncWrite + Unpin + Send>(io: &mut T, hello: &Hello) -> io::Result<()> {
    let raw = codec::encode(hello)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    io.write_all(&raw).await?;
    io.close().await
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Hello;
    type Response = Hello;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Hello>
    where
        T: AsyncRead + Unpin + Send,
    {
        read(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Hello>
    where
        T: AsyncRead + Unpin + Send,
    {
        read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        hello: Hello,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write(io, &hello).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        hello: Hello,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write(io, &hello).await
    }
}
