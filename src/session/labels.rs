//! The session's label vocabularies (one list each, see [`crate::labels`]).

use crate::labels::labelled;

labelled! {
    /// What the network filter learned from the client's bytes; one counter each
    /// (`egress_guard_sniff_total{outcome}`).
    pub enum SniffOutcome {
        /// SNI from Envoy's `tls_inspector` at connection open.
        InspectorSni => "inspector_sni",
        /// Our ClientHello parse found an SNI.
        TlsSni => "tls_sni",
        /// A ClientHello without SNI.
        TlsNoSni => "tls_no_sni",
        /// An HTTP/1 request head with a name (Host or absolute-form authority).
        HttpHost => "http_host",
        /// An HTTP/1 request head without a name.
        HttpNoHost => "http_no_host",
        /// Neither TLS nor HTTP/1.
        Other => "other",
        /// The client sent nothing (or not enough) within `sniff.timeout_ms`, or held bytes of a
        /// followed HTTP/1 connection waited that long.
        Timeout => "timeout",
        /// More than `sniff.max_bytes` without a complete ClientHello or request head.
        TooLarge => "too_large",
        /// A second or later request head on an HTTP/1 connection (keep-alive or pipelined), or
        /// bytes refused in its place.
        HttpLaterRequest => "http_later_request",
        /// A ClientHello or request head that breaks its rules (a well-formed one carrying a
        /// malformed name counts under its protocol's outcome; the name's kind goes to
        /// `egress_guard_malformed_total`).
        Malformed => "malformed",
    }
}

labelled! {
    /// Where the connection's name came from (the `name_source` log field).
    pub enum NameSource {
        /// TLS SNI (from `tls_inspector` or our ClientHello parse).
        Sni => "sni",
        /// HTTP/1 `Host` (or absolute-form authority) parsed on a TCP chain.
        Host => "host",
        /// The HTTP filter's `:authority`.
        Authority => "authority",
        /// No name was seen.
        None => "none",
    }
}

labelled! {
    /// The protocol the client spoke, as far as the filter saw (the `proto` log field).
    pub enum Proto {
        /// TLS.
        Tls => "tls",
        /// HTTP/1 (or, in the HTTP filter, any HTTP).
        Http => "http",
        /// Neither.
        Other => "other",
    }
}

labelled! {
    /// Which of the two filter types took a decision (the `filter` log field).
    pub enum FilterKind {
        /// The network filter.
        Network => "network",
        /// The HTTP filter.
        Http => "http",
    }
}

labelled! {
    /// What pinning did with one decision; one counter each (`egress_guard_pin_total{outcome}`).
    pub enum PinOutcome {
        /// The filter state is set: Envoy makes the connection to the name.
        Pinned => "pinned",
        /// The upstream was already chosen (the connection went on at open or at a timeout):
        /// denied (`pin_unavailable`).
        Unavailable => "unavailable",
        /// Envoy refused the filter state (no such key, or a value its factory rejects):
        /// denied (`pin_unavailable`).
        Failed => "failed",
        /// A later request on a pinned connection carried another name, or none: the
        /// connection is closed (`pin_unavailable`).
        OtherName => "other_name",
        /// The connection or request was pinned, but Envoy found no upstream host for the name
        /// (it did not resolve, or the pin cluster has no host for it): Envoy closed it (an HTTP
        /// request gets its `503`). Counted and logged when the connection or request ends.
        Unresolved => "unresolved",
    }
}

labelled! {
    /// What the `ech` setting did with a ClientHello that carried `encrypted_client_hello`; one
    /// counter each (`egress_guard_ech_total{outcome}`).
    pub enum EchOutcome {
        /// `ech: allow`: decided on its outer SNI like any ClientHello (the decision itself is
        /// counted as usual).
        Allowed => "allowed",
        /// `ech: deny`: denied (reason `ech`).
        Denied => "denied",
    }
}
