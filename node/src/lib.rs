//! The Shoal node.
//!
//! The runtime that drives the sans-io brain, [`shoal_core`] (peer table, stream windows,
//! holder choice, prefetch, liveness, admission): events in, actions out.
//! - Its parts: [`control`] (libp2p: discovery and gossip), [`data`] (quinn:
//!   segment pulls between nodes), [`http`] (viewers, ingest, admin API), [`store`] (the
//!   segment bytes), [`fetch`] (coalesced, verified pulls), tied together by [`node`].

pub mod announce;
pub mod apparatus;
pub mod config;
pub mod control;
pub mod core_guard;
pub mod cpu;
pub mod data;
pub mod due;
pub mod encoders;
pub mod fetch;
pub mod hls;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod ingest_rate;
pub mod media;
pub mod members;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod publisher;
pub mod rtmp;
pub mod sd_notify;
pub mod srt;
pub mod store;
pub mod stream_keys;
pub mod strikes;
pub mod tokens;
pub mod units;

pub use config::NodeConfig;
pub use node::Node;
pub use shoal_protocol::PeerId;
