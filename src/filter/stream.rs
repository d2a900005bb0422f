//! The network filter: one context per downstream connection.
//!
//! At connection open it decides when the facts already decide it (a deny by IP/port, an SNI from
//! `tls_inspector`, a port no host rule applies to). Otherwise it holds the client's bytes (and,
//! with `sniff.hold_upstream`, the whole connection) until the SNI or Host is found, the bytes
//! turn out to be neither TLS nor HTTP, `sniff.max_bytes` is reached, or `sniff.timeout_ms`
//! passes; then it decides. A deny closes the downstream before one client byte is forwarded.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, BufferType, PeerType};

use super::metrics::SniffOutcome;
use super::report::{FilterKind, NameSource, Proto};
use super::root::{now_ns, Shared, Waiting};
use super::{destination, judge, property_bytes, Anomaly, Observed};
use crate::policy::name::{classify_authority, classify_sni, NameClass};
use crate::policy::{Reason, Verdict};
use crate::sniff::http;
use crate::sniff::pipeline::{Pipeline, Step, UpgradeAnswer};
use crate::sniff::{self, Outcome, Sniffed};

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Looking at the client's first bytes. `held`: the connection was paused at open and must be
    /// resumed when allowed from the tick. `after_timeout`: the timeout already allowed it on IP
    /// and port; the first bytes are still checked so a late name cannot slip past a deny rule.
    Sniffing { held: bool, after_timeout: bool },
    /// Decided: bytes flow.
    Allowed,
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
}

/// The per-connection context.
pub(crate) struct StreamFilter {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    waiting: Rc<RefCell<Waiting>>,
    conn: Option<Rc<RefCell<Conn>>>,
    /// On an allowed HTTP/1 connection: follows every later request so each is checked.
    pipeline: Option<Pipeline>,
    /// Requests seen on this HTTP/1 connection.
    requests: u32,
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
            requests: 0,
        }
    }

    fn phase(&self) -> Option<Phase> {
        self.conn.as_ref().map(|c| c.borrow().phase)
    }

    fn set_phase(&self, phase: Phase) {
        if let Some(conn) = &self.conn {
            conn.borrow_mut().phase = phase;
        }
        if !matches!(phase, Phase::Sniffing { .. }) {
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

    /// Checks every request head the buffer completes on an allowed HTTP/1 connection; lets the
    /// buffer go when all of it belongs to allowed requests, holds it while a head is incomplete.
    fn follow(&mut self, shared: &Shared, dst: SocketAddr, buffer: &[u8], eos: bool) -> Action {
        loop {
            let Some(pipeline) = self.pipeline.as_mut() else {
                return Action::Continue;
            };
            let (head, anomaly) = match pipeline.scan(buffer) {
                Step::Forward => {
                    pipeline.flushed();
                    return Action::Continue;
                }
                // A head cut short by the client's half-close will never complete.
                Step::Hold if eos && !pipeline.awaiting_upgrade() => {
                    (None, Some(Anomaly::Malformed("truncated")))
                }
                Step::Hold => return Action::Pause,
                Step::Head(head) => (Some(head), None),
                Step::Malformed(why) => (None, Some(Anomaly::Malformed(why.as_str()))),
                Step::TooLarge => (None, Some(Anomaly::TooLarge)),
            };
            self.requests = self.requests.saturating_add(1);
            shared.metrics.sniff(SniffOutcome::HttpLaterRequest);
            let name = head
                .as_ref()
                .and_then(|h| h.host.as_deref())
                .map(|h| classify_authority(h.as_bytes()));
            let decision = judge(
                shared,
                &Observed {
                    dst,
                    name: name.as_ref(),
                    source: if name.is_some() {
                        NameSource::Host
                    } else {
                        NameSource::None
                    },
                    proto: Proto::Http,
                    filter: FilterKind::Network,
                    anomaly,
                    request: self.requests,
                },
            );
            if decision.verdict == Verdict::Deny {
                return self.settle(Verdict::Deny);
            }
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
            Some(Phase::Allowed) => false,
            _ => return Action::Pause,
        };
        let (Some(shared), Some(conn)) = (self.shared.clone(), self.conn.clone()) else {
            close();
            return Action::Pause;
        };
        let dst = conn.borrow().dst;
        conn.borrow_mut().buffered = data_size;
        let buffer = match hostcalls::get_buffer(BufferType::DownstreamData, 0, data_size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::error!("egress-guard: cannot read client bytes: {status:?}");
                return self.settle(Verdict::Deny);
            }
        };
        if self.pipeline.is_some() {
            return self.follow(&shared, dst, &buffer, end_of_stream);
        }

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
            // Every later request on this connection is checked too.
            if let Outcome::Found(head) = http::parse_request_head(&buffer) {
                self.requests = 1;
                self.pipeline = Some(Pipeline::after(&head, max_bytes));
                return self.follow(&shared, dst, &buffer, end_of_stream);
            }
        }
        action
    }

    fn on_upstream_data(&mut self, data_size: usize, _end_of_stream: bool) -> Action {
        let Some(pipeline) = self.pipeline.as_mut().filter(|p| p.awaiting_upgrade()) else {
            return Action::Continue;
        };
        let start = match hostcalls::get_buffer(BufferType::UpstreamData, 0, data_size.min(12)) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log::warn!("egress-guard: cannot read the server's answer: {status:?}");
                return Action::Continue;
            }
        };
        match pipeline.server_answered(&start) {
            UpgradeAnswer::Tunnel { held: true } => {
                // The bytes held during the wait belong to the tunnel now.
                if let Err(status) = hostcalls::resume_downstream() {
                    log::warn!("egress-guard: cannot resume after an upgrade: {status:?}");
                }
            }
            UpgradeAnswer::StillHttp { held: true } => {
                // The client pipelined bytes behind an upgrade the server refused; they were
                // held unchecked and no callback will show them again: refuse them.
                if let (Some(shared), Some(conn)) = (self.shared.clone(), self.conn.clone()) {
                    let dst = conn.borrow().dst;
                    self.requests = self.requests.saturating_add(1);
                    let decision = judge(
                        &shared,
                        &Observed::nameless(
                            dst,
                            Proto::Http,
                            Some(Anomaly::Malformed("held_after_refused_upgrade")),
                            self.requests,
                        ),
                    );
                    self.settle(decision.verdict);
                }
            }
            UpgradeAnswer::Tunnel { held: false }
            | UpgradeAnswer::StillHttp { held: false }
            | UpgradeAnswer::Pending
            | UpgradeAnswer::NotWaiting => {}
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

fn close() {
    if let Err(status) = hostcalls::close_downstream() {
        log::warn!("egress-guard: cannot close the downstream connection: {status:?}");
    }
}
