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

use std::ops::Range;

use super::{Malformed, Outcome};
use crate::name::{classify_authority, NameClass};

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
///
/// Each call reads `buf` from its start. For a buffer that grows between calls, a
/// [`HeadParser`] gives the same answers reading each byte about once.
pub fn parse_request_head(buf: &[u8]) -> Outcome<RequestHead> {
    HeadParser::new().feed(buf)
}

/// [`parse_request_head`] for a buffer that grows between calls, keeping its place.
///
/// Calling [`parse_request_head`] on the whole buffer at every callback re-reads everything
/// held so far each time: a head that arrives a byte at a time costs work quadratic in its
/// length. A `HeadParser` resumes where the previous call stopped, so the same head costs about
/// what one call on all of it does.
///
/// # Contract
///
/// Each [`HeadParser::feed`] passes the whole buffer so far: the bytes of the previous call,
/// unchanged, followed by any new ones. The answer is then exactly `parse_request_head(buf)` on
/// every call — not only "`NeedMore` or the final answer". Nothing is postponed: a malformed
/// head is refused at the same byte as by [`parse_request_head`] (a bare LF or CR at the byte
/// that shows it, a bad request line or header line at its CRLF), and detection answers
/// (`NotThisProtocol`, or HTTP) at the same byte too. Once the answer is final, later calls
/// return it again without parsing.
///
/// A buffer shorter than the previous one starts a new head, as after [`HeadParser::reset`]. A
/// buffer whose earlier bytes changed cannot be noticed cheaply: call [`HeadParser::reset`]
/// before feeding it.
///
/// # Work
///
/// The parse resumes in the leading whitespace, in the comparison with the HTTP/2 preface, in
/// the method token, in the scan of an extension method's first line for `HTTP/`, or in the
/// search for the end of the first incomplete line of the head. Each complete line is checked
/// once, when its CRLF arrives, and the head is put together once, at its blank line (reading
/// the request line and the Host value again). Per call, at most one byte is looked at again:
/// the `H` of a partial `HTTP/`, or a CR awaiting its LF.
#[derive(Debug, Clone, Default)]
pub struct HeadParser {
    /// Length of the buffer at the last call.
    seen: usize,
    /// The parser is in the middle of a head line and `buf[..seen]` holds no CR or LF after
    /// the line's start: only a CR or LF can change the answer (see [`HeadParser::skip_quiet`]).
    /// The calls that skip bytes this way move `seen` on, not the line's scan position, which
    /// catches up at the next call that parses ([`HeadParser::catch_up`]).
    mid_line: bool,
    stage: Stage,
}

/// Where a [`HeadParser`] stands. Positions are offsets in the buffer.
#[derive(Debug, Clone)]
enum Stage {
    /// Leading whitespace: `buf[..lead]` is all separators and LFs.
    Lead { lead: usize },
    /// The first `matched` bytes after the leading whitespace are those of the HTTP/2 preface.
    Preface { lead: usize, matched: usize },
    /// `buf[lead..end]` is the method token so far.
    Method { lead: usize, end: usize },
    /// Not a known method followed by SP: the first line is searched for `HTTP/` after
    /// whitespace, and `buf[..pos]` did not decide (`after_separator`: the byte before `pos` is
    /// a separator; `matched`: the first bytes of `HTTP/` that the bytes from `pos` on are).
    Line {
        lead: usize,
        pos: usize,
        after_separator: bool,
        matched: usize,
    },
    /// HTTP: the head, line by line.
    Head(Lines),
    /// The answer is known.
    Done(Outcome<RequestHead>),
}

impl Default for Stage {
    fn default() -> Stage {
        Stage::Lead { lead: 0 }
    }
}

/// What one stage made of the buffer.
enum Next {
    NeedMore,
    Stage(Stage),
}

impl Next {
    fn done(outcome: Outcome<RequestHead>) -> Next {
        Next::Stage(Stage::Done(outcome))
    }

    /// The first line shows HTTP.
    fn http(lead: usize) -> Next {
        if lead > 0 {
            Next::done(Outcome::Malformed(Malformed::HttpLeadingWhitespace))
        } else {
            Next::Stage(Stage::Head(Lines::default()))
        }
    }
}

impl HeadParser {
    /// A parser at the start of a head.
    pub fn new() -> HeadParser {
        HeadParser::default()
    }

    /// Forgets everything: the next buffer is a new head.
    pub fn reset(&mut self) {
        *self = HeadParser::default();
    }

    /// The answer for `buf`, the whole buffer so far (see the type's contract): exactly
    /// [`parse_request_head`]'s.
    pub fn feed(&mut self, buf: &[u8]) -> Outcome<RequestHead> {
        if buf.len() < self.seen {
            self.reset();
        }
        if self.skip_quiet(buf) {
            // Mid-line: nothing is checked before the line's CR or LF arrives.
            return Outcome::NeedMore;
        }
        self.catch_up();
        self.seen = buf.len();
        loop {
            let next = match &mut self.stage {
                Stage::Done(outcome) => return outcome.clone(),
                Stage::Lead { lead } => leading_whitespace(buf, lead),
                Stage::Preface { lead, matched } => preface(buf, *lead, matched),
                Stage::Method { lead, end } => method(buf, *lead, end),
                Stage::Line {
                    lead,
                    pos,
                    after_separator,
                    matched,
                } => first_line(buf, *lead, pos, after_separator, matched),
                Stage::Head(lines) => lines.step(buf),
            };
            match next {
                Next::NeedMore => {
                    self.mid_line = self.quiet_from(buf.len());
                    return Outcome::NeedMore;
                }
                Next::Stage(stage) => self.stage = stage,
            }
        }
    }
}

impl HeadParser {
    /// [`HeadParser::feed`]'s answer for `buf` when it is `NeedMore` without a look: `true` (and
    /// the call is accounted for) if the parser is in the middle of a header line, `buf` extends
    /// the last call's, and the new bytes hold no CR or LF, or only a CR as their last byte;
    /// `false` if `buf` must be fed. The fixed cost of a call is what a client sending a byte
    /// per packet multiplies: here one flag, one comparison and a look at the new bytes.
    /// [`Lines::line_end`] goes on from where these bytes end, so each byte is read once by
    /// this check and once by the parse.
    #[inline]
    pub(super) fn skip_quiet(&mut self, buf: &[u8]) -> bool {
        if !self.mid_line {
            return false;
        }
        let Some(new) = buf.get(self.seen..) else {
            return false;
        };
        if no_line_end(new) {
            self.seen = buf.len();
            return true;
        }
        self.skip_to_cr(buf.len(), new)
    }

    /// The new bytes `new`, which end the buffer of `len` bytes, are a CR after no CR or LF:
    /// the line's end is not known until the next byte, and the answer is `NeedMore`, as
    /// [`Lines::line_end`] says, which would stop at the CR in the same way.
    #[cold]
    fn skip_to_cr(&mut self, len: usize, new: &[u8]) -> bool {
        let Some((b'\r', before)) = new.split_last() else {
            return false;
        };
        let Stage::Head(lines) = &mut self.stage else {
            return false;
        };
        if !no_line_end(before) {
            return false;
        }
        lines.scanned = len.saturating_sub(1);
        self.mid_line = false;
        self.seen = len;
        true
    }

    /// Length of the buffer at the last call (0 before the first, and after a reset).
    #[inline]
    pub(super) fn seen(&self) -> usize {
        self.seen
    }

    /// Before a parse: the line's scan position moves past the bytes skipped meanwhile.
    fn catch_up(&mut self) {
        if std::mem::take(&mut self.mid_line) {
            if let Stage::Head(lines) = &mut self.stage {
                lines.scanned = lines.scanned.max(self.seen);
            }
        }
    }

    /// Whether, having just answered `NeedMore` for a buffer of `len` bytes, the parser waits
    /// only for a CR or LF: it is in the middle of a line, with everything before scanned.
    #[inline]
    pub(crate) fn quiet_from(&self, len: usize) -> bool {
        matches!(&self.stage, Stage::Head(lines) if lines.scanned == len && self.seen == len && lines.pos <= len)
    }
}

/// Whether `bytes` hold no CR and no LF.
#[inline]
pub(super) fn no_line_end(bytes: &[u8]) -> bool {
    match bytes {
        // A byte per call: the common case worth a shortcut.
        [b] => *b != b'\r' && *b != b'\n',
        _ => !bytes.iter().any(|&b| b == b'\r' || b == b'\n'),
    }
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

// Detection: whether the bytes after any leading whitespace start an HTTP/1 request, in the
// order of the checks: the HTTP/2 preface, a known method and SP, then any token, separator
// and `HTTP/` later on the line.

/// Extends the leading whitespace (separators and LFs, which lenient servers skip).
fn leading_whitespace(buf: &[u8], lead: &mut usize) -> Next {
    let rest = buf.get(*lead..).unwrap_or_default();
    let n = rest
        .iter()
        .take_while(|&&b| is_separator(b) || b == b'\n')
        .count();
    work!(rest.len().min(n.saturating_add(1)));
    *lead = lead.saturating_add(n);
    if n == rest.len() {
        return Next::NeedMore;
    }
    Next::Stage(Stage::Preface {
        lead: *lead,
        matched: 0,
    })
}

/// Compares the line with the HTTP/2 preface: that preface is not HTTP/1, any prefix of it may
/// still become it.
fn preface(buf: &[u8], lead: usize, matched: &mut usize) -> Next {
    let line = buf.get(lead..).unwrap_or_default();
    while let Some(&want) = H2_PREFACE.get(*matched) {
        let Some(&got) = line.get(*matched) else {
            return Next::NeedMore;
        };
        work!(1);
        if got != want {
            return Next::Stage(Stage::Method { lead, end: lead });
        }
        *matched = matched.saturating_add(1);
    }
    Next::done(Outcome::NotThisProtocol)
}

/// Reads the method token and what follows it.
fn method(buf: &[u8], lead: usize, end: &mut usize) -> Next {
    let rest = buf.get(*end..).unwrap_or_default();
    let n = rest.iter().take_while(|&&b| is_tchar(b)).count();
    work!(rest.len().min(n.saturating_add(1)));
    *end = end.saturating_add(n);
    let method = buf.get(lead..*end).unwrap_or_default();
    match buf.get(*end) {
        None => Next::NeedMore,
        Some(_) if method.is_empty() => Next::done(Outcome::NotThisProtocol),
        Some(b' ') if KNOWN_METHODS.iter().any(|m| m.as_bytes() == method) => Next::http(lead),
        Some(&b) if is_separator(b) => Next::Stage(Stage::Line {
            lead,
            pos: *end,
            after_separator: false,
            matched: 0,
        }),
        Some(_) => Next::done(Outcome::NotThisProtocol),
    }
}

/// Any other token: HTTP once the line shows `HTTP/` after whitespace. A byte that no lenient
/// server takes as part of a request line, or the end of the line, says "not HTTP".
fn first_line(
    buf: &[u8],
    lead: usize,
    pos: &mut usize,
    after_separator: &mut bool,
    matched: &mut usize,
) -> Next {
    while let Some(&b) = buf.get(*pos) {
        work!(1);
        if is_separator(b) {
            *after_separator = true;
            *pos = pos.saturating_add(1);
            continue;
        }
        if !is_lenient_target_byte(b) {
            return Next::done(Outcome::NotThisProtocol);
        }
        if *after_separator && matches!(b, b'H' | b'h') {
            // Stays at this byte until the five bytes are there (or differ); the bytes already
            // matched are not compared again.
            let candidate = buf.get(*pos..).unwrap_or_default();
            let n = candidate.len().min(5);
            let new = (candidate.get(*matched..n), b"HTTP/".get(*matched..n));
            work!(n.saturating_sub(*matched));
            if let (Some(got), Some(want)) = new {
                if got.eq_ignore_ascii_case(want) {
                    if n == 5 {
                        return Next::http(lead);
                    }
                    *matched = n;
                    return Next::NeedMore;
                }
            }
            *matched = 0;
        }
        *after_separator = false;
        *pos = pos.saturating_add(1);
    }
    Next::NeedMore
}

/// Optional whitespace (SP, HTAB) trimmed from both ends.
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    bytes.get(trim_ows_span(bytes)).unwrap_or_default()
}

/// Where `bytes` is without optional whitespace at both ends.
fn trim_ows_span(bytes: &[u8]) -> Range<usize> {
    let is_ows = |b: &&u8| **b == b' ' || **b == b'\t';
    let start = bytes.iter().take_while(is_ows).count();
    let rest = bytes.get(start..).unwrap_or_default();
    let end = bytes.len() - rest.iter().rev().take_while(is_ows).count();
    start..end
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
    work!(line.len());
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

/// Headers that matter, gathered line by line (the Host value as its place in the buffer).
#[derive(Debug, Clone, Default)]
struct Fields {
    host: Option<Range<usize>>,
    content_length: Option<u64>,
    transfer_encoding: Option<TransferCodings>,
    upgrade: bool,
}

/// The Transfer-Encoding codings seen so far, across all Transfer-Encoding lines.
#[derive(Debug, Clone, Default)]
pub(super) struct TransferCodings {
    pub(super) count: usize,
    pub(super) chunked: usize,
    pub(super) last_is_chunked: bool,
}

/// The head of a request detected as HTTP (with no leading whitespace), line by line.
#[derive(Debug, Clone, Default)]
struct Lines {
    /// Start of the first line not yet complete.
    pos: usize,
    /// `buf[pos..scanned]` holds no CR or LF.
    scanned: usize,
    /// Where the request line ends (its CR), and its version, once it is checked.
    request: Option<(usize, u8)>,
    fields: Fields,
}

impl Lines {
    fn step(&mut self, buf: &[u8]) -> Next {
        match self.parse(buf) {
            Ok(Some(head)) => Next::done(Outcome::Found(head)),
            Ok(None) => Next::NeedMore,
            Err(why) => Next::done(Outcome::Malformed(why)),
        }
    }

    /// Checks each line completed since the last call; the head at its blank line.
    fn parse(&mut self, buf: &[u8]) -> Result<Option<RequestHead>, Malformed> {
        loop {
            let Some(end) = self.line_end(buf)? else {
                return Ok(None);
            };
            let line = buf.get(self.pos..end).unwrap_or_default();
            let next = end.saturating_add(2);
            match self.request {
                None => {
                    let request = parse_request_line(line)?;
                    self.request = Some((end, request.version));
                }
                Some((request_end, _)) if line.is_empty() => {
                    return self.finish(buf, request_end, next).map(Some);
                }
                Some((_, version)) => field_line(line, self.pos, version, &mut self.fields)?,
            }
            self.pos = next;
            self.scanned = next;
        }
    }

    /// Where the line at `pos` ends (its CR), once its CRLF has arrived. Every line ends with
    /// CRLF: the first CR or LF decides.
    fn line_end(&mut self, buf: &[u8]) -> Result<Option<usize>, Malformed> {
        let from = self.scanned.max(self.pos);
        let rest = buf.get(from..).unwrap_or_default();
        let Some(offset) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            work!(rest.len());
            self.scanned = buf.len();
            return Ok(None);
        };
        work!(offset.saturating_add(1));
        let end = from.saturating_add(offset);
        match (buf.get(end), buf.get(end.saturating_add(1))) {
            (Some(b'\r'), Some(b'\n')) => Ok(Some(end)),
            (Some(b'\r'), None) => {
                self.scanned = end;
                Ok(None)
            }
            (Some(b'\r'), Some(_)) => Err(Malformed::HttpBareCr),
            _ => Err(Malformed::HttpBareLf),
        }
    }

    /// The head, at its blank line (`head_len` bytes with it).
    fn finish(
        &self,
        buf: &[u8],
        request_end: usize,
        head_len: usize,
    ) -> Result<RequestHead, Malformed> {
        let request = parse_request_line(buf.get(..request_end).unwrap_or_default())?;
        let fields = &self.fields;
        let framing = match (fields.content_length, &fields.transfer_encoding) {
            (_, Some(te)) if te.count == 0 || te.chunked != 1 || !te.last_is_chunked => {
                return Err(Malformed::HttpTransferEncoding)
            }
            (Some(_), Some(_)) => return Err(Malformed::HttpContentLengthAndTransferEncoding),
            (None, Some(_)) => BodyFraming::Chunked,
            (Some(len), None) => BodyFraming::ContentLength(len),
            (None, None) => BodyFraming::None,
        };
        let host_value = fields
            .host
            .clone()
            .map(|span| buf.get(span).unwrap_or_default());
        let host = match (request.authority, host_value) {
            (Some(authority), Some(host)) if !same_host(authority, host) => {
                return Err(Malformed::HttpHostMismatch)
            }
            (Some(authority), _) => Some(authority),
            (None, host) => host,
        };
        Ok(RequestHead {
            method: ascii_string(request.method, Malformed::HttpRequestLine)?,
            target_form: request.form,
            version: request.version,
            host: host
                .map(|h| ascii_string(h, Malformed::HttpHostValue))
                .transpose()?,
            head_len,
            framing,
            upgrade: fields.upgrade || request.method == b"CONNECT",
        })
    }
}

/// Checks one header line, which starts at `at` in the buffer, and records what matters.
fn field_line(line: &[u8], at: usize, version: u8, fields: &mut Fields) -> Result<(), Malformed> {
    work!(line.len());
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
    let raw = rest.get(1..).unwrap_or_default();
    let span = trim_ows_span(raw);
    let value = raw.get(span.clone()).unwrap_or_default();
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
        let raw_at = at.saturating_add(colon).saturating_add(1);
        fields.host = Some(raw_at.saturating_add(span.start)..raw_at.saturating_add(span.end));
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

    /// Parses `input` whole and on every prefix (directly, through `sniff`, and with one
    /// [`HeadParser`] fed every prefix in turn, which must answer as a fresh parse of each).
    fn run(input: &[u8]) -> Outcome<RequestHead> {
        let whole = parse_request_head(input);
        let sniffed = sniff_every_prefix(input, 1 << 20);
        let expect = match &whole {
            Outcome::Found(head) => Sniffed::http(head.host.clone(), head.head_len),
            Outcome::Malformed(why) => Sniffed::Malformed(*why),
            Outcome::NeedMore => Sniffed::NeedMore,
            Outcome::NotThisProtocol => Sniffed::Other,
        };
        assert_eq!(sniffed, expect);
        let mut settled = false;
        let mut parser = HeadParser::new();
        for end in 0..=input.len() {
            let got = parse_request_head(&input[..end]);
            assert_eq!(
                parser.feed(&input[..end]),
                got,
                "resumed, prefix of {end} bytes"
            );
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

    /// Inside a header line every call is answered without a parse, the second and later ones
    /// too, and a CR as the last new byte as well; the LF after it, a bare CR, a bare LF or a
    /// shorter buffer go to the parse. The answers are always a fresh parse's.
    #[test]
    fn the_middle_of_a_line_is_skipped_on_every_call() {
        let start: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\nX: ";
        let line = b"abc\r\n\r\n";
        let mut parser = HeadParser::new();
        assert_eq!(parser.feed(start), Outcome::NeedMore);
        let mut buf = start.to_vec();
        for (i, &b) in line.iter().enumerate() {
            buf.push(b);
            let quiet = parser.clone().skip_quiet(&buf);
            // `abc` and the CR are skipped; the LF ends the line; the blank line's CR is
            // skipped too, its LF ends the head.
            assert_eq!(quiet, i != 4 && i != 6, "byte {i}");
            assert_eq!(parser.feed(&buf), parse_request_head(&buf), "byte {i}");
        }
        assert!(matches!(parser.feed(&buf), Outcome::Found(_)));

        for (tail, want) in [
            (&b"ab\rc"[..], Malformed::HttpBareCr),
            (b"ab\nc", Malformed::HttpBareLf),
            (b"ab\r\r", Malformed::HttpBareCr),
        ] {
            let mut parser = HeadParser::new();
            let mut buf = start.to_vec();
            assert_eq!(parser.feed(&buf), Outcome::NeedMore);
            for &b in tail {
                buf.push(b);
                assert_eq!(parser.feed(&buf), parse_request_head(&buf));
            }
            assert_eq!(parser.feed(&buf), Outcome::Malformed(want));
            // Several bytes at once, a CR before the last: not skipped.
            let mut parser = HeadParser::new();
            assert_eq!(parser.feed(start), Outcome::NeedMore);
            assert!(!parser.clone().skip_quiet(&buf));
            assert_eq!(parser.feed(&buf), Outcome::Malformed(want));
        }

        // A shorter buffer is not the middle of the same line.
        let mut parser = HeadParser::new();
        assert_eq!(parser.feed(start), Outcome::NeedMore);
        assert!(!parser.skip_quiet(&start[..start.len() - 1]));
        assert!(parser.skip_quiet(start));
    }
}
