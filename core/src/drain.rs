//! Drain as phases the core walks through on its own clock: a draining node first
//! serves its admitted viewers (new ones go to peers) until they leave or the operator's
//! deadline passes, then hands them off (their playlist requests are redirected too)
//! until no viewer has asked for anything for [`HAND_OFF_QUIET`] (at most
//! [`HAND_OFF_MAX`]), then tells its driver to leave ([`crate::Action::Leave`]). Each
//! phase change is an action too ([`crate::Action::Drain`]), for the driver's logs.

use crate::{Action, Core};
use std::time::{Duration, Instant};

/// A node in hand-off leaves once its viewers have been silent this long...
pub const HAND_OFF_QUIET: Duration = Duration::from_secs(3);
/// ...or after this long in any case.
pub const HAND_OFF_MAX: Duration = Duration::from_secs(15);

/// A node's draining phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// New viewers are redirected; admitted ones are served.
    Draining,
    /// Admitted viewers' playlist requests are redirected too, so players move before the
    /// node leaves.
    HandOff,
}

/// Where a draining node is, and when it moves on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    phase: Drain,
    /// Admitted viewers are served until then at the latest.
    serve_until: Instant,
    /// When hand-off began.
    hand_off_at: Option<Instant>,
    /// The last viewer request (playlist or media) seen while draining.
    last_request: Option<Instant>,
    /// Leave was said.
    left: bool,
}

impl Core {
    /// Starts draining at `now`: new viewers go elsewhere and the status says so at
    /// once; admitted viewers are served until they leave (checked at the next ticks) or
    /// for at most `serve_for`, then handed off. Asking a draining node again can only
    /// bring its hand-off forward (the earlier deadline holds).
    pub fn start_drain(&mut self, serve_for: Duration, now: Instant) {
        if let Some(plan) = &mut self.drain_plan {
            plan.serve_until = plan.serve_until.min(now + serve_for);
            return;
        }
        self.drain_plan = Some(Plan {
            phase: Drain::Draining,
            serve_until: now + serve_for,
            hand_off_at: None,
            last_request: None,
            left: false,
        });
        self.actions.push_back(Action::Drain(Drain::Draining));
        self.mark_dirty();
    }

    /// The drain phase, if draining.
    pub fn drain(&self) -> Option<Drain> {
        self.drain_plan.map(|p| p.phase)
    }

    /// A viewer asked for something (while draining, this keeps hand-off going).
    pub(crate) fn note_viewer_request(&mut self, now: Instant) {
        if let Some(plan) = &mut self.drain_plan {
            plan.last_request = Some(now);
        }
    }

    /// Moves the drain on if its time has come (from [`Core::handle_tick`]).
    pub(crate) fn advance_drain(&mut self, now: Instant) {
        if self.drain_plan.is_none() {
            return;
        }
        // Counted only while draining: it walks every session.
        let viewers = self.total_viewers();
        let Some(plan) = &mut self.drain_plan else {
            return;
        };
        if plan.phase == Drain::Draining && (now >= plan.serve_until || viewers == 0) {
            plan.phase = Drain::HandOff;
            plan.hand_off_at = Some(now);
            self.actions.push_back(Action::Drain(Drain::HandOff));
            self.mark_dirty();
            return;
        }
        if let Some(leave_at) = plan.leave_at()
            && now >= leave_at
            && !plan.left
        {
            plan.left = true;
            self.actions.push_back(Action::Leave);
        }
    }

    /// When the drain next needs the time (for [`Core::poll_timeout`]).
    pub(crate) fn drain_deadline(&self) -> Option<Instant> {
        let plan = self.drain_plan.as_ref()?;
        match plan.phase {
            Drain::Draining => Some(plan.serve_until),
            Drain::HandOff if plan.left => None,
            Drain::HandOff => plan.leave_at(),
        }
    }
}

impl Plan {
    /// When a node in hand-off leaves: viewers quiet for [`HAND_OFF_QUIET`], or
    /// [`HAND_OFF_MAX`] after hand-off began.
    fn leave_at(&self) -> Option<Instant> {
        let began = self.hand_off_at?;
        let heard = self.last_request.map_or(began, |r| r.max(began));
        Some((heard + HAND_OFF_QUIET).min(began + HAND_OFF_MAX))
    }
}

#[cfg(test)]
mod tests;
