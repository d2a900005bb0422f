//! The network filter: one context per downstream connection.
//!
//! At connection open it decides when the facts already decide it (a deny by IP/port, an SNI from
//! `tls_inspector`, a port no host rule applies to). Otherwise it holds the client's bytes (and,
//! with `sniff.hold_upstream`, the whole connection) until the SNI or Host is found, the bytes
//! turn out to be neither TLS nor HTTP, `sniff.max_bytes` is reached, or `sniff.timeout_ms`
//! passes; then it decides. A deny closes the downstream before one client byte is forwarded.
//!
//! On an allowed plaintext HTTP/1 connection it then follows every request and response
//! ([`crate::sniff::pipeline`] decides; this file only translates). Client bytes behind an
//! `Upgrade`/`CONNECT` request wait for that request's own answer; when the request arrived in
//! the same read as the bytes behind it, the filter lets Envoy forward the front of its buffer
//! (it shrinks the buffer, pauses and resumes) and keeps the rest in a stash, which it puts back
//! into Envoy's buffer when the answer comes or more client bytes arrive. Envoy keeps a paused
//! filter's view of the connection's read buffer, so the upstream callback can put it back.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, PeerType};

use super::host;
use super::metrics::SniffOutcome;
use super::report::{FilterKind, NameSource, Proto};
use super::root::{now_ns, Shared, Waiting};
use super::{destination, judge, property_bytes, Anomaly, Observed};
use crate::policy::name::{classify_authority, classify_sni, NameClass};
use crate::policy::{Reason, Verdict};
use crate::sniff::http;
use crate::sniff::pipeline::{Action as Follow, Later, Pipeline, Refusal, ServerAction};
use crate::sniff::{self, Outcome, Sniffed};

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Looking at the client's first bytes. `held`: the connection was paused at open and must be
    /// resumed when allowed from the tick. `after_timeout`: the timeout already allowed it on IP
    /// and port; the first bytes are still checked so a late name cannot slip past a deny rule.
    Sniffing { held: bool, after_timeout: bool },
    /// Decided: bytes flow (on HTTP/1, each later request is checked before its bytes go).
    Allowed,
    /// An allowed HTTP/1 connection holding client bytes: a later request head is incomplete,
    /// or bytes wait behind an unanswered upgrade. The root closes it at its deadline.
    Holding,
    /// Decided: the downstream was closed.
    Denied,
}

/// The state a connection shares with the root's timeout list.
#[derive(Debug)]
pub(crate) struct Conn {
    pub phase: Phase,
    pub dst: SocketAddr,
    /// Client bytes held so far.
    pub buffered: usize,
    /// Requests checked on this HTTP/1 connection (the first included).
    pub requests: u32,
    /// While [`Phase::Holding`]: bytes wait for an upgrade's answer (else a head is incomplete).
    pub awaiting_upgrade: bool,
}

/// The per-connection context.
pub(crate) struct StreamFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    waiting: Rc<RefCell<Waiting>>,
    conn: Option<Rc<RefCell<Conn>>>,
    /// On an allowed HTTP/1 connection: follows every later request and every response.
    pipeline: Option<Pipeline>,
    /// Client bytes taken out of Envoy's buffer so that the bytes before them could go; they go
    /// back into it (at its front) before anything else is done with the buffer.
    stash: Vec<u8>,
    /// Client bytes left in Envoy's buffer when this filter last paused it.
    envoy_held: usize,
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
            conn: None,
            pipeline: None,
            stash: Vec::new(),
            envoy_held: 0,
        }
    }

    fn phase(&self) -> Option<Phase> {
        self.conn.as_ref().map(|c| c.borrow().phase)
    }

    fn set_phase(&self, phase: Phase) {
        if let Some(conn) = &self.conn {
            conn.borrow_mut().phase = phase;
        }
        if !matches!(phase, Phase::Sniffing { .. } | Phase::Holding) {
            self.waiting.borrow_mut().remove(self.context_id);
        }
    }

    /// Applies a verdict taken inside a callback: the returned action lets bytes go or holds
    /// them while the connection closes.
    fn settle(&self, verdict: Verdict) -> Action {
        if verdict == Verdict::Deny {
            self.set_phase(Phase::Denied);
            close();
            Action::Pause
        } else {
            self.set_phase(Phase::Allowed);
            Action::Continue
        }
    }

    /// Checks the held client bytes of a followed HTTP/1 connection (`buffer`: all of them,
    /// the stash already put back) and applies what the pipeline says.
    fn follow_client(&mut self, shared: &Shared, buffer: &[u8], eos: bool) -> Applied {
        let (Some(pipeline), Some(conn)) = (self.pipeline.as_mut(), self.conn.clone()) else {
            return Applied::Forward;
        };
        let action = pipeline.client_bytes(buffer, eos, |later| check_later(shared, &conn, later));
        let awaiting = pipeline.awaiting_upgrade();
        match action {
            Follow::Forward => {
                self.envoy_held = 0;
                self.hold_ends();
                Applied::Forward
            }
            Follow::Split(n) => {
                // Envoy's buffer keeps the front, which goes on resume; the rest waits here.
                let (front, rest) = buffer.split_at(n.min(buffer.len()));
                if let Err(status) =
                    host::set_buffer(BufferType::DownstreamData, 0, buffer.len(), front)
                {
                    log::warn!("egress-guard: cannot shrink the client buffer: status {status}");
                    return self.refuse(shared, Refusal::HeldBytesLost);
                }
                self.stash = rest.to_vec();
                self.envoy_held = 0;
                resume();
                self.hold_starts(shared, awaiting);
                Applied::Hold
            }
            Follow::Hold => {
                self.envoy_held = buffer.len();
                self.hold_starts(shared, awaiting);
                Applied::Hold
            }
            Follow::Close => {
                self.set_phase(Phase::Denied);
                close();
                Applied::Closed
            }
        }
    }

    /// Closes a followed connection for a reason no policy can override; counted and logged.
    fn refuse(&mut self, shared: &Shared, why: Refusal) -> Applied {
        if let Some(conn) = self.conn.clone() {
            check_later(shared, &conn, Later::Refused(why));
        }
        self.set_phase(Phase::Denied);
        close();
        Applied::Closed
    }

    /// The client bytes held for a followed connection: Envoy's buffer (`envoy_len` bytes) with
    /// the stash put back in front. `None` if the host cannot show them as expected.
    fn held_bytes(&mut self, envoy_len: usize) -> Option<Vec<u8>> {
        let stashed = std::mem::take(&mut self.stash);
        if !stashed.is_empty() {
            host::set_buffer(BufferType::DownstreamData, 0, 0, &stashed).ok()?;
        }
        let want = envoy_len.saturating_add(stashed.len());
        let bytes = hostcalls::get_buffer(BufferType::DownstreamData, 0, want)
            .ok()?
            .unwrap_or_default();
        // A host that no longer has the connection's buffer must not be mistaken for one.
        (bytes.len() == want && bytes.starts_with(&stashed)).then_some(bytes)
    }

    /// Client bytes are held on a followed connection: the deadline starts with the first.
    fn hold_starts(&self, shared: &Shared, awaiting_upgrade: bool) {
        let Some(conn) = &self.conn else {
            return;
        };
        let starting = conn.borrow().phase != Phase::Holding;
        conn.borrow_mut().awaiting_upgrade = awaiting_upgrade;
        if starting {
            self.set_phase(Phase::Holding);
            self.arm_timeout(shared);
        }
    }

    fn hold_ends(&self) {
        if self.phase() == Some(Phase::Holding) {
            self.set_phase(Phase::Allowed);
        }
    }

    fn start_sniffing(&mut self, shared: &Shared, held: bool) {
        self.set_phase(Phase::Sniffing {
            held,
            after_timeout: false,
        });
        self.arm_timeout(shared);
    }

    /// Starts the connection's sniff timeout (`on_timeout` runs when it expires).
    fn arm_timeout(&self, shared: &Shared) {
        let deadline =
            now_ns().saturating_add(u64::from(shared.policy.sniff().timeout_ms) * 1_000_000);
        if let Some(conn) = &self.conn {
            self.waiting
                .borrow_mut()
                .add(self.context_id, deadline, conn.clone());
        }
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
        self.conn = Some(Rc::new(RefCell::new(Conn {
            phase: Phase::Allowed,
            dst,
            buffered: 0,
            requests: 1,
            awaiting_upgrade: false,
        })));

        // tls_inspector (when the listener has one) already read the SNI.
        if let Some(sni) =
            property_bytes(&["connection", "requested_server_name"]).filter(|s| !s.is_empty())
        {
            shared.metrics.sniff(SniffOutcome::InspectorSni);
            let name = classify_sni(&sni);
            let decision = judge(
                &shared,
                &Observed {
                    dst,
                    name: Some(&name),
                    source: NameSource::Sni,
                    proto: Proto::Tls,
                    filter: FilterKind::Network,
                    anomaly: None,
                    request: 1,
                },
            );
            return self.settle(decision.verdict);
        }
        if shared.policy.decide_early(dst.ip(), dst.port()).is_some() {
            // The name cannot change this decision: take it now, without holding a byte.
            let decision = judge(&shared, &Observed::nameless(dst, Proto::Other, None, 1));
            return self.settle(decision.verdict);
        }
        let held = shared.policy.sniff().hold_upstream;
        self.start_sniffing(&shared, held);
        if held {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let after_timeout = match self.phase() {
            Some(Phase::Sniffing { after_timeout, .. }) => after_timeout,
            Some(Phase::Allowed) if self.pipeline.is_none() => return Action::Continue,
            Some(Phase::Allowed | Phase::Holding) => false,
            _ => return Action::Pause,
        };
        let (Some(shared), Some(conn)) = (self.shared.clone(), self.conn.clone()) else {
            close();
            return Action::Pause;
        };
        if self.pipeline.is_some() {
            let Some(buffer) = self.held_bytes(data_size) else {
                log::error!("egress-guard: cannot read the held client bytes");
                self.refuse(&shared, Refusal::HeldBytesLost);
                return Action::Pause;
            };
            return match self.follow_client(&shared, &buffer, end_of_stream) {
                Applied::Forward => Action::Continue,
                Applied::Hold | Applied::Closed => Action::Pause,
            };
        }
        let dst = conn.borrow().dst;
        conn.borrow_mut().buffered = data_size;
        let buffer = match hostcalls::get_buffer(BufferType::DownstreamData, 0, data_size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("egress-guard: cannot read client bytes: {status:?}");
                return self.settle(Verdict::Deny);
            }
        };

        let max_bytes = usize::try_from(shared.policy.sniff().max_bytes).unwrap_or(usize::MAX);
        let sniffed = if buffer.is_empty() && end_of_stream {
            // The client closed without a byte: nothing was cut short, and there is no name.
            Sniffed::Other
        } else {
            sniff::sniff(&buffer, max_bytes)
        };
        if matches!(sniffed, Sniffed::NeedMore) && !end_of_stream {
            if after_timeout && !self.waiting.borrow().contains(self.context_id) {
                // Allowed on IP and port at the timeout, and now the client has begun a
                // ClientHello or request head: one more timeout to finish it, then it is denied
                // as incomplete, rather than held for ever.
                self.arm_timeout(&shared);
            }
            return Action::Pause;
        }
        let seen = observe(&sniffed);
        if after_timeout && seen.proto == Proto::Other && seen.anomaly.is_none() {
            // Allowed on IP and port at the timeout; bytes that carry no name change nothing.
            return self.settle(Verdict::Allow);
        }
        shared.metrics.sniff(seen.outcome);
        let decision = judge(
            &shared,
            &Observed {
                dst,
                name: seen.name.as_ref(),
                source: seen.source,
                proto: seen.proto,
                filter: FilterKind::Network,
                anomaly: seen.anomaly,
                request: 1,
            },
        );
        let action = self.settle(decision.verdict);
        if action == Action::Continue && seen.proto == Proto::Http {
            // Every later request and every response on this connection is followed too.
            let Outcome::Found(head) = http::parse_request_head(&buffer) else {
                // sniff() found this head; a parse that disagrees must not leave the rest of
                // the connection unchecked.
                self.refuse(
                    &shared,
                    Refusal::Malformed(sniff::Malformed::HttpNotARequest),
                );
                return Action::Pause;
            };
            self.pipeline = Some(Pipeline::after(&head, max_bytes));
            return match self.follow_client(&shared, &buffer, end_of_stream) {
                Applied::Forward => Action::Continue,
                Applied::Hold | Applied::Closed => Action::Pause,
            };
        }
        action
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        // Server bytes are never held: they are only followed, to know which response answers
        // an upgrade.
        let (Some(pipeline), Some(shared)) = (self.pipeline.as_mut(), self.shared.clone()) else {
            return Action::Continue;
        };
        let read = |start: usize, len: usize| {
            hostcalls::get_buffer(BufferType::UpstreamData, start, len)
                .ok()
                .flatten()
        };
        match pipeline.server_bytes(data_size, read) {
            ServerAction::Nothing => {}
            ServerAction::Release => {
                // The server left HTTP: the held bytes belong to the tunnel.
                let envoy_held = self.envoy_held;
                if self.held_bytes(envoy_held).is_none() {
                    log::warn!("egress-guard: cannot put back the bytes held for a tunnel");
                    self.refuse(&shared, Refusal::HeldBytesLost);
                    return Action::Continue;
                }
                self.envoy_held = 0;
                self.hold_ends();
                resume();
            }
            ServerAction::Recheck => {
                // The server stayed in HTTP: the held bytes are requests to check now.
                let envoy_held = self.envoy_held;
                let Some(buffer) = self.held_bytes(envoy_held) else {
                    log::warn!("egress-guard: cannot read the bytes held behind an upgrade");
                    self.refuse(&shared, Refusal::HeldBytesLost);
                    return Action::Continue;
                };
                if self.follow_client(&shared, &buffer, false) == Applied::Forward {
                    resume();
                }
            }
            ServerAction::Close(why) => {
                self.refuse(&shared, why);
            }
        }
        if self.pipeline.as_ref().is_some_and(Pipeline::is_tunnel) && self.stash.is_empty() {
            // Nothing more to follow.
            self.pipeline = None;
        }
        Action::Continue
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.waiting.borrow_mut().remove(self.context_id);
    }
}

/// What the sniffers' result means for the decision.
struct Seen {
    outcome: SniffOutcome,
    name: Option<NameClass>,
    source: NameSource,
    proto: Proto,
    anomaly: Option<Anomaly>,
}

fn observe(sniffed: &Sniffed) -> Seen {
    let seen = |outcome, name, source, proto, anomaly| Seen {
        outcome,
        name,
        source,
        proto,
        anomaly,
    };
    match sniffed {
        Sniffed::Tls { sni: Some(sni) } => seen(
            SniffOutcome::TlsSni,
            Some(classify_sni(sni.as_bytes())),
            NameSource::Sni,
            Proto::Tls,
            None,
        ),
        Sniffed::Tls { sni: None } => seen(
            SniffOutcome::TlsNoSni,
            None,
            NameSource::None,
            Proto::Tls,
            None,
        ),
        Sniffed::Http {
            host: Some(host), ..
        } => seen(
            SniffOutcome::HttpHost,
            Some(classify_authority(host.as_bytes())),
            NameSource::Host,
            Proto::Http,
            None,
        ),
        Sniffed::Http { host: None, .. } => seen(
            SniffOutcome::HttpNoHost,
            None,
            NameSource::None,
            Proto::Http,
            None,
        ),
        Sniffed::Other => seen(
            SniffOutcome::Other,
            None,
            NameSource::None,
            Proto::Other,
            None,
        ),
        Sniffed::Malformed(why) => seen(
            SniffOutcome::Malformed,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::Malformed(why.as_str())),
        ),
        Sniffed::TooLarge => seen(
            SniffOutcome::TooLarge,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::TooLarge),
        ),
        // The client half-closed before its ClientHello or request head was complete.
        Sniffed::NeedMore => seen(
            SniffOutcome::Malformed,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::Malformed("truncated")),
        ),
    }
}

/// Resolves a connection whose client stayed silent (or stalled mid-message) past
/// `sniff.timeout_ms`. Called from the root's tick with the connection's context made effective.
pub(crate) fn on_timeout(shared: &Shared, conn: &Rc<RefCell<Conn>>) {
    let (phase, dst, buffered) = {
        let c = conn.borrow();
        (c.phase, c.dst, c.buffered)
    };
    if phase == Phase::Holding {
        // Held bytes of a followed HTTP/1 connection: an unfinished request head, or bytes
        // behind an upgrade the server has not answered.
        let (requests, awaiting) = {
            let mut c = conn.borrow_mut();
            c.requests = c.requests.saturating_add(1);
            (c.requests, c.awaiting_upgrade)
        };
        shared.metrics.sniff(SniffOutcome::Timeout);
        let detail = if awaiting {
            "upgrade_unanswered"
        } else {
            "incomplete_at_timeout"
        };
        let observed =
            Observed::nameless(dst, Proto::Http, Some(Anomaly::Malformed(detail)), requests);
        judge(shared, &observed);
        conn.borrow_mut().phase = Phase::Denied;
        close();
        return;
    }
    let Phase::Sniffing { held, .. } = phase else {
        return;
    };
    shared.metrics.sniff(SniffOutcome::Timeout);
    // Bytes that started a ClientHello or request head and then stopped are not a silent client:
    // letting them through on IP and port would let a name be sent after the timeout.
    let anomaly = (buffered > 0).then_some(Anomaly::Malformed("incomplete_at_timeout"));
    let decision = judge(shared, &Observed::nameless(dst, Proto::Other, anomaly, 1));
    if decision.verdict == Verdict::Deny {
        conn.borrow_mut().phase = Phase::Denied;
        close();
        return;
    }
    conn.borrow_mut().phase = Phase::Sniffing {
        held: false,
        after_timeout: true,
    };
    if held {
        if let Err(status) = hostcalls::resume_downstream() {
            log::warn!("egress-guard: cannot resume a connection after its timeout: {status:?}");
        }
    }
}

/// A later request on a followed connection: asks the policy (`true`: allowed), or records a
/// refusal. Counted and logged either way.
fn check_later(shared: &Shared, conn: &Rc<RefCell<Conn>>, later: Later<'_>) -> bool {
    let (dst, request) = {
        let mut c = conn.borrow_mut();
        c.requests = c.requests.saturating_add(1);
        (c.dst, c.requests)
    };
    shared.metrics.sniff(SniffOutcome::HttpLaterRequest);
    match later {
        Later::Request(head) => {
            let name = head
                .host
                .as_deref()
                .map(|h| classify_authority(h.as_bytes()));
            let observed = Observed {
                dst,
                name: name.as_ref(),
                source: if name.is_some() {
                    NameSource::Host
                } else {
                    NameSource::None
                },
                proto: Proto::Http,
                filter: FilterKind::Network,
                anomaly: None,
                request,
            };
            judge(shared, &observed).verdict != Verdict::Deny
        }
        Later::Refused(why) => {
            let anomaly = match why {
                Refusal::TooLarge => Anomaly::TooLarge,
                other => Anomaly::Malformed(other.as_str()),
            };
            judge(
                shared,
                &Observed::nameless(dst, Proto::Http, Some(anomaly), request),
            );
            false
        }
    }
}

/// What the filter did with the held bytes of a followed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    /// Let them all go.
    Forward,
    /// Holds them (or some of them).
    Hold,
    /// Closed the connection.
    Closed,
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
