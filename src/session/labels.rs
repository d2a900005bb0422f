//! The label vocabularies of counters and log lines, each generated from one list by
//! [`labelled!`]: the enum, `ALL` (for defining every counter up front) and `as_str` cannot
//! disagree, and a variant cannot be missing from `ALL`.

/// Generates a `Copy` enum whose variants carry stable labels, with `ALL` and `as_str`.
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// How many variants there are.
            pub const COUNT: usize = $name::ALL.len();

            /// The variant's position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The stable label used in counters and logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

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
    /// Why a followed connection was closed although no request on it was malformed: the
    /// `detail` of those decisions (the others take their labels from the parsers).
    pub enum Held {
        /// A ClientHello or request head stopped part-way for `sniff.timeout_ms`.
        IncompleteAtTimeout => "incomplete_at_timeout",
        /// Bytes waited behind an upgrade the server did not answer within `sniff.timeout_ms`.
        UpgradeUnanswered => "upgrade_unanswered",
        /// The client half-closed inside a ClientHello or request head.
        Truncated => "truncated",
    }
}
