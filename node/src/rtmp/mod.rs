//! RTMP ingest: what OBS, vMix, Wirecast, hardware encoders and `ffmpeg -f flv` push.
//!
//! [`handshake`] and [`session`] (over [`chunk`] and [`amf`]) speak the protocol,
//! sans-io where it can be; [`publish`] checks the stream key and turns FLV tags into
//! the node's segments; [`server`] owns the sockets and their limits.

pub mod amf;
pub mod chunk;
pub mod handshake;
pub mod publish;
pub mod server;
pub mod session;
