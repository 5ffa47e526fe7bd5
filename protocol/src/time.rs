//! Wall-clock timestamps as they travel on the wire.

/// Milliseconds since the Unix epoch, as carried in messages. Nodes use these only for
/// reporting (propagation delay) and ordering hints, never for safety decisions: clocks
/// across hosts disagree.
pub type UnixMillis = u64;
