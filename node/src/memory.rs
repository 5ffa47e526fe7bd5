//! Giving memory back to the system after a burst.
//!
//! glibc's allocator keeps freed memory in per-thread arenas; after a flood of
//! connections closes, a node's resident size would stay at its peak. When the number of
//! open connections has fallen well below the peak seen since the last trim, the arenas
//! are trimmed (`malloc_trim`), which returns their free pages.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Connections closed since the peak before a trim is worth its cost (a trim walks the
/// arenas: about a millisecond).
const TRIM_AFTER_CLOSED: usize = 256;

static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Called periodically with the connections open now: trims the allocator once many
/// connections have closed since the peak.
pub fn release_if_shrunk(open: usize) {
    let peak = PEAK.fetch_max(open, Ordering::Relaxed).max(open);
    if peak - open >= TRIM_AFTER_CLOSED && open <= peak / 2 {
        PEAK.store(open, Ordering::Relaxed);
        trim();
    }
}

/// Returns free allocator memory to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no
    // pointers from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory in bytes (Linux; `None` elsewhere).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
