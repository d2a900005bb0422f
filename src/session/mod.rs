//! One connection of the network filter, as a pure state machine (sans-I/O): events in — open,
//! client bytes, server bytes, timer — and actions out, with every decision and count reported
//! through [`Record`]. It decides what to hold, when to decide, follows every request and
//! response of a plaintext HTTP/1 connection ([`crate::sniff::pipeline`]) and keeps the
//! connection's deadline. The proxy-wasm adapter (`filter/stream.rs`) only translates hostcalls
//! into these calls and [`Action`]s into hostcalls, so everything here is tested natively.
//!
//! The life of a connection:
//!
//! - **Open** ([`Session::open`]): an SNI from `tls_inspector`, or a policy under which no name
//!   can change the decision for this IP and port, decides at once. Otherwise the session
//!   starts *sniffing*: it holds the client's bytes (with `sniff.hold_upstream`, the whole
//!   connection) until they say what they are, with a deadline of `sniff.timeout_ms`.
//! - **Client bytes** ([`Session::client`]): the whole held buffer each time. A ClientHello or
//!   request head decides; a connection that is neither is decided on IP and port. An allowed
//!   HTTP/1 connection is then *followed*: every later request is checked before its bytes go.
//! - **Server bytes** ([`Session::server`]): on a followed connection, matched to the requests
//!   they answer, so only an upgrade's own answer opens a tunnel.
//! - **Timer** ([`Session::timeout`]): a silent client is decided on IP and port (and its first
//!   bytes are still checked afterwards, with one more deadline); held bytes that stopped
//!   part-way, or wait behind an unanswered upgrade, close the connection.

mod labels;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

pub use crate::sniff::pipeline::Held;
pub use labels::{EchOutcome, FilterKind, NameSource, PinOutcome, Proto, SniffOutcome};

use crate::policy::name::{classify_authority, classify_sni, MalformedName, NameClass};
use crate::policy::pin::{ip_host, Target};
use crate::policy::{Decision, EchPolicy, Facts, NameFact, Policy, Reason, Verdict};
use crate::sniff::http::{parse_request_head, KNOWN_METHODS};
use crate::sniff::pipeline::{Action as Follow, Later, Pipeline, Refusal, ServerAction};
use crate::sniff::response::Unframed;
use crate::sniff::{Malformed, Outcome, Sniffed, Sniffer};

/// What the adapter must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the client's bytes (or, at open, the connection) go on.
    Continue,
    /// Hold them (at open: hold the whole connection).
    Pause,
    /// Let the first this-many bytes of the client's buffer go; hold the rest (the adapter
    /// keeps it and hands it back, in front, with the next buffer).
    Split(usize),
    /// Close the connection (the decision was recorded); hold everything meanwhile.
    Close,
    /// From outside a client callback: let the held client bytes go.
    Resume,
    /// From the server side: the held client bytes must be checked now — call
    /// [`Session::client`] with them.
    Recheck,
    /// Nothing to do.
    Nothing,
}

/// Where the session's decisions and counts go (the adapter: counters and the decision log).
pub trait Record {
    /// One sniff outcome to count.
    fn sniffed(&mut self, outcome: SniffOutcome);
    /// One decision to count (and log, as the policy says).
    fn judged(&mut self, judged: &Judged<'_>);
    /// Sends the connection or request to `target` (the adapter sets Envoy's filter state);
    /// `false` if the proxy refused. Called only while the upstream is still open to choice
    /// ([`PinWindow::Open`], [`PinWindow::Routed`]); under `Routed`, a request that passes
    /// unpinned is sent to its original destination, `target.host` its IP literal.
    fn pin(&mut self, target: &Target<'_>) -> bool;
}

/// Whether a decision that must be pinned ([`Decision::pin`]) still can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinWindow<'a> {
    /// The upstream is not chosen yet: at open (an SNI from `tls_inspector`), or while the
    /// session holds the connection it paused at open (`sniff.hold_upstream`).
    Open,
    /// The upstream is chosen (the connection went on at open, or at a sniff timeout), or the
    /// filter cannot pin at all (an HTTP request whose route goes to another cluster than
    /// `pin_cluster`): a decision that must be pinned is denied.
    Closed,
    /// A later request on a connection pinned to this name: it may carry only that name.
    PinnedTo(&'a str),
    /// An HTTP request whose route goes to the policy's `pin_cluster` (the pinned HTTP-filter
    /// config): the filter says where *every* request that passes goes — a pinned one to its
    /// name, any other to its original destination (as an IP literal).
    Routed,
}

/// The pin window of an HTTP request whose route goes to `route_cluster` (Envoy's
/// `xds.cluster_name`; `None` when the proxy cannot say): [`PinWindow::Routed`] when that is
/// the policy's `pin_cluster`, else [`PinWindow::Closed`] — a request that must be pinned is
/// then refused (`pin_unavailable`), since its route leads to the client's chosen address.
pub fn request_window(policy: &Policy, route_cluster: Option<&str>) -> PinWindow<'static> {
    if route_cluster == Some(policy.pin_cluster()) {
        PinWindow::Routed
    } else {
        PinWindow::Closed
    }
}

/// What the proxy says about the upstream of a connection or request, read when it ends
/// (its access-log callback): whether an upstream host was chosen (`upstream.address`), and
/// Envoy's response flags (`response.flags`, [`response_flags`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpstreamEnd {
    /// An upstream host was chosen.
    pub host: bool,
    /// Envoy's response flags, as the `response.flags` bit mask.
    pub flags: u64,
}

/// The bits of Envoy's `response.flags` that say a connection or request found no upstream host
/// for its name (Envoy's `CoreResponseFlag` order; checked on Envoy 1.36 to 1.40).
pub mod response_flags {
    /// `UH`: `tcp_proxy` found no host in its cluster (the dynamic forward proxy cluster has
    /// none for a name that did not resolve).
    pub const NO_HEALTHY_UPSTREAM: u64 = 1 << 1;
    /// `NC`: the cluster does not exist.
    pub const NO_CLUSTER_FOUND: u64 = 1 << 24;
    /// `DF`: the HTTP dynamic forward proxy could not resolve the name.
    pub const DNS_RESOLUTION_FAILED: u64 = 1 << 26;
    /// Any of them.
    pub const NO_HOST: u64 = NO_HEALTHY_UPSTREAM | NO_CLUSTER_FOUND | DNS_RESOLUTION_FAILED;
}

/// How a connection or request pinned to a name ended, when that is worth counting and
/// logging: [`PinOutcome::Unresolved`] when Envoy never chose an upstream host and says it had
/// none (the name did not resolve, or the pin cluster has no host or does not exist). A
/// connection the client gave up on before Envoy chose (no flag), an unpinned one, or one that
/// reached a host (whatever happened then) gives `None`.
pub fn pin_end(pinned: bool, end: UpstreamEnd) -> Option<PinOutcome> {
    (pinned && !end.host && end.flags & response_flags::NO_HOST != 0)
        .then_some(PinOutcome::Unresolved)
}

/// The name a decision sends its connection or request to, if it is pinned: `decision.pin`
/// and a well-formed name (a pinned decision always has one).
pub fn pinned_name<'a>(decision: &Decision, name: Option<&'a NameClass>) -> Option<&'a str> {
    match name {
        Some(NameClass::Name(name)) if decision.pin => Some(name.as_str()),
        _ => None,
    }
}

/// What the filter knows about one connection or request when it asks the policy.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The original destination.
    pub dst: SocketAddr,
    /// The name (SNI, Host or `:authority`) after normalisation, if one was seen.
    pub name: Option<&'a NameClass>,
    /// Where the name came from.
    pub source: NameSource,
    /// The protocol seen.
    pub proto: Proto,
    /// Which filter asks.
    pub filter: FilterKind,
    /// A finding that overrides the name: the input was malformed or too large.
    pub anomaly: Option<Anomaly>,
    /// Which request on an HTTP/1 connection this is (1 for the first, or for anything else).
    pub request: u32,
    /// Whether a decision that must be pinned still can be.
    pub pin: PinWindow<'a>,
    /// The ClientHello carried `encrypted_client_hello` (real or GREASE ECH): the name is its
    /// outer SNI.
    pub ech: bool,
}

impl Observed<'static> {
    /// A network-filter connection decided without a name: on IP and port, or on an anomaly.
    pub fn nameless(
        dst: SocketAddr,
        proto: Proto,
        anomaly: Option<Anomaly>,
        request: u32,
    ) -> Observed<'static> {
        Observed {
            dst,
            name: None,
            source: NameSource::None,
            proto,
            filter: FilterKind::Network,
            anomaly,
            request,
            // Nameless: never pinned.
            pin: PinWindow::Closed,
            ech: false,
        }
    }
}

/// Input the filter could not take a name from, and must not let a host rule allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anomaly {
    /// Broke the rules of its protocol, or carried a malformed name; the label says how.
    Malformed(&'static str),
    /// Larger than `sniff.max_bytes` before a name could be found.
    TooLarge,
}

/// One decision, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    /// The decision.
    pub decision: Decision,
    /// What it was taken on.
    pub observed: &'a Observed<'a>,
    /// Why the input was malformed, or the policy's own reason for a later request.
    pub detail: Option<&'static str>,
    /// The malformed kind to count (`egress_guard_malformed_total`), if any.
    pub malformed: Option<&'static str>,
    /// What pinning did, when the decision had to be pinned (or the connection already was).
    pub pin: Option<PinOutcome>,
    /// What the `ech` setting did, when the ClientHello carried ECH.
    pub ech: Option<EchOutcome>,
}

impl Judged<'_> {
    /// The normalised name, when the observation carried a well-formed one.
    pub fn name(&self) -> Option<&str> {
        match self.observed.name {
            Some(NameClass::Name(name)) => Some(name.as_str()),
            _ => None,
        }
    }

    /// Where the logged name came from (`none` when no name is logged).
    pub fn name_source(&self) -> NameSource {
        if self.observed.name.is_some() {
            self.observed.source
        } else {
            NameSource::None
        }
    }
}

/// Every label a decision's malformed kind can take (`egress_guard_malformed_total{kind}`), so
/// that the adapter defines each counter up front.
pub fn malformed_kinds() -> impl Iterator<Item = &'static str> {
    let parsers = Malformed::ALL.iter().map(|m| m.as_str());
    let names = MalformedName::ALL.iter().map(|m| m.as_str());
    let responses = Unframed::ALL.iter().map(|m| m.as_str());
    let held = Held::ALL.iter().map(|m| m.as_str());
    parsers.chain(names).chain(responses).chain(held)
}

/// Asks the policy about `seen` and records the decision.
pub fn judge<R: Record + ?Sized>(policy: &Policy, seen: &Observed<'_>, rec: &mut R) -> Decision {
    let mut detail = None;
    let name = match (seen.anomaly, seen.name) {
        (Some(Anomaly::Malformed(what)), _) => {
            detail = Some(what);
            NameFact::Malformed
        }
        (Some(Anomaly::TooLarge), _) => NameFact::TooLarge,
        (None, Some(NameClass::Name(name))) => NameFact::Name(name),
        (None, Some(NameClass::Malformed(kind))) => {
            detail = Some(kind.as_str());
            NameFact::Malformed
        }
        // An IP literal is not a name: the destination IP already is that fact.
        (None, Some(NameClass::IpLiteral(_)) | None) => NameFact::Absent,
    };
    let malformed = detail;
    let mut decision = policy.decide(&Facts {
        ip: seen.dst.ip(),
        port: seen.dst.port(),
        name,
    });
    if let (None, Some(NameClass::IpLiteral(literal)), true) =
        (seen.anomaly, seen.name, decision.verdict != Verdict::Deny)
    {
        // An IP literal as the name (SNI, Host, a CONNECT authority) is where a forward proxy
        // would connect: the deny rules apply to it too (`CONNECT 169.254.169.254:80` through
        // an allowed proxy). Only deny rules: an allow rule speaks for the destination only.
        let as_destination = policy.decide(&Facts {
            ip: *literal,
            port: seen.dst.port(),
            name: NameFact::Absent,
        });
        if as_destination.reason == Reason::DenyRule {
            decision = as_destination;
        }
    }
    let ech = seen.ech.then(|| match policy.ech() {
        EchPolicy::Allow => EchOutcome::Allowed,
        EchPolicy::Deny => EchOutcome::Denied,
    });
    if ech == Some(EchOutcome::Denied)
        && !matches!(
            decision.reason,
            Reason::DenyRule | Reason::Malformed | Reason::TooLarge
        )
    {
        // `ech: deny`: denied in every mode, before pinning is even considered. A deny rule or
        // a malformed name keeps its own, stronger reason.
        decision = Decision::new(Verdict::Deny, Reason::Ech, None);
    }
    let pinned_name = match name {
        NameFact::Name(name) => Some(name),
        _ => None,
    };
    let pin = settle_pin(policy, seen, pinned_name, &mut decision, rec);
    if seen.request == 1 && pin.is_some_and(|p| p != PinOutcome::Pinned) {
        // A connection that must be pinned and cannot be is never let out to the client's IP:
        // its own reason, and how pinning failed. (A later request gets `later_request`, with
        // `pin_unavailable` as the detail, below.)
        detail = detail.or(pin.map(PinOutcome::as_str));
    }
    if seen.request > 1 && decision.verdict != Verdict::Allow && detail.is_none() {
        // A later request the policy refuses closes a connection already allowed: its own
        // reason, with the policy's reason as the detail.
        detail = Some(decision.reason.as_str());
        decision.reason = Reason::LaterRequest;
    }
    rec.judged(&Judged {
        decision,
        observed: seen,
        detail,
        malformed,
        pin,
        ech,
    });
    decision
}

/// Applies pinning to `decision` (`policy::pin` says what is pinned): pins it while the
/// upstream is open to choice, denies it (`pin_unavailable`, in every mode) when it must be
/// pinned and cannot be, and holds a later request on a pinned connection to the pinned name.
/// Under [`PinWindow::Routed`] it also sends a request that passes unpinned to its original
/// destination (denied if the proxy refuses). Afterwards `decision.pin` is true exactly when
/// the connection goes to its name.
fn settle_pin<R: Record + ?Sized>(
    policy: &Policy,
    seen: &Observed<'_>,
    name: Option<&str>,
    decision: &mut Decision,
    rec: &mut R,
) -> Option<PinOutcome> {
    let outcome = match seen.pin {
        PinWindow::PinnedTo(bound) => {
            if name == Some(bound) {
                // Carried to the pinned name, as the first request was.
                decision.pin = decision.verdict.passes();
                return None;
            }
            if decision.verdict == Verdict::Deny {
                decision.pin = false;
                return None;
            }
            // Another name (or none) would reach the pinned name's address: on a shared front
            // end, another site.
            PinOutcome::OtherName
        }
        PinWindow::Routed if !decision.pin => {
            if decision.verdict == Verdict::Deny {
                return None;
            }
            // Every request on this route goes through the forward proxy: one that passes
            // unpinned goes to its original destination, named by its IP.
            let host = ip_host(seen.dst.ip());
            let target = Target {
                cluster: policy.pin_cluster(),
                host: &host,
                port: seen.dst.port(),
            };
            if rec.pin(&target) {
                return None;
            }
            PinOutcome::Failed
        }
        _ if !decision.pin => return None,
        PinWindow::Closed => PinOutcome::Unavailable,
        PinWindow::Open | PinWindow::Routed => match name {
            Some(host) => {
                let target = Target {
                    cluster: policy.pin_cluster(),
                    host,
                    port: seen.dst.port(),
                };
                if rec.pin(&target) {
                    PinOutcome::Pinned
                } else {
                    PinOutcome::Failed
                }
            }
            // A pinned decision always has a name; without one there is nothing to pin to.
            None => PinOutcome::Failed,
        },
    };
    if outcome != PinOutcome::Pinned {
        *decision = Decision::new(Verdict::Deny, Reason::PinUnavailable, decision.rule);
    }
    Some(outcome)
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Looking at the client's first bytes. `held`: the connection was paused at open and must
    /// be resumed when allowed from the timer. `after_timeout`: the timeout already allowed it
    /// on IP and port; the first bytes are still checked so a late name cannot slip past a deny
    /// rule.
    Sniffing { held: bool, after_timeout: bool },
    /// Allowed at open on IP and port, under a policy with deny CIDRs: the first bytes are read
    /// only for an IP literal sent as the name, which the deny rules may refuse; anything else
    /// leaves the decision as it is.
    Peeking,
    /// Decided: bytes flow (on HTTP/1, each later request is checked before its bytes go).
    Allowed,
    /// An allowed HTTP/1 connection holding client bytes: a later request head is incomplete,
    /// or bytes wait behind an unanswered upgrade.
    Holding { awaiting_upgrade: bool },
    /// Decided: closed.
    Denied,
}

/// One connection of the network filter.
#[derive(Debug, Clone)]
pub struct Session {
    dst: SocketAddr,
    phase: Phase,
    /// When [`Session::timeout`] has something to do (ns, the proxy's clock).
    deadline: Option<u64>,
    /// Client bytes held while sniffing.
    buffered: usize,
    /// Requests checked on this HTTP/1 connection (the first included).
    requests: u32,
    /// On an allowed HTTP/1 connection: follows every later request and every response.
    pipeline: Option<Pipeline>,
    /// The first bytes' parse so far, kept between calls (work linear in the bytes held).
    sniffer: Sniffer,
    /// The name this connection is pinned to: later requests must carry it.
    pinned: Option<String>,
}

impl Session {
    /// A new connection to `dst`; `inspector_sni`: the SNI `tls_inspector` read, if any.
    /// Returns [`Action::Continue`], [`Action::Pause`] (hold the whole connection) or
    /// [`Action::Close`].
    pub fn open<R: Record + ?Sized>(
        policy: &Policy,
        dst: SocketAddr,
        inspector_sni: Option<&[u8]>,
        now_ns: u64,
        rec: &mut R,
    ) -> (Session, Action) {
        Session::open_with_clock(policy, dst, inspector_sni, || now_ns, rec)
    }

    /// [`Session::open`], reading the clock (`now_ns`) only if the session sets a deadline: a
    /// connection decided at open (on tls_inspector's SNI, or on its IP and port) never does, and
    /// the filter's clock is a hostcall.
    pub fn open_with_clock<R: Record + ?Sized>(
        policy: &Policy,
        dst: SocketAddr,
        inspector_sni: Option<&[u8]>,
        now_ns: impl FnOnce() -> u64,
        rec: &mut R,
    ) -> (Session, Action) {
        let mut session = Session {
            dst,
            phase: Phase::Allowed,
            deadline: None,
            buffered: 0,
            requests: 1,
            pipeline: None,
            sniffer: Sniffer::new(),
            pinned: None,
        };
        // With `ech: deny` the ClientHello itself must be read: tls_inspector does not say
        // whether it carried ECH, so neither its SNI nor an allow on IP and port decides at open.
        let ech_deny = policy.ech() == EchPolicy::Deny;
        if let Some(sni) = inspector_sni.filter(|s| !s.is_empty() && !ech_deny) {
            rec.sniffed(SniffOutcome::InspectorSni);
            let name = classify_sni(sni);
            let seen = Observed {
                dst,
                name: Some(&name),
                source: NameSource::Sni,
                proto: Proto::Tls,
                filter: FilterKind::Network,
                anomaly: None,
                request: 1,
                // tcp_proxy has not picked its upstream yet.
                pin: PinWindow::Open,
                ech: false,
            };
            let decision = judge(policy, &seen, rec);
            session.bind(&decision, Some(&name));
            let action = session.settle(decision.verdict);
            return (session, action);
        }
        let early = policy.decide_early(dst.ip(), dst.port());
        if let Some(early) = early.filter(|early| !ech_deny || !early.verdict.passes()) {
            // No name can change this decision: take it now, without holding a byte.
            let seen = Observed::nameless(dst, Proto::Other, None, 1);
            let verdict = judge(policy, &seen, rec).verdict;
            let action = session.settle(verdict);
            if early.verdict != Verdict::Deny && policy.has_deny_cidrs() {
                // Except that an IP literal sent as the name (an SNI, a Host, a CONNECT
                // authority) meets the deny rules: the first bytes are still looked at, without
                // holding the connection.
                session.phase = Phase::Peeking;
            }
            return (session, action);
        }
        // An allow on IP and port read only for ECH (`ech: deny`) is never pinned: holding the
        // upstream would gain nothing, and a server-first protocol would wait for the timeout.
        let held = policy.sniff().hold_upstream && early.is_none();
        session.phase = Phase::Sniffing {
            held,
            after_timeout: false,
        };
        session.deadline = Some(deadline(policy, now_ns()));
        (
            session,
            if held {
                Action::Pause
            } else {
                Action::Continue
            },
        )
    }

    /// When [`Session::timeout`] should run next, if ever.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// The original destination.
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// Whether the client's bytes need not be looked at: the connection is allowed and not
    /// followed (the adapter lets them go without reading them).
    pub fn passes_client_bytes(&self) -> bool {
        self.phase == Phase::Allowed && self.pipeline.is_none()
    }

    /// Whether the connection was closed by a decision.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Denied
    }

    /// Whether server bytes matter ([`Session::server`] has something to follow).
    pub fn following(&self) -> bool {
        self.pipeline.is_some()
    }

    /// The client's bytes: `buf` is everything held so far (with what an earlier
    /// [`Action::Split`] kept back, in front). `eos`: the client half-closed. Returns
    /// [`Action::Continue`], [`Action::Pause`], [`Action::Split`] or [`Action::Close`].
    pub fn client<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        buf: &[u8],
        eos: bool,
        now_ns: u64,
        rec: &mut R,
    ) -> Action {
        match self.phase {
            Phase::Sniffing { after_timeout, .. } => {
                self.sniffing(policy, buf, eos, after_timeout, now_ns, rec)
            }
            Phase::Peeking => self.peek(policy, buf, eos, now_ns, rec),
            Phase::Allowed | Phase::Holding { .. } => self.follow(policy, buf, eos, now_ns, rec),
            Phase::Denied => Action::Pause,
        }
    }

    /// The first bytes of a connection allowed at open: only an IP-literal name can deny it.
    fn peek<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        buf: &[u8],
        eos: bool,
        now_ns: u64,
        rec: &mut R,
    ) -> Action {
        let max_bytes = usize::try_from(policy.sniff().max_bytes).unwrap_or(usize::MAX);
        let sniffed = self.sniffer.feed(buf, max_bytes);
        if matches!(sniffed, Sniffed::NeedMore) && !could_name_an_ip(buf) {
            // Not a ClientHello, nor a request with a method a proxy acts on: nothing in it can
            // change the decision, and it must not wait (a text protocol's first line).
            return self.settle(Verdict::Allow);
        }
        if matches!(sniffed, Sniffed::NeedMore) && !eos {
            if self.deadline.is_none() {
                self.deadline = Some(deadline(policy, now_ns));
            }
            return Action::Pause;
        }
        let seen = observe(&sniffed);
        if seen.anomaly.is_some() {
            // Malformed or too large: denied here as everywhere (a head garbled so that a proxy
            // reads it and the filter does not would otherwise carry an IP past the deny rules).
            rec.sniffed(seen.outcome);
            let verdict = judge(policy, &seen.observed(self.dst), rec).verdict;
            return self.settle(verdict);
        }
        let Some(NameClass::IpLiteral(literal)) = seen.name else {
            return self.settle(Verdict::Allow);
        };
        let as_destination = policy.decide(&Facts {
            ip: literal,
            port: self.dst.port(),
            name: NameFact::Absent,
        });
        if as_destination.reason != Reason::DenyRule {
            return self.settle(Verdict::Allow);
        }
        rec.sniffed(seen.outcome);
        let verdict = judge(policy, &seen.observed(self.dst), rec).verdict;
        self.settle(verdict)
    }

    /// `len` bytes from the server; `read(start, len)` returns some of them (or `None` if the
    /// host cannot say). Returns [`Action::Nothing`], [`Action::Resume`] (the held client bytes
    /// belong to a tunnel now), [`Action::Recheck`] or [`Action::Close`].
    pub fn server<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        len: usize,
        read: impl FnMut(usize, usize) -> Option<Vec<u8>>,
        rec: &mut R,
    ) -> Action {
        let Some(pipeline) = self.pipeline.as_mut() else {
            return Action::Nothing;
        };
        let action = match pipeline.server_bytes(len, read) {
            ServerAction::Nothing => Action::Nothing,
            ServerAction::Release => {
                self.hold_ends();
                Action::Resume
            }
            ServerAction::Recheck => Action::Recheck,
            ServerAction::Close(why) => return self.refuse(policy, why, rec),
        };
        if self.pipeline.as_ref().is_some_and(Pipeline::is_tunnel) {
            // Nothing more to follow.
            self.pipeline = None;
        }
        action
    }

    /// The timer fired at `now_ns`. Returns [`Action::Nothing`], [`Action::Resume`] (a held
    /// connection allowed on IP and port) or [`Action::Close`].
    pub fn timeout<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        now_ns: u64,
        rec: &mut R,
    ) -> Action {
        if self.deadline.is_none_or(|d| d > now_ns) {
            return Action::Nothing;
        }
        self.deadline = None;
        match self.phase {
            Phase::Holding { awaiting_upgrade } => {
                rec.sniffed(SniffOutcome::Timeout);
                self.requests = self.requests.saturating_add(1);
                let held = if awaiting_upgrade {
                    Held::UpgradeUnanswered
                } else {
                    Held::IncompleteAtTimeout
                };
                let anomaly = Some(Anomaly::Malformed(held.as_str()));
                judge(
                    policy,
                    &Observed::nameless(self.dst, Proto::Http, anomaly, self.requests),
                    rec,
                );
                self.phase = Phase::Denied;
                Action::Close
            }
            Phase::Sniffing { held, .. } => {
                rec.sniffed(SniffOutcome::Timeout);
                // Bytes that started a ClientHello or request head and then stopped are not a
                // silent client: letting them through on IP and port would let a name be sent
                // after the timeout.
                let anomaly = (self.buffered > 0)
                    .then_some(Anomaly::Malformed(Held::IncompleteAtTimeout.as_str()));
                let seen = Observed::nameless(self.dst, Proto::Other, anomaly, 1);
                if judge(policy, &seen, rec).verdict == Verdict::Deny {
                    self.phase = Phase::Denied;
                    return Action::Close;
                }
                self.phase = Phase::Sniffing {
                    held: false,
                    after_timeout: true,
                };
                if held {
                    Action::Resume
                } else {
                    Action::Nothing
                }
            }
            Phase::Peeking => {
                // The first bytes never finished a ClientHello or request head: the decision
                // taken at open stands, and what was held goes.
                self.phase = Phase::Allowed;
                Action::Resume
            }
            Phase::Allowed | Phase::Denied => Action::Nothing,
        }
    }

    /// Closes a followed connection for a reason no policy can override (counted and logged):
    /// for the adapter when the proxy cannot hand back held bytes.
    pub fn refuse<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        why: Refusal,
        rec: &mut R,
    ) -> Action {
        check_later(
            policy,
            self.dst,
            self.pinned.as_deref(),
            &mut self.requests,
            Later::Refused(why),
            rec,
        );
        self.phase = Phase::Denied;
        self.deadline = None;
        Action::Close
    }

    fn sniffing<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        buf: &[u8],
        eos: bool,
        after_timeout: bool,
        now_ns: u64,
        rec: &mut R,
    ) -> Action {
        self.buffered = buf.len();
        let max_bytes = usize::try_from(policy.sniff().max_bytes).unwrap_or(usize::MAX);
        let sniffed = if buf.is_empty() && eos {
            // The client closed without a byte: nothing was cut short, and there is no name.
            Sniffed::Other
        } else {
            self.sniffer.feed(buf, max_bytes)
        };
        if matches!(sniffed, Sniffed::NeedMore) && !eos {
            if after_timeout && self.deadline.is_none() {
                // Allowed on IP and port at the timeout, and now the client has begun a
                // ClientHello or request head: one more timeout to finish it, then it is denied
                // as incomplete, rather than held for ever.
                self.deadline = Some(deadline(policy, now_ns));
            }
            return Action::Pause;
        }
        let seen = observe(&sniffed);
        if after_timeout && seen.proto == Proto::Other && seen.anomaly.is_none() {
            // Allowed on IP and port at the timeout; bytes that carry no name change nothing.
            return self.settle(Verdict::Allow);
        }
        rec.sniffed(seen.outcome);
        let mut observed = seen.observed(self.dst);
        if matches!(
            self.phase,
            Phase::Sniffing {
                held: true,
                after_timeout: false
            }
        ) {
            // Held since open: tcp_proxy has not picked its upstream yet.
            observed.pin = PinWindow::Open;
        }
        let decision = judge(policy, &observed, rec);
        self.bind(&decision, seen.name.as_ref());
        let verdict = decision.verdict;
        let action = self.settle(verdict);
        if action != Action::Continue || seen.proto != Proto::Http {
            return action;
        }
        // Every later request and every response on this connection is followed too.
        let Outcome::Found(head) = parse_request_head(buf) else {
            // sniff() found this head; a parse that disagrees must not leave the rest of the
            // connection unchecked.
            return self.refuse(policy, Refusal::Malformed(Malformed::HttpNotARequest), rec);
        };
        self.pipeline = Some(Pipeline::after(&head, max_bytes));
        self.follow(policy, buf, eos, now_ns, rec)
    }

    fn follow<R: Record + ?Sized>(
        &mut self,
        policy: &Policy,
        buf: &[u8],
        eos: bool,
        now_ns: u64,
        rec: &mut R,
    ) -> Action {
        let Session {
            pipeline,
            dst,
            requests,
            pinned,
            ..
        } = self;
        let Some(pipeline) = pipeline.as_mut() else {
            return Action::Continue;
        };
        let dst = *dst;
        let pinned = pinned.as_deref();
        let action = pipeline.client_bytes(buf, eos, |later| {
            check_later(policy, dst, pinned, requests, later, rec)
        });
        let awaiting_upgrade = pipeline.awaiting_upgrade();
        match action {
            Follow::Forward => {
                self.hold_ends();
                Action::Continue
            }
            Follow::Split(n) => {
                self.hold_starts(policy, awaiting_upgrade, now_ns);
                Action::Split(n)
            }
            Follow::Hold => {
                self.hold_starts(policy, awaiting_upgrade, now_ns);
                Action::Pause
            }
            Follow::Close => {
                self.phase = Phase::Denied;
                self.deadline = None;
                Action::Close
            }
        }
    }

    /// Remembers the name a pinned connection is bound to.
    fn bind(&mut self, decision: &Decision, name: Option<&NameClass>) {
        self.pinned = pinned_name(decision, name).map(str::to_owned);
    }

    /// The name this connection is pinned to, if it is.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// Applies a verdict taken on the client's bytes or at open.
    fn settle(&mut self, verdict: Verdict) -> Action {
        self.deadline = None;
        if verdict == Verdict::Deny {
            self.phase = Phase::Denied;
            Action::Close
        } else {
            self.phase = Phase::Allowed;
            Action::Continue
        }
    }

    /// Client bytes are held on a followed connection: the deadline starts with the first.
    fn hold_starts(&mut self, policy: &Policy, awaiting_upgrade: bool, now_ns: u64) {
        if !matches!(self.phase, Phase::Holding { .. }) {
            self.deadline = Some(deadline(policy, now_ns));
        }
        self.phase = Phase::Holding { awaiting_upgrade };
    }

    fn hold_ends(&mut self) {
        if matches!(self.phase, Phase::Holding { .. }) {
            self.phase = Phase::Allowed;
            self.deadline = None;
        }
    }
}

/// Whether unfinished first bytes may still turn out to carry a name: a TLS handshake record, or
/// the start of a request with a well-known method (what a forward proxy acts on).
fn could_name_an_ip(buf: &[u8]) -> bool {
    if buf.first() == Some(&0x16) {
        return true;
    }
    // Servers skip blank lines before a request line (RFC 9112 §2.2): so must this check.
    let lead = buf
        .iter()
        .take_while(|&&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    let buf = buf.get(lead..).unwrap_or_default();
    if buf.is_empty() {
        return true;
    }
    let token = buf.split(|&b| b == b' ').next().unwrap_or_default();
    let complete = token.len() < buf.len();
    KNOWN_METHODS.iter().any(|m| {
        let m = m.as_bytes();
        if complete {
            m == token
        } else {
            m.starts_with(token)
        }
    })
}

fn deadline(policy: &Policy, now_ns: u64) -> u64 {
    now_ns.saturating_add(u64::from(policy.sniff().timeout_ms).saturating_mul(1_000_000))
}

/// A later request on a followed connection: asks the policy (`true`: allowed), or records a
/// refusal. Counted and logged either way.
fn check_later<R: Record + ?Sized>(
    policy: &Policy,
    dst: SocketAddr,
    pinned: Option<&str>,
    requests: &mut u32,
    later: Later<'_>,
    rec: &mut R,
) -> bool {
    *requests = requests.saturating_add(1);
    rec.sniffed(SniffOutcome::HttpLaterRequest);
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
                request: *requests,
                // A pinned connection carries only requests for its name; on any other, the
                // upstream was chosen long ago.
                pin: pinned.map_or(PinWindow::Closed, PinWindow::PinnedTo),
                ech: false,
            };
            judge(policy, &observed, rec).verdict != Verdict::Deny
        }
        Later::Refused(why) => {
            let anomaly = match why {
                Refusal::TooLarge => Anomaly::TooLarge,
                other => Anomaly::Malformed(other.as_str()),
            };
            let observed = Observed::nameless(dst, Proto::Http, Some(anomaly), *requests);
            judge(policy, &observed, rec);
            false
        }
    }
}

/// What a sniff result means for the decision.
struct Seen {
    outcome: SniffOutcome,
    name: Option<NameClass>,
    source: NameSource,
    proto: Proto,
    anomaly: Option<Anomaly>,
    /// A ClientHello carrying `encrypted_client_hello`.
    ech: bool,
}

impl Seen {
    /// What the policy is asked about the connection's first request or message.
    fn observed(&self, dst: SocketAddr) -> Observed<'_> {
        Observed {
            dst,
            name: self.name.as_ref(),
            source: self.source,
            proto: self.proto,
            filter: FilterKind::Network,
            anomaly: self.anomaly,
            request: 1,
            pin: PinWindow::Closed,
            ech: self.ech,
        }
    }
}

fn observe(sniffed: &Sniffed) -> Seen {
    let seen = |outcome, name, source, proto, anomaly| Seen {
        outcome,
        name,
        source,
        proto,
        anomaly,
        ech: false,
    };
    let ech = matches!(sniffed, Sniffed::Tls(hello) if hello.ech);
    let name = match sniffed {
        Sniffed::Tls(hello) => hello.sni.as_ref(),
        Sniffed::Http(head) => head.host.as_ref(),
        _ => None,
    };
    let mut seen = match (sniffed, name) {
        (Sniffed::Tls(_), Some(sni)) => seen(
            SniffOutcome::TlsSni,
            Some(classify_sni(sni.as_bytes())),
            NameSource::Sni,
            Proto::Tls,
            None,
        ),
        (Sniffed::Tls(_), None) => seen(
            SniffOutcome::TlsNoSni,
            None,
            NameSource::None,
            Proto::Tls,
            None,
        ),
        (Sniffed::Http(_), Some(host)) => seen(
            SniffOutcome::HttpHost,
            Some(classify_authority(host.as_bytes())),
            NameSource::Host,
            Proto::Http,
            None,
        ),
        (Sniffed::Http(_), None) => seen(
            SniffOutcome::HttpNoHost,
            None,
            NameSource::None,
            Proto::Http,
            None,
        ),
        (Sniffed::Other, _) => seen(
            SniffOutcome::Other,
            None,
            NameSource::None,
            Proto::Other,
            None,
        ),
        (Sniffed::Malformed(why), _) => seen(
            SniffOutcome::Malformed,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::Malformed(why.as_str())),
        ),
        (Sniffed::TooLarge, _) => seen(
            SniffOutcome::TooLarge,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::TooLarge),
        ),
        // The client half-closed before its ClientHello or request head was complete.
        (Sniffed::NeedMore, _) => seen(
            SniffOutcome::Malformed,
            None,
            NameSource::None,
            Proto::Other,
            Some(Anomaly::Malformed(Held::Truncated.as_str())),
        ),
    };
    seen.ech = ech;
    seen
}
