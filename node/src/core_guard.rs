//! The core, locked by code other than its driver (HTTP handlers, pulls, ingest).
//!
//! The driver sleeps until the core's [`Core::poll_timeout`] or the next event. When
//! other code changes the core so that it needs the driver sooner (a new viewer makes the
//! status due in 200 ms, a first request for a stream leaves prefetches to start), the
//! guard wakes the driver as it drops: [`Core::take_wake`] says whether it must.

use shoal_core::Core;
use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;
use tokio::sync::Notify;

/// A locked [`Core`] that wakes the driver on drop if what was done needs it.
pub struct CoreGuard<'a> {
    core: MutexGuard<'a, Core>,
    driver: &'a Notify,
}

impl<'a> CoreGuard<'a> {
    /// Wraps a locked core; `driver` wakes the core's driver.
    pub fn new(core: MutexGuard<'a, Core>, driver: &'a Notify) -> Self {
        Self { core, driver }
    }
}

impl Deref for CoreGuard<'_> {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl DerefMut for CoreGuard<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.core
    }
}

impl Drop for CoreGuard<'_> {
    fn drop(&mut self) {
        if self.core.take_wake() {
            self.driver.notify_one();
        }
    }
}
