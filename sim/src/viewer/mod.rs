//! Simulated viewers that behave like HLS players ([`client`]) on top of a pure playout
//! model ([`playout`]), and the figures a crowd of them produces ([`report`]). Kept
//! independent of how the nodes run, so a virtual-time mode can reuse the model.

pub mod client;
pub mod playout;
pub mod report;
