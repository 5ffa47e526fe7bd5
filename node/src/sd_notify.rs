//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd starts the
//! units that depend on the node, and counts its start as done, only when it says
//! `READY=1`; `STOPPING=1` tells that a drain began. A datagram to the socket named by
//! `$NOTIFY_SOCKET`; without it (not under systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;
use tracing::debug;

/// Sends `state` (e.g. `READY=1\nSTATUS=...`) to systemd, if the node runs under it.
/// Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.first() {
        // An abstract socket: `@name` stands for a leading NUL.
        Some(b'@') => send_abstract(&bytes[1..], state),
        Some(_) => UnixDatagram::unbound()
            .and_then(|s| s.send_to(state.as_bytes(), &path))
            .is_ok(),
        None => false,
    };
    debug!(state, sent, "sd_notify");
    sent
}

#[cfg(target_os = "linux")]
fn send_abstract(name: &[u8], state: &str) -> bool {
    use std::os::linux::net::SocketAddrExt;
    let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) else {
        return false;
    };
    UnixDatagram::unbound()
        .and_then(|s| s.send_to_addr(state.as_bytes(), &addr))
        .is_ok()
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &[u8], _: &str) -> bool {
    false
}
