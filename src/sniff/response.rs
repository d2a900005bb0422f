//! Follows the server's side of a plaintext HTTP/1 connection: which response answers which
//! request, and where each one ends.
//!
//! An upgrade (`Upgrade`, `CONNECT`) turns a connection into a tunnel only when *its own* answer
//! accepts it. Pipelined and keep-alive requests are answered in order (RFC 9112 §9.3.2), so
//! [`Responses`] keeps the queue of requests still owed a response and frames every response by
//! the rules of RFC 9112 §6.3: no body for `HEAD`, `1xx`, `204` and `304`; a tunnel after `101`
//! to an upgrade or `2xx` to `CONNECT`; a chunked body; a Content-Length body; otherwise a body
//! that runs to the close. Interim `1xx` responses leave their request owed.
//!
//! A response body is never looked at, only skipped: its bytes cannot pose as the answer to an
//! upgrade. Anything that cannot be framed exactly — a malformed head, both Content-Length and
//! Transfer-Encoding, `101` to a request that did not ask for it, bytes no request asked for, a
//! head over [`MAX_RESPONSE_HEAD`] — makes the server's side [`Unframed`]: from then on no
//! answer can be trusted, and the caller must refuse any upgrade on the connection.

use std::collections::VecDeque;

use super::chunked::{self, Chunk, Walked};

/// Longest response head followed (Envoy's default limit for response headers is 60 KiB).
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most requests that may wait for their responses at once (pipelined without reading).
pub const MAX_OWED: usize = 1024;

/// What a request forwarded to the server asks of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// An ordinary request.
    Plain,
    /// `HEAD`: its response has no body, whatever its headers say.
    Head,
    /// `Upgrade`: `101` makes the rest of the connection a tunnel.
    Upgrade,
    /// `CONNECT`: `2xx` makes the rest of the connection a tunnel.
    Connect,
}

crate::labels::labelled! {
    /// Why the server's side could not be followed. Each reason has a stable label.
    pub enum Unframed {
        /// The status line or a header line breaks HTTP/1 syntax.
        Head => "response_head",
        /// A response head longer than [`MAX_RESPONSE_HEAD`].
        HeadTooLarge => "response_head_too_large",
        /// Bytes arrived while no request was owed a response.
        Unasked => "response_unasked",
        /// `101` to a request that did not ask to upgrade.
        UnaskedSwitch => "response_unasked_switch",
        /// A Content-Length that is not a number, or several that differ, or one beside a
        /// Transfer-Encoding.
        Length => "response_length",
        /// A chunked body whose framing is broken.
        Chunked => "response_chunked",
    }
}

/// What the server's bytes meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing that changes what the filter does.
    Nothing,
    /// The answer to the owed upgrade or CONNECT came: `accepted` means the server left HTTP
    /// and everything after this answer is a tunnel.
    Answered {
        /// The server agreed to leave HTTP.
        accepted: bool,
    },
    /// The server's side cannot be followed from here on.
    Unframed(Unframed),
}

/// Where the server's side stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A response head starts here; its first bytes so far.
    Head(Vec<u8>),
    /// This many body bytes remain.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// A body delimited by the connection's close: nothing after it is a response.
    UntilClose,
    /// The server left HTTP.
    Tunnel,
    /// Not followed any more.
    Unframed(Unframed),
}

/// The server's side of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Responses {
    state: State,
    owed: VecDeque<Ask>,
}

impl Default for Responses {
    fn default() -> Self {
        Responses {
            state: State::Head(Vec::new()),
            owed: VecDeque::new(),
        }
    }
}

impl Responses {
    /// A request was forwarded: its response is owed. `false` when too many are owed already
    /// (the caller refuses the request).
    pub fn asked(&mut self, ask: Ask) -> bool {
        if self.owed.len() >= MAX_OWED {
            return false;
        }
        self.owed.push_back(ask);
        true
    }

    /// Body bytes that can be skipped without being read (the caller may skip them in bulk with
    /// [`Responses::skip`] and read only what follows).
    pub fn skippable(&self) -> u64 {
        match self.state {
            State::Body(n) => n,
            State::Chunked(Chunk::Data(n)) => n,
            State::UntilClose | State::Tunnel | State::Unframed(_) => u64::MAX,
            State::Head(_) | State::Chunked(_) => 0,
        }
    }

    /// Skips `n` bytes, at most [`Responses::skippable`].
    pub fn skip(&mut self, n: u64) {
        match &mut self.state {
            State::Body(left) => {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    self.state = State::Head(Vec::new());
                }
            }
            State::Chunked(Chunk::Data(left)) => {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    self.state = State::Chunked(Chunk::DataCr);
                }
            }
            _ => {}
        }
    }

    /// Whether the server's side can no longer be followed (and why).
    pub fn unframed(&self) -> Option<Unframed> {
        match self.state {
            State::Unframed(why) => Some(why),
            _ => None,
        }
    }

    /// Whether the server left HTTP.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// Follows the next server bytes. Returns how many were consumed and what they meant; it
    /// stops right after an [`Event`] other than [`Event::Nothing`], so the caller handles it
    /// and calls again with the rest (after a tunnel or once unframed, the rest is not HTTP).
    pub fn feed(&mut self, data: &[u8]) -> (usize, Event) {
        let mut pos = 0usize;
        while let Some(rest) = data.get(pos..).filter(|r| !r.is_empty()) {
            match &mut self.state {
                State::UntilClose | State::Tunnel | State::Unframed(_) => {
                    return (data.len(), Event::Nothing)
                }
                State::Body(_) | State::Chunked(Chunk::Data(_)) => {
                    let n = self
                        .skippable()
                        .min(u64::try_from(rest.len()).unwrap_or(u64::MAX));
                    self.skip(n);
                    pos = pos.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                }
                State::Chunked(chunk) => match chunked::walk(*chunk, rest) {
                    Ok(Walked::More(next)) => {
                        *chunk = next;
                        pos = data.len();
                    }
                    Ok(Walked::Ended(n)) => {
                        self.state = State::Head(Vec::new());
                        pos = pos.saturating_add(n);
                    }
                    Err(chunked::BadChunk) => {
                        return (pos, self.lose(Unframed::Chunked));
                    }
                },
                State::Head(_) if self.owed.is_empty() => {
                    return (pos, self.lose(Unframed::Unasked));
                }
                State::Head(head) => {
                    // Look for the blank line only where new bytes can complete it.
                    let from = head.len().saturating_sub(3);
                    let before = head.len();
                    let take = rest.len().min(MAX_RESPONSE_HEAD.saturating_sub(before));
                    head.extend_from_slice(rest.get(..take).unwrap_or_default());
                    let end = head
                        .get(from..)
                        .and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n"))
                        .map(|at| from + at + 4);
                    let Some(end) = end else {
                        if head.len() >= MAX_RESPONSE_HEAD {
                            return (pos, self.lose(Unframed::HeadTooLarge));
                        }
                        pos = data.len();
                        continue;
                    };
                    let parsed = parse_head(head.get(..end).unwrap_or_default());
                    pos = pos.saturating_add(end.saturating_sub(before));
                    let event = match parsed {
                        Ok(response) => self.answer(response),
                        Err(why) => self.lose(why),
                    };
                    if event != Event::Nothing {
                        return (pos, event);
                    }
                }
            }
        }
        (pos, Event::Nothing)
    }

    fn lose(&mut self, why: Unframed) -> Event {
        self.state = State::Unframed(why);
        Event::Unframed(why)
    }

    /// A complete response head: matches it to the request it answers and sets up its body.
    fn answer(&mut self, response: ResponseHead) -> Event {
        let Some(&ask) = self.owed.front() else {
            return self.lose(Unframed::Unasked);
        };
        let status = response.status;
        if (100..200).contains(&status) {
            if status != 101 {
                // Interim (100 Continue, 103 Early Hints): the final response is still owed.
                self.state = State::Head(Vec::new());
                return Event::Nothing;
            }
            if ask != Ask::Upgrade {
                return self.lose(Unframed::UnaskedSwitch);
            }
            self.owed.pop_front();
            self.state = State::Tunnel;
            return Event::Answered { accepted: true };
        }
        self.owed.pop_front();
        if ask == Ask::Connect && (200..300).contains(&status) {
            self.state = State::Tunnel;
            return Event::Answered { accepted: true };
        }
        self.state = if ask == Ask::Head || status == 204 || status == 304 {
            State::Head(Vec::new())
        } else {
            match response.framing {
                Framing::Length(0) => State::Head(Vec::new()),
                Framing::Length(n) => State::Body(n),
                Framing::Chunked => State::Chunked(Chunk::START),
                Framing::UntilClose => State::UntilClose,
            }
        };
        if matches!(ask, Ask::Upgrade | Ask::Connect) {
            Event::Answered { accepted: false }
        } else {
            Event::Nothing
        }
    }
}

/// How a response's body is delimited, by its headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResponseHead {
    status: u16,
    framing: Framing,
}

/// Parses a complete response head (through its blank line), strictly: CRLF line ends, a
/// status line `HTTP/1.x SP 3DIGIT [SP reason]`, token header names, no obsolete folding.
fn parse_head(head: &[u8]) -> Result<ResponseHead, Unframed> {
    let bad = Unframed::Head;
    let body = head.strip_suffix(b"\r\n\r\n").ok_or(bad)?;
    let mut lines = body.split(|&b| b == b'\n').map(|line| {
        // Every line but the last keeps its CR: the split was on LF.
        line.strip_suffix(b"\r").unwrap_or(line)
    });
    // Only CRLF line ends: a CR anywhere else, or a bare LF, breaks the head.
    let crlf = body.iter().filter(|&&b| b == b'\n').count();
    let cr = body.iter().filter(|&&b| b == b'\r').count();
    if cr != crlf || body.windows(2).filter(|w| w == b"\r\n").count() != crlf {
        return Err(bad);
    }
    let status_line = lines.next().ok_or(bad)?;
    let status = status_line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix(b"HTTP/1.0 "))
        .ok_or(bad)?;
    let (code, reason) = status.split_at(status.len().min(3));
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    if !(reason.is_empty() || reason.first() == Some(&b' '))
        || reason
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    let mut length: Option<u64> = None;
    let mut codings = super::http::TransferCodings::default();
    let mut transfer_encoding = false;
    for line in lines {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(bad);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(bad)?;
        let (name, value) = line.split_at(colon);
        if name.is_empty() || !name.iter().all(|&b| super::http::is_tchar(b)) {
            return Err(bad);
        }
        let value = super::http::trim_ows(value.get(1..).unwrap_or_default());
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(bad);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let len = super::http::content_length(value).map_err(|_| Unframed::Length)?;
            if length.is_some_and(|prev| prev != len) {
                return Err(Unframed::Length);
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            super::http::transfer_codings(value, &mut codings).map_err(|_| bad)?;
        }
    }
    let framing = match (length, transfer_encoding) {
        (Some(_), true) => return Err(Unframed::Length),
        // chunked twice: no reading of it is safe.
        (None, true) if codings.chunked > 1 => return Err(Unframed::Length),
        // A final chunked coding frames the body; any other coding runs to the close.
        (None, true) if codings.last_is_chunked && codings.chunked == 1 => Framing::Chunked,
        (None, true) => Framing::UntilClose,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::UntilClose,
    };
    Ok(ResponseHead { status, framing })
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Feeds `stream` cut at `cuts` (skipping bodies in bulk as the filter does), after `asks`
    /// were forwarded; returns every event in order and the bytes consumed up to the last one.
    fn run(asks: &[Ask], stream: &[u8], cuts: &[usize]) -> Vec<(usize, Event)> {
        let mut responses = Responses::default();
        for &ask in asks {
            assert!(responses.asked(ask));
        }
        let mut events = Vec::new();
        let mut bounds: Vec<usize> = cuts
            .iter()
            .copied()
            .filter(|&c| c > 0 && c < stream.len())
            .collect();
        bounds.push(stream.len());
        let (mut at, mut start) = (0usize, 0usize);
        for end in bounds {
            let mut chunk = &stream[start..end];
            start = end;
            while !chunk.is_empty() {
                let skip = usize::try_from(responses.skippable())
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                if skip > 0 && responses.unframed().is_none() && !responses.is_tunnel() {
                    responses.skip(skip as u64);
                    chunk = &chunk[skip..];
                    at += skip;
                    continue;
                }
                let (used, event) = responses.feed(chunk);
                chunk = &chunk[used..];
                at += used;
                if event != Event::Nothing {
                    events.push((at, event));
                }
                if responses.is_tunnel() || responses.unframed().is_some() {
                    at += chunk.len();
                    chunk = &[];
                }
            }
        }
        events
    }

    /// `run` whole, at every single cut, and byte by byte: all must agree.
    fn run_every_split(asks: &[Ask], stream: &[u8]) -> Vec<(usize, Event)> {
        let whole = run(asks, stream, &[]);
        for cut in 1..stream.len() {
            assert_eq!(run(asks, stream, &[cut]), whole, "cut at {cut}");
        }
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(run(asks, stream, &bytes), whole, "byte at a time");
        whole
    }

    const ACCEPT: Event = Event::Answered { accepted: true };
    const REFUSE: Event = Event::Answered { accepted: false };

    fn with_body(status: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn a_body_that_looks_like_an_answer_is_body() {
        // The GET's body carries a 101: only the CONNECT's own answer counts.
        let evil = b"HTTP/1.1 101 Switching Protocols\r\n\r\nHTTP/1.1 200 OK\r\n\r\n";
        let mut stream = with_body("200 OK", evil);
        stream.extend(with_body("405 Method Not Allowed", b"no"));
        let end = stream.len() - 2;
        assert_eq!(
            run_every_split(&[Ask::Plain, Ask::Connect], &stream),
            vec![(end, REFUSE)]
        );
        // ... and chunked.
        let mut stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        stream.extend(format!("{:x}\r\n", evil.len()).as_bytes());
        stream.extend(evil);
        stream.extend(b"\r\n0\r\nX-T: HTTP/1.1 101\r\n\r\n");
        let end = stream.len();
        stream.extend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81");
        assert_eq!(
            run_every_split(&[Ask::Plain, Ask::Upgrade], &stream),
            vec![(stream.len() - 1, ACCEPT)]
        );
        assert!(end < stream.len());
    }

    #[test]
    fn the_answer_to_connect_and_upgrade() {
        let cases: &[(Ask, &[u8], Vec<Event>)] = &[
            (
                Ask::Connect,
                b"HTTP/1.1 200 Connection established\r\n\r\n",
                vec![ACCEPT],
            ),
            (Ask::Connect, b"HTTP/1.0 200\r\n\r\n", vec![ACCEPT]),
            (
                Ask::Connect,
                b"HTTP/1.1 204 No Content\r\n\r\n",
                vec![ACCEPT],
            ),
            (
                Ask::Connect,
                b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n",
                vec![REFUSE],
            ),
            (
                Ask::Connect,
                b"HTTP/1.1 101 Switching\r\n\r\n",
                vec![Event::Unframed(Unframed::UnaskedSwitch)],
            ),
            (
                Ask::Upgrade,
                b"HTTP/1.1 101 Switching\r\nUpgrade: ws\r\n\r\n",
                vec![ACCEPT],
            ),
            (
                Ask::Upgrade,
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                vec![REFUSE],
            ),
            (
                Ask::Upgrade,
                b"HTTP/1.1 426 Upgrade Required\r\n\r\n",
                vec![REFUSE],
            ),
            (
                Ask::Plain,
                b"HTTP/1.1 101 Switching\r\n\r\n",
                vec![Event::Unframed(Unframed::UnaskedSwitch)],
            ),
            (
                Ask::Head,
                b"HTTP/1.1 101 Switching\r\n\r\n",
                vec![Event::Unframed(Unframed::UnaskedSwitch)],
            ),
            // Interim responses first; the final answer decides.
            (
                Ask::Upgrade,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                  HTTP/1.1 101 Switching\r\n\r\n",
                vec![ACCEPT],
            ),
            (
                Ask::Connect,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\n\r\n",
                vec![REFUSE],
            ),
        ];
        for (ask, stream, want) in cases {
            let got: Vec<Event> = run_every_split(&[*ask], stream)
                .into_iter()
                .map(|(_, e)| e)
                .collect();
            assert_eq!(&got, want, "{ask:?} {:?}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn bodies_are_framed_as_rfc_9112_says() {
        // Each response is followed by the upgrade's 101: the 101 must be found exactly where
        // it is, or (for a close-delimited body) never.
        let answer = b"HTTP/1.1 101 Switching\r\n\r\n";
        let cases: &[(Ask, &[u8], bool)] = &[
            // HEAD: Content-Length describes the GET it stands for; no body follows.
            (Ask::Head, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true),
            (Ask::Head, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 204 No Content\r\nContent-Length: 50\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nabc", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nA: b\r\n\r\n", true),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 101 Switching\r\n\r\n", false),
            (Ask::Plain, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\n", false),
            (Ask::Plain, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
        ];
        for (ask, response, found) in cases {
            let mut stream = response.to_vec();
            stream.extend_from_slice(answer);
            let got = run_every_split(&[*ask, Ask::Upgrade], &stream);
            let want = if *found {
                vec![(stream.len(), ACCEPT)]
            } else {
                vec![]
            };
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(response));
        }
    }

    #[test]
    fn what_cannot_be_framed_is_unframed() {
        let cases: &[(&[u8], Unframed)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Unframed::Length,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                Unframed::Length,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                Unframed::Length,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Unframed::Length,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
                Unframed::Length,
            ),
            (
                b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
                Unframed::Head,
            ),
            (
                b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
                Unframed::Head,
            ),
            (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", Unframed::Head),
            (b"HTTP/2 200\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 20 OK\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 200OK\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 200 O\x01K\r\n\r\n", Unframed::Head),
            (b"http/1.1 200 OK\r\n\r\n", Unframed::Head),
            (b"HTTP/1.1 200 OK\r\nX: \x7f\r\n\r\n", Unframed::Head),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Unframed::Chunked,
            ),
            // A response longer than its Content-Length: the extra bytes were not asked for.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 101 S\r\n\r\n",
                Unframed::Unasked,
            ),
        ];
        for (stream, why) in cases {
            let got = run_every_split(&[Ask::Plain], stream);
            assert_eq!(
                got.last().map(|(_, e)| *e),
                Some(Event::Unframed(*why)),
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
        // A 200 with an empty reason and no space is allowed (many servers send it).
        assert_eq!(
            run_every_split(&[Ask::Connect], b"HTTP/1.1 200\r\n\r\n"),
            vec![(16, ACCEPT)]
        );
    }

    #[test]
    fn a_head_past_the_cap_is_unframed_however_it_arrives() {
        let mut stream = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', MAX_RESPONSE_HEAD));
        stream.extend_from_slice(b"\r\n\r\n");
        for cuts in [
            vec![],
            vec![10],
            vec![MAX_RESPONSE_HEAD - 1, MAX_RESPONSE_HEAD + 1],
        ] {
            let got = run(&[Ask::Plain], &stream, &cuts);
            assert_eq!(
                got.last().map(|(_, e)| *e),
                Some(Event::Unframed(Unframed::HeadTooLarge))
            );
        }
    }

    #[test]
    fn the_queue_of_owed_responses_is_bounded() {
        let mut responses = Responses::default();
        for _ in 0..MAX_OWED {
            assert!(responses.asked(Ask::Plain));
        }
        assert!(!responses.asked(Ask::Plain));
    }

    #[test]
    fn a_close_delimited_body_swallows_everything() {
        let mut responses = Responses::default();
        responses.asked(Ask::Plain);
        responses.asked(Ask::Upgrade);
        let (used, event) = responses.feed(b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 101 S\r\n\r\n");
        assert_eq!((used, event), (37, Event::Nothing));
        assert_eq!(responses.skippable(), u64::MAX);
        assert!(!responses.is_tunnel());
    }
}
