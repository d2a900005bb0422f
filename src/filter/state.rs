//! What the contexts of one filter configuration share: the compiled policy, its counters, the
//! list of connections with a deadline, and the proxy's clock.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;

use super::metrics::Metrics;
use crate::policy::Policy;
use crate::session::Session;

/// What every context of one filter configuration shares: the compiled policy and its counters.
pub(crate) struct Shared {
    pub policy: Policy,
    pub metrics: Metrics,
}

/// Connections with a deadline (their session's), by context id.
#[derive(Default)]
pub(crate) struct Waiting {
    entries: BTreeMap<u32, (u64, Rc<RefCell<Session>>)>,
}

impl Waiting {
    /// Sets (or moves) the deadline of a connection.
    pub(crate) fn add(&mut self, context_id: u32, deadline_ns: u64, session: Rc<RefCell<Session>>) {
        self.entries.insert(context_id, (deadline_ns, session));
    }

    /// Drops it (the connection has no deadline any more, or closed).
    pub(crate) fn remove(&mut self, context_id: u32) {
        self.entries.remove(&context_id);
    }

    /// Removes and returns the connections whose deadline passed.
    pub(crate) fn take_expired(&mut self, now_ns: u64) -> Vec<(u32, Rc<RefCell<Session>>)> {
        let expired: Vec<u32> = self
            .entries
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now_ns)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.entries.remove(&id).map(|(_, session)| (id, session)))
            .collect()
    }
}

/// Nanoseconds since the epoch by the proxy's clock (0 if the host cannot say).
pub(crate) fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}
