//! HTTP/1.0 and HTTP/1.1 request-head parser: finds the name a request is for.
//!
//! # Detection
//!
//! Bytes are HTTP once they start with a known method ([`KNOWN_METHODS`]) and SP, or, for any
//! other method token (or another separator), once the first line shows `HTTP/`
//! (case-insensitive) after whitespace, as in `token SP target SP HTTP/`. Extension methods are
//! recognised because servers such as Go's accept any token as a method: a request that only our
//! method list did not know must not pass as "other" and be decided on IP and port. For
//! detection only, the separators may be any of SP, HTAB, VT, FF, CR (what lenient servers
//! accept, RFC 9112 §3), the target may hold spaces and non-ASCII bytes, and whitespace or empty
//! lines may come first: such bytes are HTTP, and then malformed.
//!
//! The HTTP/2 prior-knowledge preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`) is not HTTP/1: its
//! name travels HPACK-compressed in a HEADERS frame, so it is [`Outcome::NotThisProtocol`]
//! (decided on IP and port, as `other`).
//!
//! # Rules
//!
//! Strict RFC 9112 framing; anything a server might read differently is malformed:
//!
//! - request line `method SP request-target SP HTTP/1.0|HTTP/1.1 CRLF`, single spaces; the
//!   target is origin-form (`/path`), absolute-form (`http://` or `https://`, scheme
//!   case-insensitive, authority up to the first `/` or `?`), authority-form (only and always with
//!   CONNECT, with a port) or asterisk-form (only with OPTIONS); no fragment (`#`);
//! - every line ends with CRLF: a bare LF or a bare CR is malformed;
//! - header lines `name ":" OWS value OWS`: the name is a token right before the colon; a line
//!   starting with whitespace (obs-fold) is malformed; values hold no control bytes but HTAB;
//! - at most one Host; its value is one non-empty authority (no whitespace, comma or `@`). An
//!   empty Host is malformed: it is only meant for targets without an authority, which http(s)
//!   targets never are;
//! - the name is the target's authority (absolute- and authority-form), else the Host value; when
//!   both are present they must name the same host (compared after normalisation with
//!   [`classify_authority`], ports ignored);
//! - Content-Length is a decimal number (repeats must agree); Transfer-Encoding ends in a single
//!   `chunked` and is not allowed in HTTP/1.0; both together are malformed.
//!
//! A request without any name (origin-form without Host, in HTTP/1.0 or HTTP/1.1) is found with
//! `host: None`: it matches no host pattern. Only the first request head of a connection is
//! parsed; [`RequestHead::head_len`] and [`RequestHead::framing`] say where it ends.

use super::{Malformed, Outcome};
use crate::policy::name::{classify_authority, NameClass};

/// Methods that make bytes HTTP as soon as SP follows them: RFC 9110, PATCH (RFC 5789),
/// WebDAV (RFC 4918) and the common WebDAV extensions.
pub const KNOWN_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKCALENDAR",
];

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The form of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`.
    Origin,
    /// `http://authority/path` or `https://...`.
    Absolute,
    /// `host:port`, with CONNECT.
    Authority,
    /// `*`, with OPTIONS.
    Asterisk,
}

/// How the request's body is delimited (RFC 9112 §6.3), for reading the next request later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither Content-Length nor Transfer-Encoding: no body.
    None,
    /// A Content-Length of this many bytes.
    ContentLength(u64),
    /// Transfer-Encoding ending in `chunked`.
    Chunked,
}

/// Where the name of a request came from; the `name_source` log field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    /// The authority of an absolute-form or authority-form target.
    Authority,
    /// The Host header.
    Host,
    /// Neither: the request has no name.
    None,
}

impl NameSource {
    /// Stable label: `authority`, `host` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Authority => "authority",
            NameSource::Host => "host",
            NameSource::None => "none",
        }
    }
}

/// A parsed HTTP/1 request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method token, as sent (methods are case-sensitive).
    pub method: String,
    /// The form of the request target.
    pub target_form: TargetForm,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The name source, raw (not normalised, may carry `:port` or IPv6 brackets): the target's
    /// authority in absolute- and authority-form, else the Host value; `None` without either.
    pub host: Option<String>,
    /// Bytes up to and including the blank line that ends the head.
    pub head_len: usize,
    /// How the body that follows the head is delimited.
    pub framing: BodyFraming,
    /// The request asks to leave HTTP/1 on this connection: an `Upgrade` header, or `CONNECT`.
    /// If the server agrees (`101`, or `2xx` to `CONNECT`) the bytes after it are a tunnel.
    pub upgrade: bool,
}

impl RequestHead {
    /// Where [`RequestHead::host`] came from.
    pub fn name_source(&self) -> NameSource {
        match (self.target_form, &self.host) {
            (TargetForm::Absolute | TargetForm::Authority, _) => NameSource::Authority,
            (_, Some(_)) => NameSource::Host,
            (_, None) => NameSource::None,
        }
    }
}

/// Parses an HTTP/1 request head at the start of `buf` (the whole buffer held so far).
///
/// [`Outcome::NotThisProtocol`] when the first bytes are not an HTTP/1 request (see the module
/// documentation for detection), [`Outcome::NeedMore`] until the blank line that ends the head.
/// Bytes after the head (a body, a pipelined request) are not looked at.
pub fn parse_request_head(buf: &[u8]) -> Outcome<RequestHead> {
    let lead = buf
        .iter()
        .take_while(|&&b| is_separator(b) || b == b'\n')
        .count();
    match detect(buf.get(lead..).unwrap_or_default()) {
        Detect::NotHttp => Outcome::NotThisProtocol,
        Detect::NeedMore => Outcome::NeedMore,
        Detect::Http if lead > 0 => Outcome::Malformed(Malformed::HttpLeadingWhitespace),
        Detect::Http => match parse_head(buf) {
            Ok(Some(head)) => Outcome::Found(head),
            Ok(None) => Outcome::NeedMore,
            Err(why) => Outcome::Malformed(why),
        },
    }
}

/// What the first line looks like so far.
enum Detect {
    Http,
    NeedMore,
    NotHttp,
}

/// tchar (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whitespace that lenient servers take as a request-line separator (RFC 9112 §3).
fn is_separator(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | 0x0b | 0x0c | b'\r')
}

/// Bytes a lenient server might take as part of a request target.
fn is_lenient_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

/// Bytes of an authority (RFC 3986 reg-name, IP-literal, port) other than `,` and `@`.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=:[]%".contains(&b)
}

/// Decides whether `line` (the bytes after any leading whitespace) starts an HTTP/1 request.
fn detect(line: &[u8]) -> Detect {
    if line.starts_with(H2_PREFACE) {
        return Detect::NotHttp;
    }
    if H2_PREFACE.starts_with(line) {
        return Detect::NeedMore;
    }
    let method_len = line.iter().take_while(|&&b| is_tchar(b)).count();
    let Some((method, rest)) = line.split_at_checked(method_len) else {
        return Detect::NotHttp;
    };
    if method.is_empty() {
        return Detect::NotHttp;
    }
    match rest.first() {
        None => return Detect::NeedMore,
        Some(b' ') if KNOWN_METHODS.iter().any(|m| m.as_bytes() == method) => return Detect::Http,
        Some(&b) if is_separator(b) => {}
        Some(_) => return Detect::NotHttp,
    }
    // Any other token: HTTP once the line shows `HTTP/` after whitespace. A byte that no
    // lenient server takes as part of a request line, or the end of the line, says "not HTTP".
    let mut after_separator = false;
    for (i, &b) in rest.iter().enumerate() {
        if is_separator(b) {
            after_separator = true;
            continue;
        }
        if !is_lenient_target_byte(b) {
            return Detect::NotHttp;
        }
        if after_separator && matches!(b, b'H' | b'h') {
            let candidate = rest.get(i..).unwrap_or_default();
            let n = candidate.len().min(5);
            if let (Some(got), Some(want)) = (candidate.get(..n), b"HTTP/".get(..n)) {
                if got.eq_ignore_ascii_case(want) {
                    return if n == 5 {
                        Detect::Http
                    } else {
                        Detect::NeedMore
                    };
                }
            }
        }
        after_separator = false;
    }
    Detect::NeedMore
}

/// The next CRLF-terminated line starting at `start`, without its CRLF, and the position after
/// it; `None` while the line is incomplete.
fn next_line(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, Malformed> {
    let rest = buf.get(start..).unwrap_or_default();
    let Some(end) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    match (rest.get(end), rest.get(end.saturating_add(1))) {
        (Some(b'\r'), Some(b'\n')) => Ok(Some((
            rest.get(..end).unwrap_or_default(),
            start.saturating_add(end).saturating_add(2),
        ))),
        (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(_)) => Err(Malformed::HttpBareCr),
        _ => Err(Malformed::HttpBareLf),
    }
}

/// Optional whitespace (SP, HTAB) trimmed from both ends.
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().take_while(|b| is_ows(b)).count();
    let bytes = bytes.get(start..).unwrap_or_default();
    let end = bytes.len() - bytes.iter().rev().take_while(|b| is_ows(b)).count();
    bytes.get(..end).unwrap_or_default()
}

fn ascii_string(bytes: &[u8], why: Malformed) -> Result<String, Malformed> {
    if !bytes.is_ascii() {
        return Err(why);
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| why)
}

/// A checked request line.
struct RequestLine<'a> {
    method: &'a [u8],
    form: TargetForm,
    authority: Option<&'a [u8]>,
    version: u8,
}

fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, Malformed> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let (Some(target), version) = (parts.next(), parts.next()) else {
        return Err(Malformed::HttpRequestLine);
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) || target.is_empty() {
        return Err(Malformed::HttpRequestLine);
    }
    let Some(version) = version else {
        // `GET /`: an HTTP/0.9 simple request.
        return Err(if target.iter().all(|&b| is_lenient_target_byte(b)) {
            Malformed::HttpBadVersion
        } else {
            Malformed::HttpRequestLine
        });
    };
    let version = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ if version.contains(&b' ') => return Err(Malformed::HttpRequestLine),
        _ if version
            .get(..5)
            .is_some_and(|v| v.eq_ignore_ascii_case(b"HTTP/")) =>
        {
            return Err(Malformed::HttpBadVersion)
        }
        _ => return Err(Malformed::HttpRequestLine),
    };
    if !target.iter().all(|b| (0x21..=0x7e).contains(b)) || target.contains(&b'#') {
        return Err(Malformed::HttpRequestTarget);
    }
    let (form, authority) = parse_target(method, target)?;
    Ok(RequestLine {
        method,
        form,
        authority,
        version,
    })
}

/// The form of `target` for `method`, and its authority.
fn parse_target<'a>(
    method: &[u8],
    target: &'a [u8],
) -> Result<(TargetForm, Option<&'a [u8]>), Malformed> {
    let bad = Malformed::HttpRequestTarget;
    if method == b"CONNECT" {
        return if is_authority(target, true) {
            Ok((TargetForm::Authority, Some(target)))
        } else {
            Err(bad)
        };
    }
    if target.starts_with(b"/") {
        return Ok((TargetForm::Origin, None));
    }
    if target == b"*" {
        return if method == b"OPTIONS" {
            Ok((TargetForm::Asterisk, None))
        } else {
            Err(bad)
        };
    }
    let after_scheme = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(bad)?;
    let end = after_scheme
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after_scheme.len());
    let authority = after_scheme.get(..end).unwrap_or_default();
    if !is_authority(authority, false) {
        return Err(bad);
    }
    Ok((TargetForm::Absolute, Some(authority)))
}

fn strip_prefix_ignore_case<'a>(bytes: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let (head, tail) = bytes.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(tail)
}

/// An authority's shape: a non-empty host of authority bytes and, if `port_required`, a
/// `:digits` port. Host syntax proper is [`classify_authority`]'s business.
fn is_authority(authority: &[u8], port_required: bool) -> bool {
    if authority.is_empty()
        || authority.starts_with(b":")
        || !authority.iter().all(|&b| is_authority_byte(b))
    {
        return false;
    }
    if !port_required {
        return true;
    }
    let Some(colon) = authority.iter().rposition(|&b| b == b':') else {
        return false;
    };
    let (host, port) = authority.split_at(colon);
    let port = port.get(1..).unwrap_or_default();
    !port.is_empty()
        && port.iter().all(u8::is_ascii_digit)
        && (!host.starts_with(b"[") || host.ends_with(b"]"))
}

/// Headers that matter, gathered line by line.
#[derive(Default)]
struct Fields<'a> {
    host: Option<&'a [u8]>,
    content_length: Option<u64>,
    transfer_encoding: Option<TransferCodings>,
    upgrade: bool,
}

/// The Transfer-Encoding codings seen so far, across all Transfer-Encoding lines.
#[derive(Default)]
pub(super) struct TransferCodings {
    pub(super) count: usize,
    pub(super) chunked: usize,
    pub(super) last_is_chunked: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, Malformed> {
    let Some((line, mut pos)) = next_line(buf, 0)? else {
        return Ok(None);
    };
    let request = parse_request_line(line)?;
    let mut fields = Fields::default();
    loop {
        let Some((line, next)) = next_line(buf, pos)? else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        field_line(line, request.version, &mut fields)?;
    }
    let framing = match (fields.content_length, fields.transfer_encoding) {
        (_, Some(te)) if te.count == 0 || te.chunked != 1 || !te.last_is_chunked => {
            return Err(Malformed::HttpTransferEncoding)
        }
        (Some(_), Some(_)) => return Err(Malformed::HttpContentLengthAndTransferEncoding),
        (None, Some(_)) => BodyFraming::Chunked,
        (Some(len), None) => BodyFraming::ContentLength(len),
        (None, None) => BodyFraming::None,
    };
    let host = match (request.authority, fields.host) {
        (Some(authority), Some(host)) if !same_host(authority, host) => {
            return Err(Malformed::HttpHostMismatch)
        }
        (Some(authority), _) => Some(authority),
        (None, host) => host,
    };
    Ok(Some(RequestHead {
        method: ascii_string(request.method, Malformed::HttpRequestLine)?,
        target_form: request.form,
        version: request.version,
        host: host
            .map(|h| ascii_string(h, Malformed::HttpHostValue))
            .transpose()?,
        head_len: pos,
        framing,
        upgrade: fields.upgrade || request.method == b"CONNECT",
    }))
}

/// Checks one header line and records what matters.
fn field_line<'a>(line: &'a [u8], version: u8, fields: &mut Fields<'a>) -> Result<(), Malformed> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Malformed::HttpObsFold);
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(Malformed::HttpHeaderSyntax)?;
    let (name, rest) = line.split_at(colon);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed::HttpHeaderSyntax);
    }
    let value = trim_ows(rest.get(1..).unwrap_or_default());
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Malformed::HttpHeaderValue);
    }
    if name.eq_ignore_ascii_case(b"host") {
        if fields.host.is_some() {
            return Err(Malformed::HttpDuplicateHost);
        }
        if !is_authority(value, false) {
            return Err(Malformed::HttpHostValue);
        }
        fields.host = Some(value);
    } else if name.eq_ignore_ascii_case(b"content-length") {
        let len = content_length(value)?;
        if fields.content_length.is_some_and(|prev| prev != len) {
            return Err(Malformed::HttpContentLength);
        }
        fields.content_length = Some(len);
    } else if name.eq_ignore_ascii_case(b"upgrade") {
        fields.upgrade = true;
    } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
        if version == 0 {
            return Err(Malformed::HttpTransferEncoding);
        }
        let codings = fields
            .transfer_encoding
            .get_or_insert_with(Default::default);
        transfer_codings(value, codings)?;
    }
    Ok(())
}

/// A Content-Length value: a decimal number, or a list of equal ones (RFC 9112 §6.3).
pub(super) fn content_length(value: &[u8]) -> Result<u64, Malformed> {
    let bad = Malformed::HttpContentLength;
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad);
        }
        let len = part
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?
                    .checked_add(u64::from(d.wrapping_sub(b'0')))
            })
            .ok_or(bad)?;
        if result.is_some_and(|prev| prev != len) {
            return Err(bad);
        }
        result = Some(len);
    }
    result.ok_or(bad)
}

/// Adds one Transfer-Encoding value's codings (a list, empty elements ignored).
pub(super) fn transfer_codings(
    value: &[u8],
    codings: &mut TransferCodings,
) -> Result<(), Malformed> {
    let bad = Malformed::HttpTransferEncoding;
    for element in value.split(|&b| b == b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        let mut parts = element.splitn(2, |&b| b == b';');
        let coding = trim_ows(parts.next().unwrap_or_default());
        let has_params = parts.next().is_some();
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return Err(bad);
        }
        let chunked = coding.eq_ignore_ascii_case(b"chunked");
        if chunked && has_params {
            return Err(bad);
        }
        codings.count += 1;
        codings.chunked += usize::from(chunked);
        codings.last_is_chunked = chunked;
    }
    Ok(())
}

/// Whether the target's authority and the Host value name the same host (ports ignored).
fn same_host(authority: &[u8], host: &[u8]) -> bool {
    match (classify_authority(authority), classify_authority(host)) {
        (NameClass::Name(a), NameClass::Name(b)) => a == b,
        (NameClass::IpLiteral(a), NameClass::IpLiteral(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::sniff::tests::sniff_every_prefix;
    use crate::sniff::Sniffed;

    /// What a case should come out as.
    #[derive(Debug)]
    enum Want {
        Host(Option<&'static str>),
        Bad(Malformed),
        NeedMore,
        NotHttp,
    }

    /// Parses `input` whole and on every prefix (directly and through `sniff`).
    fn run(input: &[u8]) -> Outcome<RequestHead> {
        let whole = parse_request_head(input);
        let sniffed = sniff_every_prefix(input, 1 << 20);
        let expect = match &whole {
            Outcome::Found(head) => Sniffed::Http {
                host: head.host.clone(),
                head_len: head.head_len,
            },
            Outcome::Malformed(why) => Sniffed::Malformed(*why),
            Outcome::NeedMore => Sniffed::NeedMore,
            Outcome::NotThisProtocol => Sniffed::Other,
        };
        assert_eq!(sniffed, expect);
        let mut settled = false;
        for end in 0..=input.len() {
            let got = parse_request_head(&input[..end]);
            if settled || got != Outcome::NeedMore {
                assert_eq!(got, whole, "prefix of {end} bytes");
                settled = true;
            }
        }
        whole
    }

    fn head(input: &[u8]) -> RequestHead {
        match run(input) {
            Outcome::Found(head) => head,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn table() {
        use Malformed::*;
        use Want::*;
        let cases: &[(&str, &[u8], Want)] = &[
            (
                "origin-form with Host",
                b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
                Host(Some("example.com")),
            ),
            (
                "Host with port",
                b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
                Host(Some("example.com:8080")),
            ),
            (
                "Host with IPv6 literal",
                b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n",
                Host(Some("[2001:db8::1]:80")),
            ),
            (
                "Host header name in another case, value with OWS",
                b"GET / HTTP/1.1\r\nhOsT:\t Example.COM \t\r\n\r\n",
                Host(Some("Example.COM")),
            ),
            (
                "absolute-form matching Host",
                b"GET http://Example.com:80/a?b HTTP/1.1\r\nHost: example.com.\r\n\r\n",
                Host(Some("Example.com:80")),
            ),
            (
                "absolute-form without Host",
                b"GET http://example.com HTTP/1.1\r\n\r\n",
                Host(Some("example.com")),
            ),
            (
                "absolute-form ending at ?",
                b"GET http://example.com?x=/ HTTP/1.1\r\n\r\n",
                Host(Some("example.com")),
            ),
            (
                "absolute-form disagreeing with Host",
                b"GET http://allowed.example/ HTTP/1.1\r\nHost: denied.example\r\n\r\n",
                Bad(HttpHostMismatch),
            ),
            (
                "absolute-form IP and Host name",
                b"GET http://10.0.0.1/ HTTP/1.1\r\nHost: denied.example\r\n\r\n",
                Bad(HttpHostMismatch),
            ),
            (
                "absolute-form and Host both malformed",
                b"GET http://a..b/ HTTP/1.1\r\nHost: a..b\r\n\r\n",
                Bad(HttpHostMismatch),
            ),
            (
                "https absolute-form, scheme in capitals",
                b"POST HTTPS://api.example:8443/v1 HTTP/1.1\r\n\
                  Host: api.example:8443\r\nContent-Length: 2\r\n\r\n{}",
                Host(Some("api.example:8443")),
            ),
            (
                "other scheme",
                b"GET ftp://example.com/ HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "empty authority",
                b"GET http:///x HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "userinfo in authority",
                b"GET http://allowed.example@denied.example/ HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "backslash in authority",
                b"GET http://denied.example\\@allowed.example/ HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "fragment in target",
                b"GET http://denied.example#@allowed.example/ HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "CONNECT authority-form",
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
                Host(Some("example.com:443")),
            ),
            (
                "CONNECT IPv6",
                b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
                Host(Some("[2001:db8::1]:443")),
            ),
            (
                "CONNECT disagreeing with Host",
                b"CONNECT allowed.example:443 HTTP/1.1\r\nHost: denied.example:443\r\n\r\n",
                Bad(HttpHostMismatch),
            ),
            (
                "CONNECT without port",
                b"CONNECT example.com HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "CONNECT origin-form",
                b"CONNECT / HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "authority-form without CONNECT",
                b"GET example.com:80 HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "OPTIONS *",
                b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n",
                Host(Some("example.com")),
            ),
            (
                "GET *",
                b"GET * HTTP/1.1\r\nHost: example.com\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "HTTP/1.0 without Host",
                b"GET / HTTP/1.0\r\n\r\n",
                Host(None),
            ),
            (
                "HTTP/1.1 without Host",
                b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
                Host(None),
            ),
            (
                "duplicate Host",
                b"GET / HTTP/1.1\r\nHost: allowed.example\r\nHost: denied.example\r\n\r\n",
                Bad(HttpDuplicateHost),
            ),
            (
                "duplicate Host, same value, other case",
                b"GET / HTTP/1.1\r\nHost: a.example\r\nHOST: a.example\r\n\r\n",
                Bad(HttpDuplicateHost),
            ),
            (
                "empty Host",
                b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
                Bad(HttpHostValue),
            ),
            (
                "Host with a space",
                b"GET / HTTP/1.1\r\nHost: a.example b.example\r\n\r\n",
                Bad(HttpHostValue),
            ),
            (
                "Host with a comma",
                b"GET / HTTP/1.1\r\nHost: a.example,b.example\r\n\r\n",
                Bad(HttpHostValue),
            ),
            (
                "Host with userinfo",
                b"GET / HTTP/1.1\r\nHost: a@b.example\r\n\r\n",
                Bad(HttpHostValue),
            ),
            (
                "Host with a slash",
                b"GET / HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
                Bad(HttpHostValue),
            ),
            (
                "Host with non-ASCII",
                "GET / HTTP/1.1\r\nHost: bücher.de\r\n\r\n".as_bytes(),
                Bad(HttpHostValue),
            ),
            (
                "obs-fold",
                b"GET / HTTP/1.1\r\nHost: allowed.example\r\nX-A: b\r\n denied.example\r\n\r\n",
                Bad(HttpObsFold),
            ),
            (
                "obs-fold with HTAB first",
                b"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n",
                Bad(HttpObsFold),
            ),
            (
                "bare LF in a header",
                b"GET / HTTP/1.1\r\nHost: a.example\n\r\n",
                Bad(HttpBareLf),
            ),
            (
                "bare LF after the request line",
                b"GET / HTTP/1.1\nHost: a\r\n\r\n",
                Bad(HttpBareLf),
            ),
            (
                "bare LF end of head",
                b"GET / HTTP/1.1\r\nHost: a\r\n\n",
                Bad(HttpBareLf),
            ),
            (
                "bare CR",
                b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
                Bad(HttpBareCr),
            ),
            (
                "space before colon",
                b"GET / HTTP/1.1\r\nHost : denied.example\r\n\r\n",
                Bad(HttpHeaderSyntax),
            ),
            (
                "tab before colon",
                b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
                Bad(HttpHeaderSyntax),
            ),
            (
                "header without colon",
                b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
                Bad(HttpHeaderSyntax),
            ),
            (
                "empty header name",
                b"GET / HTTP/1.1\r\n: a\r\n\r\n",
                Bad(HttpHeaderSyntax),
            ),
            (
                "control byte in a value",
                b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
                Bad(HttpHeaderValue),
            ),
            (
                "DEL in a value",
                b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
                Bad(HttpHeaderValue),
            ),
            (
                "obs-text and HTAB in a value are fine",
                b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\tx\r\nHost: a\r\n\r\n",
                Host(Some("a")),
            ),
            (
                "HTTP/2.0 version",
                b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
                Bad(HttpBadVersion),
            ),
            (
                "HTTP/1.2 version",
                b"GET / HTTP/1.2\r\n\r\n",
                Bad(HttpBadVersion),
            ),
            (
                "lowercase version",
                b"GET / http/1.1\r\n\r\n",
                Bad(HttpBadVersion),
            ),
            ("HTTP/0.9 request", b"GET /\r\n", Bad(HttpBadVersion)),
            ("no version", b"GET / FOO\r\n\r\n", Bad(HttpRequestLine)),
            (
                "two spaces after method",
                b"GET  / HTTP/1.1\r\n\r\n",
                Bad(HttpRequestLine),
            ),
            (
                "trailing space in request line",
                b"GET / HTTP/1.1 \r\n\r\n",
                Bad(HttpRequestLine),
            ),
            (
                "HTAB separator",
                b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
                Bad(HttpRequestLine),
            ),
            (
                "control byte in target",
                b"GET /a\x01b HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "non-ASCII target",
                b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",
                Bad(HttpRequestTarget),
            ),
            (
                "leading CRLF",
                b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Bad(HttpLeadingWhitespace),
            ),
            (
                "leading space",
                b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Bad(HttpLeadingWhitespace),
            ),
            (
                "incomplete head",
                b"GET / HTTP/1.1\r\nHost: example.com\r\n",
                NeedMore,
            ),
            ("incomplete request line", b"GET / HTTP/1.", NeedMore),
            (
                "extension method",
                b"PURGE /x HTTP/1.1\r\nHost: cdn.example\r\n\r\n",
                Host(Some("cdn.example")),
            ),
            (
                "lowercase method",
                b"get / HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Host(Some("a.example")),
            ),
            (
                "extension method with HTAB separators",
                b"FOO\t/\tHTTP/1.1\r\nHost: a.example\r\n\r\n",
                Bad(HttpRequestLine),
            ),
            (
                "space in target",
                b"FOO /a b HTTP/1.1\r\n\r\n",
                Bad(HttpRequestLine),
            ),
            ("GET and CRLF", b"GET\r\n", NotHttp),
            ("text line", b"SET key value\r\n", NotHttp),
            (
                "RTSP",
                b"DESCRIBE rtsp://cam.example/ RTSP/1.0\r\nCSeq: 1\r\n\r\n",
                NotHttp,
            ),
            ("SIP", b"INVITE sip:bob@example.com SIP/2.0\r\n", NotHttp),
            (
                "HTTP/2 preface",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                NotHttp,
            ),
            ("SSH", b"SSH-2.0-OpenSSH_9.6\r\n", NotHttp),
            ("binary", b"\x00\x01\x02\x03", NotHttp),
            (
                "Content-Length",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n",
                Host(Some("a")),
            ),
            (
                "Content-Length repeated with the same value",
                b"POST / HTTP/1.1\r\nHost: a\r\n\
                  Content-Length: 10, 10\r\nContent-Length: 10\r\n\r\n",
                Host(Some("a")),
            ),
            (
                "Content-Length values that differ",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nContent-Length: 11\r\n\r\n",
                Bad(HttpContentLength),
            ),
            (
                "Content-Length not a number",
                b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
                Bad(HttpContentLength),
            ),
            (
                "Content-Length negative",
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Bad(HttpContentLength),
            ),
            (
                "Content-Length empty",
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                Bad(HttpContentLength),
            ),
            (
                "Content-Length over u64",
                b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Bad(HttpContentLength),
            ),
            (
                "chunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Host(Some("a")),
            ),
            (
                "chunked over two lines",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
                Host(None),
            ),
            (
                "chunked not last",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Bad(HttpTransferEncoding),
            ),
            (
                "chunked twice",
                b"POST / HTTP/1.1\r\n\
                  Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Bad(HttpTransferEncoding),
            ),
            (
                "empty Transfer-Encoding",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n",
                Bad(HttpTransferEncoding),
            ),
            (
                "Transfer-Encoding in HTTP/1.0",
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Bad(HttpTransferEncoding),
            ),
            (
                "Content-Length and Transfer-Encoding",
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                Bad(HttpContentLengthAndTransferEncoding),
            ),
        ];
        for (name, input, want) in cases {
            let got = run(input);
            let ok = match (want, &got) {
                (Host(host), Outcome::Found(head)) => head.host.as_deref() == *host,
                (Bad(why), Outcome::Malformed(got)) => why == got,
                (NeedMore, Outcome::NeedMore) => true,
                (NotHttp, Outcome::NotThisProtocol) => true,
                _ => false,
            };
            assert!(ok, "{name}: want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn head_fields() {
        let input = b"POST http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\
            Content-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n";
        let parsed = head(input);
        assert_eq!(
            parsed,
            RequestHead {
                method: "POST".into(),
                target_form: TargetForm::Absolute,
                version: 1,
                host: Some("a.example".into()),
                head_len: input.len() - b"abcGET / HTTP/1.1\r\n".len(),
                framing: BodyFraming::ContentLength(3),
                upgrade: false,
            }
        );
        assert_eq!(parsed.name_source(), NameSource::Authority);
        assert!(head(b"GET / HTTP/1.1\r\nHost: a\r\nUPGRADE: websocket\r\n\r\n").upgrade);
        assert!(head(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").upgrade);

        let parsed = head(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(parsed.version, 0);
        assert_eq!(parsed.target_form, TargetForm::Origin);
        assert_eq!(parsed.framing, BodyFraming::None);
        assert_eq!(parsed.name_source(), NameSource::None);
        assert_eq!(parsed.head_len, 18);

        let parsed = head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(parsed.target_form, TargetForm::Asterisk);
        assert_eq!(parsed.name_source(), NameSource::Host);
        assert_eq!(parsed.name_source().as_str(), "host");

        let parsed = head(b"CONNECT a:443 HTTP/1.1\r\n\r\n");
        assert_eq!(parsed.target_form, TargetForm::Authority);
        assert_eq!(parsed.method, "CONNECT");

        let parsed = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(parsed.framing, BodyFraming::Chunked);
    }

    #[test]
    fn every_known_method_is_detected() {
        for method in KNOWN_METHODS {
            let target = match *method {
                "CONNECT" => "a.example:443",
                _ => "/",
            };
            let input = format!("{method} {target} HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
            assert_eq!(
                head(input.as_bytes()).host.as_deref(),
                Some("a.example:443")
            );
            // Known methods are HTTP as soon as the separator arrives.
            let detected = parse_request_head(format!("{method} \x01\r\n").as_bytes());
            assert!(matches!(detected, Outcome::Malformed(_)), "{method}");
        }
    }
}
