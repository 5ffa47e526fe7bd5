//! What a simulator or a test puts between a node and the network: the data plane's UDP
//! socket (the simulator's delays a datagram by its destination's region), a delay on
//! control-plane events by their sending peer, and injected faults.
//!
//! Not part of an operator's configuration ([`crate::config::NodeConfig`]): `shoal run`
//! never sets it, and [`crate::node::Node::start`] runs with none. Simulators and tests
//! pass one to [`crate::node::Node::start_with`]; the delaying socket itself lives in the
//! simulator (`sim/src/delay.rs`).

use crate::control::PeerDelay;
use crate::data::server::Faults;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Makes the data plane's socket, bound to the given address.
pub type SocketFactory =
    dyn Fn(SocketAddr) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> + Send + Sync;

/// Hooks between a node and the network, for simulators and tests.
#[derive(Clone, Default)]
pub struct Apparatus {
    /// Faults the data-plane server injects.
    pub faults: Faults,
    /// Makes the data plane's UDP socket instead of a plain one.
    pub data_socket: Option<Arc<SocketFactory>>,
    /// Holds control-plane events from a peer for a delay chosen by the peer.
    pub control_delay: Option<PeerDelay>,
}

impl fmt::Debug for Apparatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Apparatus")
            .field("faults", &self.faults)
            .field("data_socket", &self.data_socket.is_some())
            .field("control_delay", &self.control_delay.is_some())
            .finish()
    }
}

/// A quinn endpoint on `addr` serving with `server_config`, over `apparatus`'s socket if
/// it has one.
pub fn data_endpoint(
    apparatus: &Apparatus,
    server_config: quinn::ServerConfig,
    addr: SocketAddr,
) -> io::Result<quinn::Endpoint> {
    let Some(make) = &apparatus.data_socket else {
        return quinn::Endpoint::server(server_config, addr);
    };
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        Some(server_config),
        make(addr)?,
        Arc::new(quinn::TokioRuntime),
    )
}
