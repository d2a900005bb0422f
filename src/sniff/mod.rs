//! Pure parsers of a connection's first client bytes.
//!
//! [`sniff`] decides what the client's first bytes are: a TLS ClientHello ([`tls`]), an HTTP/1
//! request head ([`http`]), something else, or not known yet. The parsers are security controls
//! (docs/design.md, "Malformed input is denied in every mode"): once bytes are recognised as TLS
//! or HTTP, every violation is [`Malformed`], never "no name" or "not this protocol", and
//! anything a server could read differently from us is a violation. A missing name (a
//! ClientHello without SNI, a request without `Host`) is not malformed.
//!
//! All parsers take the whole buffer held so far and are called again when more bytes arrive.
//! For every input, the answer for a prefix is either [`Outcome::NeedMore`] or the answer for
//! the whole input, so bytes split at any point give the same result.
//!
//! The functions ([`sniff`], [`http::parse_request_head`], [`tls::parse_client_hello`]) read the
//! buffer from its start on every call, which costs work quadratic in its length when a message
//! arrives in small pieces. [`Sniffer`] and [`http::HeadParser`] hold their place between calls
//! instead and give exactly the same answers, so a message costs about the same however it is
//! split: that is what the filter uses on a growing buffer.

/// Counts `$n` bytes examined by a parser, in tests only ([`work`]); nothing otherwise.
macro_rules! work {
    ($n:expr) => {
        #[cfg(test)]
        $crate::sniff::work::add($n);
    };
}

pub mod chunked;
pub mod http;
pub mod pipeline;
pub mod response;
pub mod tls;

/// The parsers' work in tests: how many bytes they examined on this thread (each byte once per
/// look). The work-bound tests compare a message fed byte by byte with the same message parsed
/// in one call.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static BYTES: Cell<u64> = const { Cell::new(0) };
    }

    /// Records `n` bytes examined.
    pub(crate) fn add(n: usize) {
        BYTES.with(|b| b.set(b.get().saturating_add(n as u64)));
    }

    /// Runs `f`, returning its result and the bytes the parsers examined meanwhile.
    pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let start = BYTES.with(Cell::get);
        let result = f();
        (result, BYTES.with(Cell::get) - start)
    }
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod resume_tests;
// Native only (rustls); the file carries `#![cfg(not(target_arch = "wasm32"))]`.
#[cfg(test)]
mod real_tls_tests;

/// What one parser made of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// The bytes so far are a proper prefix of this protocol's message: call again with more.
    NeedMore,
    /// A complete, well-formed message.
    Found(T),
    /// The bytes are not this protocol (decided on the first few bytes only).
    NotThisProtocol,
    /// The bytes are this protocol but break its rules: the connection is denied.
    Malformed(Malformed),
}

crate::labels::labelled! {
    /// Why bytes recognised as TLS or HTTP are malformed. Each reason has a stable label
    /// ([`Malformed::as_str`]) used in counters and logs.
    ///
    /// A word wide, as the boxes in [`Sniffed`]: with every payload a word at the same place,
    /// a `Sniffed` is returned in two registers rather than through memory.
    #[repr(usize)]
    pub enum Malformed {
        /// A TLS record of another content type (alert, change_cipher_spec, application data,
        /// heartbeat) before the ClientHello is complete, including as the very first record.
        TlsRecordType => "tls_record_type",
        /// A TLS record whose legacy version is not 0x0301..=0x0304.
        TlsRecordVersion => "tls_record_version",
        /// A TLS record whose length is 0 or over 2^14 (RFC 8446 §5.1).
        TlsRecordLength => "tls_record_length",
        /// The first handshake message is not a ClientHello.
        TlsNotClientHello => "tls_not_client_hello",
        /// A ClientHello field overruns the handshake message: the handshake length lies.
        TlsHandshakeLength => "tls_handshake_length",
        /// More handshake bytes follow the ClientHello in its last record.
        TlsTrailingHandshakeData => "tls_trailing_handshake_data",
        /// ClientHello.legacy_version is not 3.x.
        TlsClientHelloVersion => "tls_client_hello_version",
        /// ClientHello.legacy_session_id is longer than 32 bytes.
        TlsSessionId => "tls_session_id",
        /// ClientHello.cipher_suites is empty or of odd length.
        TlsCipherSuites => "tls_cipher_suites",
        /// ClientHello.legacy_compression_methods is empty.
        TlsCompressionMethods => "tls_compression_methods",
        /// The extensions block length does not match the rest of the ClientHello, or an extension
        /// overruns it.
        TlsExtensions => "tls_extensions",
        /// The same extension type (other than server_name) appears twice.
        TlsDuplicateExtension => "tls_duplicate_extension",
        /// The server_name extension appears twice.
        TlsSniDuplicateExtension => "tls_sni_duplicate_extension",
        /// An empty server_name extension (the form a server sends) in a ClientHello.
        TlsSniEmptyExtension => "tls_sni_empty_extension",
        /// The server_name_list length is zero or does not match its extension, or an entry
        /// overruns it.
        TlsSniList => "tls_sni_list",
        /// A server_name entry whose name_type is not host_name (0).
        TlsSniNameType => "tls_sni_name_type",
        /// More than one entry in the server_name_list.
        TlsSniMultipleNames => "tls_sni_multiple_names",
        /// A zero-length host_name.
        TlsSniEmptyName => "tls_sni_empty_name",
        /// A host_name with a byte that is not ASCII.
        TlsSniNonAscii => "tls_sni_non_ascii",
        /// An `ech_outer_extensions` extension (0xfd00) in a ClientHello on the wire: RFC 9849
        /// §5.1 allows it only inside the encrypted inner hello.
        TlsEchOuterExtensions => "tls_ech_outer_extensions",
        /// An SSLv2-compatible ClientHello (RFC 5246 Appendix E.2), which carries no extensions.
        TlsSslv2Hello => "tls_sslv2_hello",
        /// Whitespace or empty lines before an HTTP request line (some servers skip them, some
        /// reject them).
        HttpLeadingWhitespace => "http_leading_whitespace",
        /// The request line is not `method SP request-target SP HTTP-version CRLF`.
        HttpRequestLine => "http_request_line",
        /// The request target is not a valid origin-, absolute- (http/https), authority- (only with
        /// CONNECT, with a port) or asterisk-form (only with OPTIONS), or has a fragment.
        HttpRequestTarget => "http_request_target",
        /// An HTTP version other than HTTP/1.0 and HTTP/1.1, or none (HTTP/0.9).
        HttpBadVersion => "http_bad_version",
        /// A line ended by LF without CR.
        HttpBareLf => "http_bare_lf",
        /// A CR not followed by LF.
        HttpBareCr => "http_bare_cr",
        /// A header line without a colon, with an empty or non-token name, or with whitespace
        /// before the colon.
        HttpHeaderSyntax => "http_header_syntax",
        /// A control byte (other than HTAB) in a header value.
        HttpHeaderValue => "http_header_value",
        /// A header line starting with whitespace (obsolete line folding).
        HttpObsFold => "http_obs_fold",
        /// More than one Host header.
        HttpDuplicateHost => "http_duplicate_host",
        /// A Host value that is empty or is not one authority (spaces, commas, `@`, ...).
        HttpHostValue => "http_host_value",
        /// The request target's authority and the Host header name different hosts.
        HttpHostMismatch => "http_host_mismatch",
        /// A Content-Length that is not a decimal number, or several that differ.
        HttpContentLength => "http_content_length",
        /// A Transfer-Encoding whose final coding is not a single `chunked`, or any
        /// Transfer-Encoding in an HTTP/1.0 request.
        HttpTransferEncoding => "http_transfer_encoding",
        /// Both Content-Length and Transfer-Encoding (the request-smuggling shape).
        HttpContentLengthAndTransferEncoding => "http_cl_and_te",
        /// A chunked request body that breaks the chunk syntax (later requests are then unknowable).
        HttpChunkedBody => "http_chunked_body",
        /// Bytes after a complete request that do not start another request head.
        HttpNotARequest => "http_not_a_request",
    }
}

/// What the first client bytes turned out to be.
///
/// Sixteen bytes, so that it is returned in registers: [`Sniffer::feed`] answers once per
/// callback, mostly [`Sniffed::NeedMore`], and a larger answer is copied through memory on every
/// call. The rare answers with a name are boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// Too few bytes to tell: call again with more (or decide on IP and port at the timeout).
    NeedMore,
    /// A complete TLS ClientHello: its raw SNI `host_name` (not normalised), `None` without a
    /// server_name extension, and whether it carries `encrypted_client_hello`.
    Tls(Box<tls::ClientHello>),
    /// A complete HTTP/1 request head.
    Http(Box<HttpHead>),
    /// Neither TLS nor HTTP/1 (including the HTTP/2 prior-knowledge preface): decided on IP
    /// and port.
    Other,
    /// Recognised as TLS or HTTP but breaking its rules: denied in every mode.
    Malformed(Malformed),
    /// The message does not fit in `max_bytes`.
    TooLarge,
}

// The point of the boxes above.
const _: () = assert!(std::mem::size_of::<Sniffed>() <= 16);

/// What [`Sniffed::Http`] says of a complete HTTP/1 request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// The raw name source: the absolute-form or authority-form target's authority, else the
    /// Host value (either may carry a `:port`); `None` without either.
    pub host: Option<String>,
    /// Bytes up to and including the blank line that ends the head.
    pub head_len: usize,
}

impl Sniffed {
    /// [`Sniffed::Tls`] with this raw SNI and ECH flag.
    pub fn tls(sni: Option<String>, ech: bool) -> Sniffed {
        Sniffed::Tls(Box::new(tls::ClientHello { sni, ech }))
    }

    /// [`Sniffed::Http`] with this raw name source and head length.
    pub fn http(host: Option<String>, head_len: usize) -> Sniffed {
        Sniffed::Http(Box::new(HttpHead { host, head_len }))
    }

    /// Stable snake_case label of the outcome, for the per-outcome counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Sniffed::NeedMore => "need_more",
            Sniffed::Tls(hello) if hello.sni.is_some() => "tls_sni",
            Sniffed::Tls(_) => "tls_no_sni",
            Sniffed::Http(head) if head.host.is_some() => "http_host",
            Sniffed::Http(_) => "http_no_host",
            Sniffed::Other => "other",
            Sniffed::Malformed(_) => "malformed",
            Sniffed::TooLarge => "too_large",
        }
    }
}

/// Classify the client's first bytes (the whole buffer held so far), with a cap of `max_bytes`.
///
/// TLS is tried first (a first byte of 0x16, or the shape of another TLS record or of an
/// SSLv2-compatible hello), then HTTP/1 (a request line; see [`http::parse_request_head`] for
/// detection), else [`Sniffed::Other`].
///
/// Only the first `max_bytes` bytes are looked at, so the answer does not depend on how the
/// bytes were split into reads: a message is found only if it ends within `max_bytes`. While the
/// parsers still need more, the answer is [`Sniffed::TooLarge`] once `max_bytes` bytes are held
/// or once a TLS length field proves the ClientHello (with its record headers) will end beyond
/// `max_bytes`.
///
/// Each call reads `buf` from its start; on a buffer that grows, use a [`Sniffer`].
pub fn sniff(buf: &[u8], max_bytes: usize) -> Sniffed {
    Sniffer::new().feed(buf, max_bytes)
}

/// [`sniff`] for a buffer that grows between calls: it keeps its place in the ClientHello or
/// request head and does not read again what it has read.
///
/// # Contract
///
/// Each [`Sniffer::feed`] passes the whole buffer held so far — the bytes of the previous call,
/// unchanged, followed by any new ones — and the same `max_bytes`. Its answer is then exactly
/// `sniff(buf, max_bytes)`, on every call: the same outcome at the same byte, `NeedMore` included.
/// No check is put off to a later call, so a malformed message is refused, and a client that is
/// neither TLS nor HTTP is `Other`, as early as [`sniff`] says so. Once the answer is final it is
/// returned again without parsing.
///
/// A buffer shorter than the previous one, or another `max_bytes`, starts over (as
/// [`Sniffer::reset`]). A buffer whose earlier bytes changed cannot be noticed cheaply: call
/// [`Sniffer::reset`] before feeding it.
///
/// # Work
///
/// A TLS ClientHello is walked record by record, each record once it is complete, and its body
/// is parsed once, when it is complete; a record still arriving costs a few header and length
/// checks per call. An HTTP request head resumes as [`http::HeadParser`] describes: each line is
/// checked once, when its CRLF arrives. So a message fed one byte per call costs its one-call
/// parse plus a small constant per call, where calling [`sniff`] each time costs the square of
/// its length (a 64 KiB request head a byte at a time: about 2^31 bytes read).
#[derive(Debug, Clone, Default)]
pub struct Sniffer {
    /// The cap the progress below was made under.
    max_bytes: usize,
    /// Length of the buffer at the last call, unless the HTTP parser skipped it
    /// ([`http::HeadParser::skip_quiet`] keeps its own): the larger of the two is it
    /// ([`Sniffer::seen`]). One store per skipped call instead of two.
    seen: usize,
    tls: tls::HelloParser,
    http: http::HeadParser,
    /// The final answer, once there is one.
    done: Option<Sniffed>,
    /// After a `NeedMore` in the middle of a TLS record: a buffer shorter than this cannot change
    /// the answer (0 otherwise). In the middle of an HTTP line, [`http::HeadParser::skip_quiet`]
    /// says so instead. Either way a call that brings nothing the parsers wait for answers
    /// `NeedMore` at once: a client sending a byte per packet pays this per byte.
    quiet_until: usize,
    /// After a `NeedMore` in the middle of a TLS record header: the next byte, if it passes
    /// its check, is `NeedMore` too ([`tls::HelloParser::skip_header_byte`]).
    tls_header: bool,
}

impl Sniffer {
    /// A sniffer that has seen nothing.
    pub fn new() -> Sniffer {
        Sniffer::default()
    }

    /// Forgets everything: the next buffer is read from its start.
    pub fn reset(&mut self) {
        *self = Sniffer::default();
    }

    /// The answer for `buf`, the whole buffer held so far, with a cap of `max_bytes` (see the
    /// type's contract): exactly [`sniff`]'s.
    ///
    /// Always inlined: the calls answered without a parse cost a few loads and compares, less
    /// than a call (rustc stopped inlining it once it had three such paths).
    #[inline(always)]
    pub fn feed(&mut self, buf: &[u8], max_bytes: usize) -> Sniffed {
        // `NeedMore` without a parse if `buf` brings nothing the parsers wait for: it stays
        // short of the cap, and either the HTTP parser is in the middle of a line that the new
        // bytes do not end (it accounts for them), or the TLS parser is in the middle of a
        // record that the buffer does not complete, or of a record header that the one new byte
        // does not complete and passes the checks of. (The HTTP parser is in the middle of a line
        // only after answering `NeedMore` to the last call, which made no final answer; the TLS
        // parser waits only if the last call went through it, so `self.seen` is then current.)
        let len = buf.len();
        if max_bytes == self.max_bytes && len < max_bytes {
            if self.http.skip_quiet(buf) {
                return Sniffed::NeedMore;
            }
            if self.seen <= len && len < self.quiet_until {
                self.seen = len;
                return Sniffed::NeedMore;
            }
            if self.tls_header && len == self.seen.wrapping_add(1) && self.tls.skip_header_byte(buf)
            {
                self.seen = len;
                return Sniffed::NeedMore;
            }
        }
        self.feed_slow(buf, max_bytes)
    }

    /// Length of the buffer at the last call (0 before the first).
    fn seen(&self) -> usize {
        self.seen.max(self.http.seen())
    }

    fn feed_slow(&mut self, buf: &[u8], max_bytes: usize) -> Sniffed {
        self.quiet_until = 0;
        self.tls_header = false;
        if buf.len() < self.seen() || max_bytes != self.max_bytes {
            self.reset();
            self.max_bytes = max_bytes;
        }
        self.seen = buf.len();
        if let Some(done) = &self.done {
            return done.clone();
        }
        match self.answer(buf, max_bytes) {
            // A fresh value rather than the one returned: the common path, once per callback,
            // then writes the tag alone instead of copying the whole answer.
            Sniffed::NeedMore => {
                if self.tls.quiet_until() > buf.len() {
                    self.quiet_until = self.tls.quiet_until();
                }
                self.tls_header = self.tls.in_header();
                Sniffed::NeedMore
            }
            answer => {
                self.done = Some(answer.clone());
                answer
            }
        }
    }

    fn answer(&mut self, buf: &[u8], max_bytes: usize) -> Sniffed {
        let buf = buf.get(..max_bytes).unwrap_or(buf);
        let full = buf.len() >= max_bytes;
        match self.tls.resume(buf, max_bytes) {
            Err(tls::TooLarge) => return Sniffed::TooLarge,
            Ok(Outcome::Found(hello)) => return Sniffed::Tls(Box::new(hello)),
            Ok(Outcome::Malformed(why)) => return Sniffed::Malformed(why),
            Ok(Outcome::NeedMore) if full => return Sniffed::TooLarge,
            Ok(Outcome::NeedMore) => return Sniffed::NeedMore,
            Ok(Outcome::NotThisProtocol) => {}
        }
        match self.http.feed(buf) {
            Outcome::Found(head) => Sniffed::http(head.host, head.head_len),
            Outcome::Malformed(why) => Sniffed::Malformed(why),
            Outcome::NeedMore if full => Sniffed::TooLarge,
            Outcome::NeedMore => Sniffed::NeedMore,
            Outcome::NotThisProtocol => Sniffed::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Sniffs every prefix of `input`: each answer is `NeedMore` or the final answer, and once
    /// it is final it stays final. One [`Sniffer`] fed every prefix in turn (the bytes arriving
    /// one at a time) answers exactly as `sniff` on each. Returns the final answer.
    pub(crate) fn sniff_every_prefix(input: &[u8], max_bytes: usize) -> Sniffed {
        let last = sniff(input, max_bytes);
        let mut settled = false;
        let mut sniffer = Sniffer::new();
        for end in 0..=input.len() {
            let got = sniff(&input[..end], max_bytes);
            assert_eq!(
                sniffer.feed(&input[..end], max_bytes),
                got,
                "Sniffer, prefix of {end} bytes"
            );
            if settled {
                assert_eq!(got, last, "prefix of {end} bytes after the answer settled");
            } else if got != Sniffed::NeedMore {
                assert_eq!(got, last, "prefix of {end} bytes");
                settled = true;
            }
        }
        last
    }

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for why in Malformed::ALL {
            let label = why.as_str();
            assert!(seen.insert(label), "duplicate label {label}");
            assert!(label.starts_with("tls_") || label.starts_with("http_"));
            assert!(label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert_eq!(why.to_string(), label);
        }
    }

    #[test]
    fn detection() {
        let other = Sniffed::Other;
        let cases: &[(&[u8], Sniffed)] = &[
            (b"", Sniffed::NeedMore),
            (b"G", Sniffed::NeedMore),
            (b"GE", Sniffed::NeedMore),
            (b"GET", Sniffed::NeedMore),
            (b"GET ", Sniffed::NeedMore),
            (b"GET / HTTP/1.1\r\n", Sniffed::NeedMore),
            (
                b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
                Sniffed::http(Some("a.example".into()), 35),
            ),
            (b"GET x", Sniffed::NeedMore),
            (b"GET\x00", other.clone()),
            (b"\x16", Sniffed::NeedMore),
            (b"\x16\x03\x01", Sniffed::NeedMore),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", other.clone()), // PostgreSQL SSLRequest
            (b"SSH-2.0-OpenSSH_9.6\r\n", other.clone()),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", other.clone()),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                other.clone(),
            ),
            (b"PRI * HTTP/2.0\r\n", Sniffed::NeedMore),
            (b"*1\r\n$4\r\nPING\r\n", other.clone()), // Redis
            (b"SET k v\r\n", other.clone()),
            (b"\xde\xad\xbe\xef\x01\x02\x03\x04\x05", other.clone()),
            (
                b"\x15\x03\x03\x00\x02\x02\x28",
                Sniffed::Malformed(Malformed::TlsRecordType),
            ),
            (b"\r\n", Sniffed::NeedMore),
            (b"\r\nSSH-2.0-x\r\n", other.clone()),
            (
                b"\r\nGET / HTTP/1.1\r\n",
                Sniffed::Malformed(Malformed::HttpLeadingWhitespace),
            ),
            // An extension method is HTTP once its request line says so.
            (
                b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
                Sniffed::http(Some("a".into()), 27),
            ),
            (b"FOO / RTSP/1.0\r\n", other.clone()),
            (
                b"FOO / HTTP/2\r\n",
                Sniffed::Malformed(Malformed::HttpBadVersion),
            ),
        ];
        for (input, want) in cases {
            let got = sniff_every_prefix(input, 16384);
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn http_head_too_large() {
        let mut head = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Pad: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 600));
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(sniff(&head, 512), Sniffed::TooLarge);
        assert_eq!(sniff(&head[..100], 512), Sniffed::NeedMore);
        assert_eq!(sniff(&head[..512], 512), Sniffed::TooLarge);
        assert!(matches!(
            sniff(&head, head.len()),
            Sniffed::Http(found) if found.head_len == head.len()
        ));
        // One byte short of the cap the head is not complete yet.
        assert_eq!(sniff(&head, head.len() - 1), Sniffed::TooLarge);
    }

    #[test]
    fn outcome_labels() {
        assert_eq!(Sniffed::tls(None, true).as_str(), "tls_no_sni");
        assert_eq!(Sniffed::http(Some("a".into()), 1).as_str(), "http_host");
        assert_eq!(
            Sniffed::Malformed(Malformed::HttpBareLf).as_str(),
            "malformed"
        );
        assert_eq!(Sniffed::TooLarge.as_str(), "too_large");
    }
}
