//! Pinning: a name bound to the destination Envoy resolves for it ([docs/pinning.md](../../docs/pinning.md)).
//!
//! Without pinning, an allowed SNI or Host sent to *any* IP passes, and that IP gets the
//! connection (`curl --resolve api.stripe.com:443:203.0.113.9` would reach 203.0.113.9). With
//! `pin`, such a connection is made by Envoy to the *name*, at the original port, through a
//! dynamic forward proxy cluster (`pin_cluster`): the client's choice of IP is ignored.
//!
//! # What is pinned
//!
//! [`super::Policy::decide`] sets [`super::Decision::pin`] when all of these hold:
//!
//! - the connection passes (not a denial);
//! - it carries a name, and the first allow rule matching it matched through one of its host
//!   patterns (explicit rules first, then presets, as for the decision);
//! - no allow rule matches the destination on IP and port alone: a destination that a CIDR or
//!   port rule allows may be reached whatever the name says, so it is left alone (such
//!   connections are never pinned, nor are connections without a name);
//! - `pin` applies to that rule: its own `pin`, or the policy's.
//!
//! The same reading holds in every mode. In `audit`, a would-deny is not pinned (no rule allowed
//! it). In `passthrough`, where allow rules do not decide, they still say what is pinned: a
//! connection the same policy in `allowlist` mode would pin is pinned in `passthrough` too, and
//! the decision names the rule that pinned it. So switching modes never changes where a pinned
//! name goes.
//!
//! # How it is applied
//!
//! The network filter sets three Envoy filter-state objects through the foreign function
//! `set_envoy_filter_state` ([`filter_state_request`] encodes its argument), before `tcp_proxy`
//! picks its upstream: `envoy.tcp_proxy.cluster` = `pin_cluster`, `envoy.upstream.dynamic_host`
//! = the name, `envoy.upstream.dynamic_port` = the original destination port. The filter does
//! this at connection open (SNI from `tls_inspector`) or while it holds the connection
//! (`sniff.hold_upstream`). A connection that must be pinned but no longer can be (its upstream
//! was already chosen) is denied, in every mode, with reason `pin_unavailable`: it is never sent
//! to the client's IP.
//!
//! ```
//! use egress_guard::policy::pin::{filter_state_request, LifeSpan, Target};
//!
//! let target = Target { cluster: "egress_guard_pinned", host: "api.example.com", port: 443 };
//! let [host, port, cluster] = target.filter_states();
//! assert_eq!(port, ("envoy.upstream.dynamic_port", "443".to_string()));
//! assert_eq!(cluster.0, "envoy.tcp_proxy.cluster");
//! let arg = filter_state_request(host.0, &host.1, LifeSpan::DownstreamConnection);
//! assert_eq!(arg[..2], [0x0a, 27]); // field 1 (path), 27 bytes
//! ```

use std::net::IpAddr;

/// Filter state read by `tcp_proxy`: the cluster for this connection.
pub const CLUSTER_KEY: &str = "envoy.tcp_proxy.cluster";
/// Filter state read by the dynamic forward proxy (the `sni_dynamic_forward_proxy` filter and
/// cluster): the host to resolve and connect to.
pub const HOST_KEY: &str = "envoy.upstream.dynamic_host";
/// Filter state read by the dynamic forward proxy: the port to connect to (decimal).
pub const PORT_KEY: &str = "envoy.upstream.dynamic_port";

/// The foreign function that sets an Envoy filter-state object from Wasm.
pub const SET_FILTER_STATE: &str = "set_envoy_filter_state";

/// How long a filter-state object lives (Envoy's `envoy.source.extensions.common.wasm.LifeSpan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifeSpan {
    /// The filter chain.
    FilterChain = 0,
    /// The downstream request (HTTP).
    DownstreamRequest = 1,
    /// The downstream connection: what `tcp_proxy` and the forward proxy read.
    DownstreamConnection = 2,
}

/// Where a pinned connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// `pin_cluster`: a dynamic forward proxy cluster.
    pub cluster: &'a str,
    /// The name the connection was allowed by.
    pub host: &'a str,
    /// The original destination port.
    pub port: u16,
}

impl Target<'_> {
    /// The filter-state objects to set, as (key, value), in the order to set them: host and
    /// port first, the cluster last, so that no connection is ever routed to the forward proxy
    /// without its host.
    pub fn filter_states(&self) -> [(&'static str, String); 3] {
        [
            (HOST_KEY, self.host.to_string()),
            (PORT_KEY, self.port.to_string()),
            (CLUSTER_KEY, self.cluster.to_string()),
        ]
    }
}

impl Target<'_> {
    /// The filter-state objects the HTTP filter sets for one request, as (key, value): host and
    /// port only. The route picks the cluster (the HTTP dynamic forward proxy filter and cluster
    /// read these two); `envoy.tcp_proxy.cluster` means nothing to an HTTP route.
    pub fn request_filter_states(&self) -> [(&'static str, String); 2] {
        [
            (HOST_KEY, self.host.to_string()),
            (PORT_KEY, self.port.to_string()),
        ]
    }
}

/// An IP address as the dynamic forward proxy's host: IPv4 dotted, IPv6 in brackets (the
/// proxy splits `host:port` at the last colon, so a bare IPv6 address would lose its tail).
/// An IP literal needs no DNS lookup: the proxy connects to it as it is.
pub fn ip_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The argument of `set_envoy_filter_state`: the protobuf message
/// `SetEnvoyFilterStateArguments { string path = 1; string value = 2; LifeSpan span = 3; }`,
/// encoded by hand (`0x0a len path 0x12 len value 0x18 span`, lengths as varints).
pub fn filter_state_request(path: &str, value: &str, span: LifeSpan) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + value.len() + 8);
    for (tag, bytes) in [(0x0a, path.as_bytes()), (0x12, value.as_bytes())] {
        out.push(tag);
        varint(&mut out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    out.push(0x18);
    varint(&mut out, span as u64);
    out
}

/// Appends `value` as a protobuf varint (7 bits a byte, least significant first).
fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// A small protobuf reader for the three fields, independent of the encoder.
    fn decode(mut bytes: &[u8]) -> (String, String, u64) {
        fn varint(bytes: &mut &[u8]) -> u64 {
            let mut value = 0u64;
            for shift in (0..64).step_by(7) {
                let (&b, rest) = bytes.split_first().expect("truncated varint");
                *bytes = rest;
                value |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    return value;
                }
            }
            panic!("varint too long")
        }
        let (mut path, mut value, mut span) = (None, None, None);
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            match (key >> 3, key & 7) {
                (3, 0) => span = Some(varint(&mut bytes)),
                (field @ (1 | 2), 2) => {
                    let len = varint(&mut bytes) as usize;
                    let (text, rest) = bytes.split_at(len);
                    bytes = rest;
                    let text = String::from_utf8(text.to_vec()).unwrap();
                    if field == 1 {
                        path = Some(text);
                    } else {
                        value = Some(text);
                    }
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
        (path.unwrap(), value.unwrap(), span.unwrap())
    }

    #[test]
    fn the_bytes_envoy_expects() {
        assert_eq!(
            filter_state_request(
                "envoy.upstream.dynamic_port",
                "443",
                LifeSpan::DownstreamConnection
            ),
            [
                &[0x0a, 27][..],
                b"envoy.upstream.dynamic_port",
                &[0x12, 3],
                b"443",
                &[0x18, 2],
            ]
            .concat()
        );
        assert_eq!(
            filter_state_request("k", "", LifeSpan::FilterChain),
            [0x0a, 1, b'k', 0x12, 0, 0x18, 0]
        );
    }

    #[test]
    fn long_values_take_multi_byte_lengths() {
        // A 253-byte name and a 255-byte cluster: lengths over 127 are two varint bytes.
        for len in [127, 128, 253, 255, 300, 16_384] {
            let value = "a".repeat(len);
            let arg = filter_state_request(HOST_KEY, &value, LifeSpan::DownstreamConnection);
            assert_eq!(
                decode(&arg),
                (HOST_KEY.to_string(), value.clone(), 2),
                "length {len}"
            );
            let header = if len < 128 {
                2
            } else if len < 16_384 {
                3
            } else {
                4
            };
            assert_eq!(
                arg.len(),
                2 + HOST_KEY.len() + header + len + 2,
                "length {len}"
            );
        }
        assert_eq!(
            filter_state_request("p", &"v".repeat(200), LifeSpan::DownstreamRequest)[3..6],
            [0x12, 0xc8, 0x01]
        );
    }

    #[test]
    fn a_request_sets_host_and_port_only() {
        let target = Target {
            cluster: "egress_guard_pinned",
            host: "api.example.com",
            port: 8080,
        };
        let states = target.request_filter_states();
        assert_eq!(
            states,
            [
                (HOST_KEY, "api.example.com".to_string()),
                (PORT_KEY, "8080".to_string()),
            ]
        );
        let arg = filter_state_request(HOST_KEY, &states[0].1, LifeSpan::DownstreamRequest);
        assert_eq!(
            decode(&arg),
            (HOST_KEY.to_string(), "api.example.com".to_string(), 1)
        );
    }

    #[test]
    fn ip_hosts_are_literals_the_proxy_can_split_from_the_port() {
        assert_eq!(ip_host("203.0.113.9".parse().unwrap()), "203.0.113.9");
        assert_eq!(ip_host("2001:db8::1".parse().unwrap()), "[2001:db8::1]");
        assert_eq!(
            ip_host("::ffff:10.0.0.1".parse().unwrap()),
            "[::ffff:10.0.0.1]"
        );
    }

    #[test]
    fn a_target_sets_host_and_port_before_the_cluster() {
        let target = Target {
            cluster: "outbound|443||pinned",
            host: "api.example.com",
            port: 8443,
        };
        let states = target.filter_states();
        assert_eq!(
            states,
            [
                (HOST_KEY, "api.example.com".to_string()),
                (PORT_KEY, "8443".to_string()),
                (CLUSTER_KEY, "outbound|443||pinned".to_string()),
            ]
        );
        for (key, value) in &states {
            let arg = filter_state_request(key, value, LifeSpan::DownstreamConnection);
            assert_eq!(decode(&arg), (key.to_string(), value.clone(), 2));
        }
    }
}
