//! Name normalisation: what a TLS SNI or an HTTP Host/authority *is* before any pattern sees it.
//!
//! The contract (README.md, "Configuration reference", the matching rules): ASCII-lowercase, one
//! trailing dot removed, the port and IPv6 brackets stripped from a Host. A name that is an IP
//! literal is not a name. A name with characters outside letters, digits, `-`, `_`, `.`, with an
//! empty label, a label over 63 bytes or a total over 253 bytes is malformed and matches no host
//! pattern.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest name accepted, without the trailing dot (RFC 1035 presentation limit).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label accepted.
pub const MAX_LABEL_LEN: usize = 63;

/// What a raw name turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClass {
    /// A well-formed host name, lowercased, without a trailing dot.
    Name(String),
    /// An IP literal: not a name (the destination IP already is that fact).
    IpLiteral(IpAddr),
    /// Not a usable name; it matches no host pattern and the connection is denied.
    Malformed(MalformedName),
}

crate::labels::labelled! {
    /// Why a name is malformed. Each kind has its own counter in the filter.
    #[non_exhaustive]
    pub enum MalformedName {
        /// Zero bytes (or only a dot).
        Empty => "empty_name",
        /// Longer than [`MAX_NAME_LEN`] bytes.
        TooLong => "name_too_long",
        /// A label is empty (`a..b`, leading dot) or longer than [`MAX_LABEL_LEN`] bytes.
        BadLabel => "bad_label",
        /// A byte outside letters, digits, `-`, `_`, `.`.
        BadByte => "bad_byte",
        /// A Host/authority whose port is empty, not decimal, or out of range.
        BadPort => "bad_port",
        /// A Host/authority with userinfo (`user@host`).
        Userinfo => "userinfo",
        /// A bracketed IPv6 literal that does not parse, or brackets in the wrong place.
        BadIpv6 => "bad_ipv6",
        /// A name whose last label is a number (`2130706433`, `127.1`, `0x7f.1`, `0177.0.0.1`):
        /// resolvers read such names as IPv4 addresses, and no top-level domain is numeric.
        NumericName => "numeric_name",
    }
}

/// Classifies a TLS SNI `host_name` (no port, no brackets allowed).
pub fn classify_sni(raw: &[u8]) -> NameClass {
    classify_host(raw)
}

/// Classifies an HTTP Host header value or request-target authority: strips a `:port` and the
/// brackets of an IPv6 literal, rejects userinfo and bad ports, then classifies the host part.
pub fn classify_authority(raw: &[u8]) -> NameClass {
    if raw.contains(&b'@') {
        return NameClass::Malformed(MalformedName::Userinfo);
    }
    if let Some(rest) = raw.strip_prefix(b"[") {
        // `[v6]` or `[v6]:port`
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return NameClass::Malformed(MalformedName::BadIpv6);
        };
        let (inside, after) = rest.split_at(close);
        let after = after.get(1..).unwrap_or_default();
        if !after.is_empty() {
            match after.strip_prefix(b":") {
                Some(port) if valid_port(port) => {}
                Some(_) => return NameClass::Malformed(MalformedName::BadPort),
                None => return NameClass::Malformed(MalformedName::BadIpv6),
            }
        }
        return match std::str::from_utf8(inside)
            .ok()
            .and_then(|s| s.parse::<Ipv6Addr>().ok())
        {
            Some(ip) => NameClass::IpLiteral(IpAddr::V6(ip)),
            None => NameClass::Malformed(MalformedName::BadIpv6),
        };
    }
    let host = match raw.iter().rposition(|&b| b == b':') {
        Some(colon) => {
            let (host, port) = raw.split_at(colon);
            let port = port.get(1..).unwrap_or_default();
            if host.contains(&b':') {
                // An unbracketed IPv6 literal is not a valid authority.
                return NameClass::Malformed(MalformedName::BadIpv6);
            }
            if !valid_port(port) {
                return NameClass::Malformed(MalformedName::BadPort);
            }
            host
        }
        None => raw,
    };
    classify_host(host)
}

/// A decimal port 1..=65535 of at most five digits.
fn valid_port(port: &[u8]) -> bool {
    if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let value = port
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    (1..=65535).contains(&value)
}

/// A label that inet_aton would read as a number: decimal digits, or `0x` and hex digits.
fn is_numeric_label(label: &[u8]) -> bool {
    match label {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        digits => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
    }
}

/// Classifies a bare host (no port, no brackets).
fn classify_host(raw: &[u8]) -> NameClass {
    let host = raw.strip_suffix(b".").unwrap_or(raw);
    if host.is_empty() {
        return NameClass::Malformed(MalformedName::Empty);
    }
    // Only what could be an address is parsed as one (every connection's name comes here): an
    // IPv4 address is digits and dots, an IPv6 address has a ':' (which no name has).
    if host.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        if let Some(ip) = std::str::from_utf8(host)
            .ok()
            .and_then(|text| text.parse::<Ipv4Addr>().ok())
        {
            return NameClass::IpLiteral(IpAddr::V4(ip));
        }
    } else if host.contains(&b':') {
        if let Some(ip) = std::str::from_utf8(host)
            .ok()
            .and_then(|text| text.parse::<Ipv6Addr>().ok())
        {
            return NameClass::IpLiteral(IpAddr::V6(ip));
        }
    }
    if host.len() > MAX_NAME_LEN {
        return NameClass::Malformed(MalformedName::TooLong);
    }
    if !host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return NameClass::Malformed(MalformedName::BadByte);
    }
    if host
        .split(|&b| b == b'.')
        .any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN)
    {
        return NameClass::Malformed(MalformedName::BadLabel);
    }
    if host
        .rsplit(|&b| b == b'.')
        .next()
        .is_some_and(is_numeric_label)
    {
        // inet_aton and getaddrinfo read `127.1`, `2130706433`, `0x7f.0.0.1`, `0177.0.0.1` as
        // 127.0.0.1: a "name" the policy would match as a name while the client reaches an IP.
        return NameClass::Malformed(MalformedName::NumericName);
    }
    // Every byte is ASCII, so this conversion cannot fail; fall back to malformed regardless.
    match std::str::from_utf8(host) {
        Ok(text) => NameClass::Name(text.to_ascii_lowercase()),
        Err(_) => NameClass::Malformed(MalformedName::BadByte),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn name(s: &str) -> NameClass {
        NameClass::Name(s.to_string())
    }
    fn bad(kind: MalformedName) -> NameClass {
        NameClass::Malformed(kind)
    }
    fn ip(s: &str) -> NameClass {
        NameClass::IpLiteral(s.parse().unwrap())
    }

    #[test]
    fn sni_cases() {
        let cases: &[(&[u8], NameClass)] = &[
            (b"GitHub.COM", name("github.com")),
            (b"api.github.com.", name("api.github.com")),
            (b"under_score.example", name("under_score.example")),
            (b"", bad(MalformedName::Empty)),
            (b".", bad(MalformedName::Empty)),
            (b"a..b", bad(MalformedName::BadLabel)),
            (b".a", bad(MalformedName::BadLabel)),
            (b"a.b..", bad(MalformedName::BadLabel)),
            (b"a b", bad(MalformedName::BadByte)),
            (b"a\0b", bad(MalformedName::BadByte)),
            ("bücher.de".as_bytes(), bad(MalformedName::BadByte)),
            (b"github.com:443", bad(MalformedName::BadByte)),
            (b"127.0.0.1", ip("127.0.0.1")),
            (b"::1", ip("::1")),
            // Spellings resolvers read as IPv4 addresses are not names.
            (b"1.2.3", bad(MalformedName::NumericName)),
            (b"2130706433", bad(MalformedName::NumericName)),
            (b"127.1", bad(MalformedName::NumericName)),
            (b"0x7f.1", bad(MalformedName::NumericName)),
            (b"0x7F000001", bad(MalformedName::NumericName)),
            (b"0177.0.0.1", bad(MalformedName::NumericName)),
            (b"127.0.0.01", bad(MalformedName::NumericName)),
            (b"a.b.0x10", bad(MalformedName::NumericName)),
            (b"1.2.3.4.", ip("1.2.3.4")),
            // Numbers elsewhere in a name are fine; hex without 0x is a word.
            (b"1.2.3.example", name("1.2.3.example")),
            (b"123.cafe", name("123.cafe")),
            (b"0x7f.example", name("0x7f.example")),
            (b"a.0x", bad(MalformedName::NumericName)), // inet_aton reads a bare 0x as 0
        ];
        for (raw, want) in cases {
            assert_eq!(
                &classify_sni(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn length_limits() {
        let label63 = "a".repeat(63);
        let label64 = "a".repeat(64);
        assert_eq!(classify_sni(label63.as_bytes()), name(&label63));
        assert_eq!(
            classify_sni(label64.as_bytes()),
            bad(MalformedName::BadLabel)
        );
        // 4 * 63 + 3 dots = 255 > 253.
        let long = [label63.as_str(); 4].join(".");
        assert_eq!(classify_sni(long.as_bytes()), bad(MalformedName::TooLong));
        // 253 bytes exactly, plus a trailing dot, is fine.
        let exact = format!("{}.{}.{}.{}", label63, label63, label63, "a".repeat(61));
        assert_eq!(exact.len(), 253);
        assert_eq!(classify_sni(format!("{exact}.").as_bytes()), name(&exact));
    }

    #[test]
    fn authority_cases() {
        let cases: &[(&[u8], NameClass)] = &[
            (b"example.com", name("example.com")),
            (b"Example.com:8080", name("example.com")),
            (b"example.com.:80", name("example.com")),
            (b"example.com:", bad(MalformedName::BadPort)),
            (b"example.com:0", bad(MalformedName::BadPort)),
            (b"example.com:65536", bad(MalformedName::BadPort)),
            (b"example.com:080a", bad(MalformedName::BadPort)),
            (b"example.com:123456", bad(MalformedName::BadPort)),
            (b"user@example.com", bad(MalformedName::Userinfo)),
            (b"[::1]", ip("::1")),
            (b"[::1]:443", ip("::1")),
            (b"[::1]443", bad(MalformedName::BadIpv6)),
            (b"[::1", bad(MalformedName::BadIpv6)),
            (b"[not-v6]:80", bad(MalformedName::BadIpv6)),
            (b"::1", bad(MalformedName::BadIpv6)),
            (b"10.0.0.1:5432", ip("10.0.0.1")),
            (b"", bad(MalformedName::Empty)),
            (b":80", bad(MalformedName::Empty)),
            (b"exa mple.com", bad(MalformedName::BadByte)),
        ];
        for (raw, want) in cases {
            assert_eq!(
                &classify_authority(raw),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}

#[cfg(test)]
#[cfg(not(target_arch = "wasm32"))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Parsing only what could be an address changes no answer: an input is an IP literal
        /// exactly when the standard parsers read it as one (as every input was tried before).
        #[test]
        fn ip_literals_as_the_parsers_read_them(
            raw in prop::collection::vec(prop::sample::select(b"0123456789abcdefx.:-_A".to_vec()), 0..40)
        ) {
            let host = raw.strip_suffix(b".").unwrap_or(&raw);
            let parsed = std::str::from_utf8(host).ok().and_then(|t| {
                t.parse::<Ipv4Addr>().map(IpAddr::V4).ok().or_else(|| t.parse::<Ipv6Addr>().map(IpAddr::V6).ok())
            });
            match (classify_host(&raw), parsed) {
                (NameClass::IpLiteral(ip), Some(want)) => prop_assert_eq!(ip, want),
                (NameClass::IpLiteral(ip), None) => prop_assert!(false, "{ip} is not an address"),
                (other, Some(want)) => prop_assert!(host.is_empty(), "{other:?} for {want}"),
                (_, None) => {}
            }
        }
    }
}
