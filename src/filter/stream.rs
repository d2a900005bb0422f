//! The network filter: one context per downstream connection. It translates: hostcalls into
//! [`Session`] events, and the session's [`SessionAction`]s into hostcalls. What to hold, when
//! to decide and what every request and response means is the session's (`src/session/`).
//!
//! One translation needs care. When the session lets only the front of the client's buffer go
//! ([`SessionAction::Split`]: an upgrade request and the bytes behind it arrived together), the
//! filter shrinks Envoy's buffer to that front, pauses and resumes, and keeps the rest in a stash,
//! which it puts back at the front of Envoy's buffer before anything else is done with it (the
//! next client bytes, the server's answer). Envoy keeps a paused filter's view of the
//! connection's read buffer, so the upstream callback can put it back; where the proxy cannot,
//! the connection is closed (`held_bytes_lost`), never forwarded unchecked.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, PeerType};

use super::host;
use super::record::{destination, pin_ended, property_bytes, Recorder};
use super::state::{now_ns, Shared, Waiting};
use crate::policy::{Reason, Verdict};
use crate::session::{Action as SessionAction, FilterKind, Session};
use crate::sniff::pipeline::Refusal;

/// The per-connection context.
pub(crate) struct StreamFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    waiting: Rc<RefCell<Waiting>>,
    session: Option<Rc<RefCell<Session>>>,
    /// Client bytes taken out of Envoy's buffer so that the bytes before them could go.
    stash: Vec<u8>,
    /// A copy of the client bytes left in Envoy's buffer when this filter last paused it: the
    /// next callback fetches only what came after them.
    mirror: Vec<u8>,
}

impl StreamFilter {
    pub(crate) fn new(
        context_id: u32,
        shared: Option<Rc<Shared>>,
        waiting: Rc<RefCell<Waiting>>,
    ) -> StreamFilter {
        StreamFilter {
            context_id,
            shared,
            waiting,
            session: None,
            stash: Vec::new(),
            mirror: Vec::new(),
        }
    }

    /// Keeps the root's timer list in step with the session's deadline.
    fn sync_timer(&self) {
        if let Some(session) = &self.session {
            sync_timer(&self.waiting, self.context_id, session);
        }
    }

    /// Applies the session's answer to client bytes (`buffer`: all held, stash in front), from
    /// the client callback (`in_callback`) or from the server's.
    fn apply_client(
        &mut self,
        shared: &Shared,
        action: SessionAction,
        buffer: Vec<u8>,
        in_callback: bool,
    ) -> Action {
        self.mirror.clear();
        match action {
            SessionAction::Continue => {
                if !in_callback {
                    resume();
                }
                Action::Continue
            }
            SessionAction::Split(n) => {
                // Envoy's buffer keeps the front, which goes on resume; the rest waits here.
                let n = n.min(buffer.len());
                let (front, rest) = buffer.split_at(n);
                if let Err(status) =
                    host::set_buffer(BufferType::DownstreamData, 0, buffer.len(), front)
                {
                    log::warn!("egress-guard: cannot shrink the client buffer: status {status}");
                    self.refuse(shared, Refusal::HeldBytesLost);
                    return Action::Pause;
                }
                self.stash = rest.to_vec();
                resume();
                Action::Pause
            }
            SessionAction::Pause => {
                self.mirror = buffer;
                Action::Pause
            }
            SessionAction::Close => {
                close();
                Action::Pause
            }
            SessionAction::Resume | SessionAction::Recheck | SessionAction::Nothing => {
                Action::Pause
            }
        }
    }

    fn refuse(&mut self, shared: &Shared, why: Refusal) {
        if let Some(session) = &self.session {
            session
                .borrow_mut()
                .refuse(&shared.policy, why, &mut Recorder::new(shared));
        }
        close();
    }

    /// The client bytes held: Envoy's buffer (`envoy_len` bytes) with the stash put back in
    /// front. Only bytes that arrived since the last pause are fetched from Envoy. `None` if the
    /// host cannot show them as expected.
    fn held_bytes(&mut self, envoy_len: usize) -> Option<Vec<u8>> {
        let stashed = std::mem::take(&mut self.stash);
        let mirror = std::mem::take(&mut self.mirror);
        if mirror.len() > envoy_len {
            return None;
        }
        // Envoy's buffer is `mirror` then newer bytes; with the stash back, the stash first.
        let want = stashed.len().saturating_add(envoy_len);
        let mut bytes = if stashed.is_empty() {
            mirror
        } else {
            host::set_buffer(BufferType::DownstreamData, 0, 0, &stashed).ok()?;
            // A host that no longer has the connection's buffer must not be mistaken for one.
            let back = hostcalls::get_buffer(BufferType::DownstreamData, 0, stashed.len())
                .ok()?
                .unwrap_or_default();
            if back != stashed {
                return None;
            }
            let mut bytes = stashed;
            bytes.extend_from_slice(&mirror);
            bytes
        };
        let have = bytes.len();
        if want > have {
            let more = hostcalls::get_buffer(BufferType::DownstreamData, have, want - have)
                .ok()?
                .unwrap_or_default();
            if more.len() != want - have {
                return None;
            }
            bytes.extend_from_slice(&more);
        }
        Some(bytes)
    }
}

impl Context for StreamFilter {
    fn on_done(&mut self) -> bool {
        self.waiting.borrow_mut().remove(self.context_id);
        true
    }
}

impl StreamContext for StreamFilter {
    fn on_new_connection(&mut self) -> Action {
        let Some(shared) = self.shared.clone() else {
            // No policy in force (cannot happen once Envoy accepted the config): fail closed.
            log::error!("egress-guard: no policy in force; closing the connection");
            close();
            return Action::Pause;
        };
        let Some(dst) = destination() else {
            log::error!("egress-guard: connection without destination.address; closing it");
            shared
                .metrics
                .decision(&shared.policy, Verdict::Deny, Reason::NoDestination, None);
            close();
            return Action::Pause;
        };
        // tls_inspector (when the listener has one) already read the SNI.
        let sni = property_bytes(&["connection", "requested_server_name"]);
        let (session, action) = Session::open_with_clock(
            &shared.policy,
            dst,
            sni.as_deref(),
            now_ns,
            &mut Recorder::new(&shared),
        );
        self.session = Some(Rc::new(RefCell::new(session)));
        self.sync_timer();
        match action {
            SessionAction::Pause => Action::Pause,
            SessionAction::Close => {
                close();
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let (Some(shared), Some(session)) = (self.shared.clone(), self.session.clone()) else {
            close();
            return Action::Pause;
        };
        if session.borrow().passes_client_bytes() && self.stash.is_empty() {
            return Action::Continue;
        }
        if session.borrow().is_closed() {
            return Action::Pause;
        }
        let Some(buffer) = self.held_bytes(data_size) else {
            log::error!("egress-guard: cannot read the client's bytes");
            self.refuse(&shared, Refusal::HeldBytesLost);
            return Action::Pause;
        };
        let action = session.borrow_mut().client(
            &shared.policy,
            &buffer,
            end_of_stream,
            now_ns(),
            &mut Recorder::new(&shared),
        );
        let result = self.apply_client(&shared, action, buffer, true);
        self.sync_timer();
        result
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        // Server bytes are never held: they are only followed, to know which response answers
        // an upgrade.
        let (Some(shared), Some(session)) = (self.shared.clone(), self.session.clone()) else {
            return Action::Continue;
        };
        if !session.borrow().following() {
            return Action::Continue;
        }
        let read = |start: usize, len: usize| {
            hostcalls::get_buffer(BufferType::UpstreamData, start, len)
                .ok()
                .flatten()
        };
        let action = session.borrow_mut().server(
            &shared.policy,
            data_size,
            read,
            &mut Recorder::new(&shared),
        );
        match action {
            SessionAction::Resume => {
                // The server left HTTP: the held bytes belong to the tunnel.
                let envoy_held = self.mirror.len();
                if self.held_bytes(envoy_held).is_some() {
                    resume();
                } else {
                    log::warn!("egress-guard: cannot put back the bytes held for a tunnel");
                    self.refuse(&shared, Refusal::HeldBytesLost);
                }
            }
            SessionAction::Recheck => {
                // The server stayed in HTTP: the held bytes are requests to check now.
                let envoy_held = self.mirror.len();
                match self.held_bytes(envoy_held) {
                    Some(buffer) => {
                        let action = session.borrow_mut().client(
                            &shared.policy,
                            &buffer,
                            false,
                            now_ns(),
                            &mut Recorder::new(&shared),
                        );
                        self.apply_client(&shared, action, buffer, false);
                    }
                    None => {
                        log::warn!("egress-guard: cannot read the bytes held behind an upgrade");
                        self.refuse(&shared, Refusal::HeldBytesLost);
                    }
                }
            }
            SessionAction::Close => close(),
            _ => {}
        }
        self.sync_timer();
        Action::Continue
    }

    /// The connection ended (Envoy's access-log callback): a pinned one that Envoy found no
    /// host for is counted and logged.
    fn on_log(&mut self) {
        let (Some(shared), Some(session)) = (&self.shared, &self.session) else {
            return;
        };
        let session = session.borrow();
        if let Some(name) = session.pinned() {
            pin_ended(shared, name, session.dst(), FilterKind::Network);
        }
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.waiting.borrow_mut().remove(self.context_id);
    }
}

/// Keeps the root's timer list in step with a session's deadline.
pub(crate) fn sync_timer(
    waiting: &RefCell<Waiting>,
    context_id: u32,
    session: &Rc<RefCell<Session>>,
) {
    match session.borrow().deadline() {
        Some(deadline) => waiting
            .borrow_mut()
            .add(context_id, deadline, session.clone()),
        None => waiting.borrow_mut().remove(context_id),
    }
}

/// The session's deadline passed. Called from the root's tick with the connection's context
/// made effective (so resume and close act on it).
pub(crate) fn on_timeout(shared: &Shared, session: &Rc<RefCell<Session>>) {
    let action = session
        .borrow_mut()
        .timeout(&shared.policy, now_ns(), &mut Recorder::new(shared));
    match action {
        SessionAction::Resume => resume(),
        SessionAction::Close => close(),
        _ => {}
    }
}

fn resume() {
    if let Err(status) = hostcalls::resume_downstream() {
        log::warn!("egress-guard: cannot resume the client's bytes: {status:?}");
    }
}

fn close() {
    if let Err(status) = hostcalls::close_downstream() {
        log::warn!("egress-guard: cannot close the downstream connection: {status:?}");
    }
}
