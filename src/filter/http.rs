//! The HTTP filter: decides each request on its `:authority` and the original destination; a deny
//! is a local `403` with `x-egress-guard: denied` and a JSON body.
//!
//! Pinning ([docs/pinning.md](../../docs/pinning.md)): when the request's route goes to the
//! policy's `pin_cluster` (Envoy's HTTP dynamic forward proxy, as in
//! `envoy/sidecar-outbound-http-pinned.yaml`), every request that passes gets the filter state
//! that says where it goes — its name if pinned, else its original destination; under any other
//! route a request that must be pinned is refused.

use std::net::SocketAddr;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};
use serde::Serialize;

use super::host;
use super::record::{destination, pin_ended, property_string, Recorder};
use super::report;
use super::state::Shared;
use crate::policy::name::classify_authority;
use crate::policy::pin::{filter_state_request, LifeSpan, Target, SET_FILTER_STATE};
use crate::policy::{Decision, Policy, Reason, Verdict};
use crate::session::{
    judge, pinned_name, request_window, FilterKind, Judged, NameSource, Observed, Proto, Record,
    SniffOutcome,
};

/// The per-request context.
pub(crate) struct HttpFilter {
    shared: Option<Rc<Shared>>,
    /// The name this request was pinned to, and its original destination.
    pinned: Option<(String, SocketAddr)>,
}

impl HttpFilter {
    pub(crate) fn new(shared: Option<Rc<Shared>>) -> HttpFilter {
        HttpFilter {
            shared,
            pinned: None,
        }
    }
}

/// The body of the 403 reply.
#[derive(Serialize)]
struct DeniedBody<'a> {
    error: &'static str,
    destination: &'a str,
    reason: &'static str,
    rule: Option<&'a str>,
}

impl Context for HttpFilter {}

impl HttpContext for HttpFilter {
    /// The request ended (Envoy's access-log callback): a pinned one that Envoy found no host
    /// for (its `503`) is counted and logged.
    fn on_log(&mut self) {
        if let (Some(shared), Some((name, dst))) = (&self.shared, &self.pinned) {
            pin_ended(shared, name, *dst, FilterKind::Http);
        }
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            log::error!("egress-guard: no policy in force; refusing the request");
            return deny(None, "", Reason::NoDestination);
        };
        // As bytes: the SDK's string getter panics on a value that is not UTF-8.
        let authority =
            match hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, ":authority") {
                Ok(value) => value
                    .filter(|v| !v.is_empty())
                    .map(|v| String::from_utf8_lossy(&v).into_owned()),
                Err(status) => {
                    log::error!("egress-guard: cannot read :authority: {status:?}");
                    None
                }
            };
        let Some(dst) = destination() else {
            log::error!("egress-guard: request without destination.address; refusing it");
            shared
                .metrics
                .decision(&shared.policy, Verdict::Deny, Reason::NoDestination, None);
            return deny(
                None,
                authority.as_deref().unwrap_or(""),
                Reason::NoDestination,
            );
        };
        let name = authority
            .as_deref()
            .map(|a| classify_authority(a.as_bytes()));
        let decision = judge(
            &shared.policy,
            &Observed {
                dst,
                name: name.as_ref(),
                source: NameSource::Authority,
                proto: Proto::Http,
                filter: FilterKind::Http,
                anomaly: None,
                request: 1,
                // Pinning needs a route to the pin cluster (the pinned config); under any
                // other route a request that must be pinned is refused (403, pin_unavailable).
                pin: request_window(
                    &shared.policy,
                    property_string(&["xds", "cluster_name"]).as_deref(),
                ),
                ech: false,
            },
            &mut RequestRecorder(Recorder::new(&shared)),
        );
        if decision.verdict != Verdict::Deny {
            self.pinned = pinned_name(&decision, name.as_ref()).map(|n| (n.to_owned(), dst));
            return Action::Continue;
        }
        let destination = authority.unwrap_or_else(|| dst.to_string());
        deny(
            Some((&shared.policy, &decision)),
            &destination,
            decision.reason,
        )
    }
}

/// The connection's [`Recorder`], routing one request: the filter state lives as long as the
/// request, so each request on a keep-alive connection goes where its own decision says.
struct RequestRecorder<'a>(Recorder<'a>);

impl Record for RequestRecorder<'_> {
    fn sniffed(&mut self, outcome: SniffOutcome) {
        self.0.sniffed(outcome);
    }

    fn judged(&mut self, judged: &Judged<'_>) {
        self.0.judged(judged);
    }

    /// Sets the two filter-state objects the HTTP dynamic forward proxy reads (host, then port;
    /// the route already chose the cluster).
    fn pin(&mut self, target: &Target<'_>) -> bool {
        for (key, value) in target.request_filter_states() {
            let request = filter_state_request(key, &value, LifeSpan::DownstreamRequest);
            if let Err(status) = host::call_foreign_function(SET_FILTER_STATE, &request) {
                log::warn!(
                    "egress-guard: cannot route a request to {}:{}: Envoy refused filter state \
                     {key} (status {status}); refusing it",
                    target.host,
                    target.port
                );
                return false;
            }
        }
        true
    }
}

/// Sends the 403 reply and stops the request.
fn deny(decided: Option<(&Policy, &Decision)>, destination: &str, reason: Reason) -> Action {
    let body = DeniedBody {
        error: "egress_denied",
        destination,
        reason: reason.as_str(),
        rule: decided.and_then(|(policy, decision)| report::rule_name(policy, decision)),
    };
    let body =
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"egress_denied\"}".to_vec());
    let headers = vec![
        ("x-egress-guard", "denied"),
        ("content-type", "application/json"),
    ];
    if let Err(status) = hostcalls::send_http_response(403, headers, Some(&body)) {
        log::error!("egress-guard: cannot send the 403 reply: {status:?}");
        if let Err(status) = hostcalls::reset_http_request() {
            log::error!("egress-guard: cannot reset the request: {status:?}");
        }
    }
    Action::Pause
}
