//! egress-guard: an egress filter for Envoy.
//!
//! The crate has two pure parts that know nothing of proxy-wasm and run natively, in wasm and
//! under fuzzers:
//!
//! - [`policy`]: the configuration contract, validated with field-path errors, compiled into an
//!   immutable [`policy::Policy`] whose [`policy::Policy::decide`] answers allow / deny / audit-deny
//!   with the reason and the rule.
//! - [`sniff`]: incremental parsers that find the TLS SNI in a ClientHello and the Host of an
//!   HTTP/1 request head in the client's first bytes, and follow a plaintext HTTP/1 connection's
//!   requests and responses.
//! - [`session`]: one connection of the network filter as a state machine (events in, actions
//!   out) on top of both.
//!
//! The proxy-wasm adapter (`filter`) exists only in the Envoy module built for `wasm32-wasip1`;
//! it only translates hostcalls into session events and actions into hostcalls.
#![deny(missing_docs)]

mod labels;
pub mod name;
pub mod policy;
pub mod session;
pub mod sniff;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod filter;
