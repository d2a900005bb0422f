//! Follows a plaintext HTTP/1 connection past its first request, so that every request on it —
//! keep-alive and pipelined — is checked before its bytes are forwarded, and the connection
//! becomes a tunnel only when the server accepts an upgrade.
//!
//! The network filter sees the client's bytes in chunks. While it holds them (returns `Pause`)
//! they accumulate in its buffer and the next callback shows them again followed by the new
//! bytes; once it lets them go (`Continue`) they leave the buffer. [`Pipeline::client_bytes`] is
//! given the whole buffer each time, remembers how much of its front it has already accounted
//! for, asks the caller about every complete request head, and answers what to do with the
//! buffer: forward it, forward only its front ([`Action::Split`]), hold it, or close.
//!
//! Request bodies are skipped by their framing (Content-Length, chunked). A request that asks to
//! leave HTTP (`Upgrade`, `CONNECT`) is forwarded with everything before it; the client bytes
//! behind it wait for the server's answer to *that* request. [`Pipeline::server_bytes`] follows
//! the server's side ([`super::response`]): every response is matched to its request and framed,
//! so only the answer to the upgrade itself can turn the connection into a tunnel (`101`, or
//! `2xx` to `CONNECT`); any other answer sends the held bytes back to be checked as HTTP.

use super::chunked::{self, Chunk, Walked};
use super::http::{parse_request_head, BodyFraming, HeadParser, RequestHead};
use super::response::{Ask, Event, Responses, Unframed};
use super::{Malformed, Outcome};

/// Longest chunk-size line (with extensions) or trailer line accepted.
pub use super::chunked::MAX_CHUNK_LINE;

/// What [`Pipeline::scan`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every byte in the buffer belongs to requests already allowed: let the buffer go.
    Forward,
    /// The first this-many bytes end with a request that asks to leave HTTP: let them go and
    /// hold the rest until the server answers it.
    Split(usize),
    /// A request head is incomplete (or the server's answer to an upgrade is awaited): hold the
    /// buffer.
    Hold,
    /// A complete request head: decide on it, then call [`Pipeline::scan`] again. (Boxed: a
    /// `Step` is then two words, returned in registers, and the `Hold` of every callback inside
    /// a head costs no copy of a whole head.)
    Head(Box<RequestHead>),
    /// The bytes break HTTP/1 framing: later requests cannot be known, so deny.
    Malformed(Malformed),
    /// A request head longer than the cap.
    TooLarge,
}

/// What the filter should do with the client bytes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the whole buffer go.
    Forward,
    /// Let the first this-many bytes go; hold the rest.
    Split(usize),
    /// Hold the buffer (an incomplete request head, or bytes behind an unanswered upgrade).
    Hold,
    /// Close the connection: a request was refused (the caller was told why).
    Close,
}

/// What the filter asks the policy about on a connection it follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Later<'a> {
    /// A complete later request head: allow it or not.
    Request(&'a RequestHead),
    /// Bytes that cannot be a request the filter could allow: always refused.
    Refused(Refusal),
}

/// Why client bytes on a followed connection are refused whatever the policy says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The bytes break HTTP/1.
    Malformed(Malformed),
    /// A request head longer than the cap.
    TooLarge,
    /// The client half-closed inside a request head.
    Truncated,
    /// More requests pipelined without their responses than [`super::response::MAX_OWED`].
    TooManyOwed,
    /// An upgrade on a connection whose responses cannot be followed, or whose answer could not
    /// be told from the server's bytes.
    Unframed(Unframed),
    /// The proxy could not hand back the client bytes held behind an upgrade.
    HeldBytesLost,
}

crate::labels::labelled! {
    /// Why held client bytes closed a connection although no request in them was malformed:
    /// the `detail` (and malformed kind) of those decisions.
    pub enum Held {
        /// A ClientHello or request head stopped part-way for `sniff.timeout_ms`.
        IncompleteAtTimeout => "incomplete_at_timeout",
        /// Bytes waited behind an upgrade the server did not answer within `sniff.timeout_ms`.
        UpgradeUnanswered => "upgrade_unanswered",
        /// The client half-closed inside a ClientHello or request head.
        Truncated => "truncated",
        /// More requests pipelined without their responses than the tracker follows.
        TooManyPipelined => "too_many_pipelined",
        /// The proxy could not hand back the client bytes held behind an upgrade.
        HeldBytesLost => "held_bytes_lost",
    }
}

impl Later<'_> {
    /// The refusal, if this is one.
    pub fn into_refusal(self) -> Option<Refusal> {
        match self {
            Later::Refused(why) => Some(why),
            Later::Request(_) => None,
        }
    }
}

impl Refusal {
    /// Stable label: the `detail` of the decision.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed(why) => why.as_str(),
            Refusal::TooLarge => "too_large",
            Refusal::Truncated => Held::Truncated.as_str(),
            Refusal::TooManyOwed => Held::TooManyPipelined.as_str(),
            Refusal::Unframed(why) => why.as_str(),
            Refusal::HeldBytesLost => Held::HeldBytesLost.as_str(),
        }
    }
}

/// What the server's bytes mean for the client bytes the filter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    /// Nothing changes.
    Nothing,
    /// The server accepted the upgrade: the held client bytes belong to the tunnel; let them go.
    Release,
    /// The server refused the upgrade: the held client bytes must be checked as HTTP now (call
    /// [`Pipeline::client_bytes`] with the held buffer).
    Recheck,
    /// The answer to a pending upgrade cannot be known: close (a refusal the caller records).
    Close(Refusal),
}

/// The client's side of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A request head starts at `offset`.
    Head,
    /// This many body bytes remain.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// An upgrade request was sent; the server has not answered yet.
    AwaitingUpgrade,
    /// The server left HTTP: nothing more to check.
    Tunnel,
}

/// The per-connection tracker.
#[derive(Debug, Clone)]
pub struct Pipeline {
    state: State,
    /// Bytes at the front of the current buffer already accounted for.
    offset: usize,
    max_head: usize,
    /// The current request asks to leave HTTP: wait for the answer after its body.
    pending_upgrade: bool,
    /// The server answered the current upgrade request before its body ended.
    early_answer: Option<bool>,
    /// Client bytes are held while the server's answer to an upgrade is awaited.
    held_during_upgrade: bool,
    /// The last request head cannot be forwarded whatever the policy says.
    refused: Option<Refusal>,
    /// The server's side.
    responses: Responses,
    /// The request head at `offset` so far, kept between calls so that a head arriving in
    /// pieces is read once, not again at every call.
    head: HeadParser,
}

impl Pipeline {
    /// Starts after the first request, whose head (already decided) is `head`, with request
    /// heads capped at `max_head` bytes.
    pub fn after(head: &RequestHead, max_head: usize) -> Pipeline {
        let mut pipeline = Pipeline {
            state: State::Head,
            offset: head.head_len,
            max_head,
            pending_upgrade: false,
            early_answer: None,
            held_during_upgrade: false,
            refused: None,
            responses: Responses::default(),
            head: HeadParser::new(),
        };
        pipeline.enter_body(head);
        pipeline
    }

    /// True once the server agreed to leave HTTP: the rest of the connection is not HTTP.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// True while the server's answer to an upgrade request is awaited.
    pub fn awaiting_upgrade(&self) -> bool {
        self.state == State::AwaitingUpgrade
    }

    /// Checks the client bytes the filter holds (`buf`, the whole buffer, which begins with
    /// what was held last time, if anything). `check` is asked about every complete request
    /// head in order (`true`: allowed) and told every refusal; it records and counts them.
    /// `eos`: the client half-closed.
    pub fn client_bytes(
        &mut self,
        buf: &[u8],
        eos: bool,
        mut check: impl FnMut(Later<'_>) -> bool,
    ) -> Action {
        loop {
            match self.scan(buf) {
                Step::Forward => {
                    self.offset = 0;
                    return Action::Forward;
                }
                // A head cut short by the client's half-close will never complete (the
                // requests before it are not let go alone: the connection closes).
                Step::Hold | Step::Split(_) if eos && self.state == State::Head => {
                    check(Later::Refused(Refusal::Truncated));
                    return Action::Close;
                }
                Step::Split(n) => {
                    self.offset = 0;
                    return Action::Split(n);
                }
                Step::Hold => return Action::Hold,
                Step::Head(head) => {
                    if let Some(why) = self.refused.take() {
                        check(Later::Refused(why));
                        return Action::Close;
                    }
                    if !check(Later::Request(&head)) {
                        return Action::Close;
                    }
                }
                Step::Malformed(why) => {
                    check(Later::Refused(Refusal::Malformed(why)));
                    return Action::Close;
                }
                Step::TooLarge => {
                    check(Later::Refused(Refusal::TooLarge));
                    return Action::Close;
                }
            }
        }
    }

    /// Accounts for the buffer from where the last call stopped. (The steps of
    /// [`Pipeline::client_bytes`], which most callers want instead.)
    #[inline]
    pub fn scan(&mut self, buf: &[u8]) -> Step {
        if self.state == State::Head {
            // In the middle of a head's line: nothing to look at until its CR or LF.
            let rest = buf.get(self.offset..).unwrap_or_default();
            if rest.len() < self.max_head && self.head.skip_quiet(rest) {
                return Step::Hold;
            }
        }
        self.scan_slow(buf)
    }

    fn scan_slow(&mut self, buf: &[u8]) -> Step {
        loop {
            let rest = buf.get(self.offset..).unwrap_or_default();
            match self.state {
                State::Tunnel => return Step::Forward,
                State::AwaitingUpgrade if rest.is_empty() => return Step::Forward,
                State::AwaitingUpgrade => {
                    self.held_during_upgrade = true;
                    return if self.offset > 0 {
                        Step::Split(self.offset)
                    } else {
                        Step::Hold
                    };
                }
                State::Head if rest.is_empty() => return Step::Forward,
                State::Head => {
                    // Only the first max_head bytes count, so the answer does not depend on how
                    // the bytes were split (as in sniff()).
                    let window = rest.get(..self.max_head).unwrap_or(rest);
                    return match self.head.feed(window) {
                        Outcome::Found(head) => {
                            self.head.reset();
                            self.offset = self.offset.saturating_add(head.head_len);
                            self.enter_body(&head);
                            Step::Head(Box::new(head))
                        }
                        Outcome::NeedMore if window.len() >= self.max_head => Step::TooLarge,
                        // The requests before this head are checked (and their bodies
                        // followed): they go now, whether or not they arrived with the start of
                        // this head, and only this head waits.
                        // (The next buffer starts after them, at this head.)
                        Outcome::NeedMore if self.offset > 0 => {
                            Step::Split(std::mem::take(&mut self.offset))
                        }
                        Outcome::NeedMore => Step::Hold,
                        Outcome::Malformed(why) => Step::Malformed(why),
                        Outcome::NotThisProtocol => Step::Malformed(Malformed::HttpNotARequest),
                    };
                }
                State::Body(remaining) => {
                    let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
                    if available < remaining {
                        self.offset = buf.len();
                        self.state = State::Body(remaining - available);
                        return Step::Forward;
                    }
                    let used = usize::try_from(remaining).unwrap_or(usize::MAX);
                    self.offset = self.offset.saturating_add(used);
                    self.state = self.after_body();
                }
                State::Chunked(chunk) => {
                    if rest.is_empty() {
                        return Step::Forward;
                    }
                    match chunked::walk(chunk, rest) {
                        Ok(Walked::More(next)) => {
                            self.offset = buf.len();
                            self.state = State::Chunked(next);
                        }
                        Ok(Walked::Ended(used)) => {
                            self.offset = self.offset.saturating_add(used);
                            self.state = self.after_body();
                        }
                        Err(chunked::BadChunk) => {
                            return Step::Malformed(Malformed::HttpChunkedBody)
                        }
                    }
                }
            }
        }
    }

    /// Follows `len` bytes the server sent. `read(start, len)` returns those bytes of them (or
    /// `None` if the host cannot say); response bodies are skipped without being read.
    pub fn server_bytes(
        &mut self,
        len: usize,
        mut read: impl FnMut(usize, usize) -> Option<Vec<u8>>,
    ) -> ServerAction {
        /// Bytes read at a time where a head or chunk line must be looked at.
        const WINDOW: usize = 4096;
        let mut action = ServerAction::Nothing;
        let mut pos = 0usize;
        while pos < len && !self.is_tunnel() && self.responses.unframed().is_none() {
            let skip = self.responses.skippable();
            if skip > 0 {
                let n = skip.min(u64::try_from(len - pos).unwrap_or(u64::MAX));
                self.responses.skip(n);
                pos = pos.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
                continue;
            }
            let want = (len - pos).min(WINDOW);
            let Some(bytes) = read(pos, want).filter(|b| b.len() == want) else {
                return self.server_lost(Unframed::Head);
            };
            let mut at = 0usize;
            while at < bytes.len() {
                let (used, event) = self.responses.feed(bytes.get(at..).unwrap_or_default());
                at = at.saturating_add(used);
                match event {
                    Event::Nothing => {}
                    Event::Answered { accepted } => action = self.answered(accepted),
                    Event::Unframed(why) => return self.server_lost(why),
                }
                if self.is_tunnel() || self.responses.is_tunnel() {
                    break;
                }
            }
            pos = pos.saturating_add(bytes.len());
        }
        action
    }

    /// The server's side cannot be followed: fatal only while an upgrade awaits its answer.
    fn server_lost(&mut self, why: Unframed) -> ServerAction {
        if self.pending_upgrade || self.state == State::AwaitingUpgrade {
            ServerAction::Close(Refusal::Unframed(why))
        } else {
            ServerAction::Nothing
        }
    }

    /// The server answered the upgrade request.
    fn answered(&mut self, accepted: bool) -> ServerAction {
        if self.state != State::AwaitingUpgrade {
            // Still inside the upgrade request's body: takes effect when it ends.
            self.early_answer = Some(accepted);
            return ServerAction::Nothing;
        }
        let held = std::mem::take(&mut self.held_during_upgrade);
        self.state = if accepted { State::Tunnel } else { State::Head };
        match (held, accepted) {
            (false, _) => ServerAction::Nothing,
            (true, true) => ServerAction::Release,
            (true, false) => ServerAction::Recheck,
        }
    }

    fn enter_body(&mut self, head: &RequestHead) {
        let ask = match head.method.as_str() {
            "CONNECT" => Ask::Connect,
            "HEAD" => Ask::Head,
            _ if head.upgrade => Ask::Upgrade,
            _ => Ask::Plain,
        };
        if !self.responses.asked(ask) {
            self.refused = Some(Refusal::TooManyOwed);
        } else if let (true, Some(why)) = (head.upgrade, self.responses.unframed()) {
            // Its answer could not be told from the server's bytes.
            self.refused = Some(Refusal::Unframed(why));
        }
        self.pending_upgrade = head.upgrade;
        self.early_answer = None;
        self.state = match head.framing {
            BodyFraming::ContentLength(0) | BodyFraming::None => self.after_body(),
            BodyFraming::ContentLength(n) => State::Body(n),
            BodyFraming::Chunked => State::Chunked(Chunk::START),
        };
    }

    /// The state after a request's body: the next head, or the wait for an upgrade answer.
    fn after_body(&mut self) -> State {
        if !std::mem::take(&mut self.pending_upgrade) {
            return State::Head;
        }
        match self.early_answer.take() {
            Some(true) => State::Tunnel,
            Some(false) => State::Head,
            None => State::AwaitingUpgrade,
        }
    }
}

/// One step of a connection, for [`play`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire<'a> {
    /// Bytes from the client.
    Client(&'a [u8]),
    /// Bytes from the server.
    Server(&'a [u8]),
}

/// The same steps with every step but the first delivered a byte at a time (the first client
/// bytes stay whole: sniffing holds them until the first head is complete).
#[doc(hidden)]
pub fn bytewise<'a>(wire: &[Wire<'a>]) -> Vec<Wire<'a>> {
    wire.iter()
        .enumerate()
        .flat_map(|(at, step)| match *step {
            Wire::Client(b) if at == 0 => vec![Wire::Client(b)],
            Wire::Client(b) => b.chunks(1).map(Wire::Client).collect(),
            Wire::Server(b) => b.chunks(1).map(Wire::Server).collect::<Vec<_>>(),
        })
        .collect()
}

/// What [`play`] saw the filter do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Played {
    /// Every client byte that reached the server, in order.
    pub forwarded: Vec<u8>,
    /// The host of every later request head the policy was asked about, in order.
    pub asked: Vec<Option<String>>,
    /// Why the connection was closed, if it was: a refusal, or `None` inside for a request the
    /// policy refused.
    pub closed: Option<Option<Refusal>>,
    /// Client bytes still held at the end (0 once closed: what a closed connection held
    /// depends only on when its bytes arrived).
    pub held: usize,
}

/// Plays the network filter on a plaintext HTTP/1 connection whose first request (at the start
/// of the first client bytes, complete there, as the filter's sniffing guarantees) was allowed:
/// held bytes stay in the buffer, forwarded ones leave it, and `allow` is the policy for later
/// heads. The unit tests and the `http_pipeline` fuzz target drive the real tracker with it.
#[doc(hidden)]
pub fn play(wire: &[Wire<'_>], max_head: usize, allow: impl Fn(&RequestHead) -> bool) -> Played {
    let mut played = Played::default();
    let mut pipeline: Option<Pipeline> = None;
    let mut held: Vec<u8> = Vec::new();
    let client = |pipeline: &mut Pipeline, held: &mut Vec<u8>, played: &mut Played| {
        let mut refusal = None;
        let action = pipeline.client_bytes(held, false, |later| match later {
            Later::Request(head) => {
                played.asked.push(head.host.clone());
                allow(head)
            }
            Later::Refused(why) => {
                refusal = Some(why);
                false
            }
        });
        match action {
            Action::Forward => played.forwarded.append(held),
            Action::Split(n) => {
                let n = n.min(held.len());
                played.forwarded.extend(held.drain(..n));
            }
            Action::Hold => {}
            Action::Close => played.closed = Some(refusal),
        }
    };
    for step in wire {
        if played.closed.is_some() {
            break;
        }
        match (*step, pipeline.as_mut()) {
            (Wire::Client(bytes), None) => {
                held.extend_from_slice(bytes);
                match parse_request_head(&held) {
                    Outcome::Found(head) => {
                        let mut p = Pipeline::after(&head, max_head);
                        client(&mut p, &mut held, &mut played);
                        pipeline = Some(p);
                    }
                    _ => {
                        played.closed = Some(Some(Refusal::Truncated));
                    }
                }
            }
            (Wire::Client(bytes), Some(p)) => {
                held.extend_from_slice(bytes);
                client(p, &mut held, &mut played);
            }
            (Wire::Server(_), None) => {}
            (Wire::Server(bytes), Some(p)) => {
                let read = |start: usize, len: usize| {
                    bytes
                        .get(start..start.saturating_add(len))
                        .map(<[u8]>::to_vec)
                };
                match p.server_bytes(bytes.len(), read) {
                    ServerAction::Nothing => {}
                    ServerAction::Release => played.forwarded.append(&mut held),
                    ServerAction::Recheck => client(p, &mut held, &mut played),
                    ServerAction::Close(why) => played.closed = Some(Some(why)),
                }
            }
        }
    }
    played.held = if played.closed.is_some() {
        0
    } else {
        held.len()
    };
    played
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::sniff::http::parse_request_head;

    const CAP: usize = 16384;

    /// The policy of these tests: every name but `evil.example` is allowed.
    fn policy(head: &RequestHead) -> bool {
        head.host.as_deref() != Some("evil.example")
    }

    fn play_wire(wire: &[Wire<'_>]) -> Played {
        play(wire, CAP, policy)
    }

    /// `play` as given, with every single step split at every point, and with every step
    /// delivered byte by byte: all must agree.
    fn play_every_split(wire: &[Wire<'_>]) -> Played {
        let whole = play_wire(wire);
        for (at, step) in wire.iter().enumerate() {
            let (Wire::Client(bytes) | Wire::Server(bytes)) = *step;
            // The first client bytes stay whole: sniffing holds them until the head is complete.
            let first = at == 0;
            for cut in 1..bytes.len() {
                if first {
                    break;
                }
                let (a, b) = bytes.split_at(cut);
                let mut split: Vec<Wire<'_>> = wire[..at].to_vec();
                let part = |p| match step {
                    Wire::Client(_) => Wire::Client(p),
                    Wire::Server(_) => Wire::Server(p),
                };
                split.extend([part(a), part(b)]);
                split.extend_from_slice(&wire[at + 1..]);
                assert_eq!(play_wire(&split), whole, "step {at} cut at {cut}");
            }
        }
        let bytewise = bytewise(wire);
        assert_eq!(play_wire(&bytewise), whole, "byte at a time");
        whole
    }

    fn get(host: &str, path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn hosts(names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|h| Some(h.to_string())).collect()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn keep_alive_and_pipelined_requests_are_all_seen() {
        let stream = cat(&[
            &get("a.example", "/1"),
            &get("b.example", "/2"),
            b"HEAD /3 HTTP/1.1\r\nHost: c.example\r\n\r\n",
        ]);
        let played = play_every_split(&[Wire::Client(&stream)]);
        assert_eq!(played.asked, hosts(&["b.example", "c.example"]));
        assert_eq!((played.forwarded, played.closed), (stream, None));
    }

    #[test]
    fn a_request_inside_a_body_is_not_a_request() {
        // The body of the first request looks like a request for evil.example: it is body.
        let body = get("evil.example", "/");
        let mut stream = format!(
            "POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&get("b.example", "/next"));
        let played = play_every_split(&[Wire::Client(&stream)]);
        assert_eq!((played.asked, played.closed), (hosts(&["b.example"]), None));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let stream = b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5;ext=1\r\nhello\r\n\
                       26\r\nGET / HTTP/1.1\r\nHost: evil.example\r\n\r\n\r\n\
                       0\r\nX-Trailer: t\r\n\r\n\
                       GET /after HTTP/1.1\r\nHost: b.example\r\n\r\n";
        let played = play_every_split(&[Wire::Client(stream)]);
        assert_eq!((played.asked, played.closed), (hosts(&["b.example"]), None));
    }

    #[test]
    fn a_refused_later_request_closes_before_it_is_forwarded() {
        let stream = cat(&[&get("a.example", "/"), &get("evil.example", "/")]);
        let played = play_every_split(&[Wire::Client(&stream)]);
        assert_eq!(played.closed, Some(None));
        assert!(
            played.forwarded.is_empty(),
            "nothing of a refused batch goes"
        );
    }

    #[test]
    fn a_later_head_with_a_bad_host_is_refused_not_skipped() {
        let stream = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n\
                       GET / HTTP/1.1\r\nHost: b.example\r\nHost: evil.example\r\n\r\n";
        let played = play_every_split(&[Wire::Client(stream)]);
        assert_eq!(
            played.closed,
            Some(Some(Refusal::Malformed(Malformed::HttpDuplicateHost)))
        );
        assert!(played.asked.is_empty());
    }

    #[test]
    fn bytes_that_are_not_a_request_are_refused() {
        let stream = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n\x16\x03\x01\x00\x05hello";
        assert_eq!(
            play_wire(&[Wire::Client(stream)]).closed,
            Some(Some(Refusal::Malformed(Malformed::HttpNotARequest)))
        );
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        for body in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"\r\n",
            b"5;a\x01b\r\nhello\r\n",
            b"0\r\nT: \x01\r\n\r\n",
        ] {
            let mut stream =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            stream.extend_from_slice(body);
            assert_eq!(
                play_wire(&[Wire::Client(&stream)]).closed,
                Some(Some(Refusal::Malformed(Malformed::HttpChunkedBody))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn chunk_lines_are_capped() {
        let mut long =
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 1));
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(
            play_wire(&[Wire::Client(&long)]).closed,
            Some(Some(Refusal::Malformed(Malformed::HttpChunkedBody)))
        );
    }

    #[test]
    fn a_head_broken_past_the_cap_is_too_large_however_it_arrives() {
        let mut stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nX: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', CAP));
        stream.extend_from_slice(b"\nbare LF past the cap\r\n\r\n");
        let first = 27;
        for cuts in [vec![], vec![60, 4000]] {
            let mut wire = vec![Wire::Client(&stream[..first])];
            let mut start = first;
            for cut in cuts.into_iter().chain([stream.len()]) {
                wire.push(Wire::Client(&stream[start..cut]));
                start = cut;
            }
            assert_eq!(play_wire(&wire).closed, Some(Some(Refusal::TooLarge)));
        }
    }

    #[test]
    fn an_endless_head_is_too_large() {
        let mut stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n".to_vec();
        stream.extend(std::iter::repeat_n(b'x', CAP));
        assert_eq!(
            play_wire(&[Wire::Client(&stream)]).closed,
            Some(Some(Refusal::TooLarge))
        );
    }

    #[test]
    fn requests_before_an_unfinished_head_go_however_they_arrived() {
        let first = get("a", "/");
        let second = get("a", "/2");
        let next = get("a", "/3");
        let (started, rest) = next.split_at(20);
        // In one buffer: the first (decided) and second requests go, the unfinished third
        // waits; the next buffer starts at it.
        let mut pipeline = match parse_request_head(&first) {
            Outcome::Found(head) => Pipeline::after(&head, CAP),
            other => panic!("{other:?}"),
        };
        let mut asked = 0;
        let buffer = cat(&[&first, &second, started]);
        let action = pipeline.client_bytes(&buffer, false, |_| {
            asked += 1;
            true
        });
        assert_eq!(
            (action, asked),
            (Action::Split(first.len() + second.len()), 1)
        );
        let action = pipeline.client_bytes(&cat(&[started, rest]), false, |_| {
            asked += 1;
            true
        });
        assert_eq!((action, asked), (Action::Forward, 2));
        // Byte by byte, the same requests go at the same points.
        let stream = cat(&[&first, &second, &next]);
        let mut pipeline = match parse_request_head(&first) {
            Outcome::Found(head) => Pipeline::after(&head, CAP),
            other => panic!("{other:?}"),
        };
        let (mut start, mut gone) = (0, Vec::new());
        for end in first.len() + 1..=stream.len() {
            match pipeline.client_bytes(&stream[start..end], false, |_| true) {
                Action::Forward => {
                    gone.push(end);
                    start = end;
                }
                Action::Split(n) => {
                    gone.push(start + n);
                    start += n;
                }
                Action::Hold => {}
                other => panic!("{other:?} at {end}"),
            }
        }
        assert_eq!(start, stream.len());
        assert!(gone.contains(&(first.len() + second.len())), "{gone:?}");
    }

    #[test]
    fn a_half_close_inside_a_head_is_refused() {
        let mut pipeline = match parse_request_head(&get("a", "/")) {
            Outcome::Found(head) => Pipeline::after(&head, CAP),
            other => panic!("{other:?}"),
        };
        let mut told = None;
        let buffer = cat(&[&get("a", "/"), b"GET / HTTP/1.1\r\nHo"]);
        let action = pipeline.client_bytes(&buffer, true, |later| {
            told = Some(later.clone().into_refusal());
            false
        });
        assert_eq!(
            (action, told),
            (Action::Close, Some(Some(Refusal::Truncated)))
        );
    }

    const UPGRADE: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    const CONNECT: &[u8] = b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
    const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

    /// The bypass: `GET` and `CONNECT` in one segment; the server answers the GET with 200 and
    /// the CONNECT with 405. The 200 is not the CONNECT's answer: a later request is checked.
    #[test]
    fn an_earlier_response_is_not_the_answer_to_connect() {
        let client = cat(&[&get("a.example", "/first"), CONNECT]);
        let server = cat(&[
            &ok("first"),
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 3\r\n\r\nno!",
        ]);
        let evil = get("evil.example", "/");
        let played = play_every_split(&[
            Wire::Client(&client),
            Wire::Server(&server),
            Wire::Client(&evil),
        ]);
        assert_eq!(played.asked, hosts(&["a.example:443", "evil.example"]));
        assert_eq!(played.closed, Some(None), "the later request was refused");
        assert_eq!(played.forwarded, client);
        // The 200 arriving alone must not open the tunnel either.
        let played = play_every_split(&[
            Wire::Client(&client),
            Wire::Server(&ok("first")),
            Wire::Client(&evil),
        ]);
        assert_eq!(
            played.forwarded, client,
            "evil held until the CONNECT's answer"
        );
        assert_eq!(played.closed, None);
        assert_eq!(played.held, evil.len());
    }

    /// The bypass, second form: an upgrade sent while an earlier response is still streaming a
    /// body that contains `HTTP/1.1 101`.
    #[test]
    fn a_101_inside_an_earlier_body_is_body() {
        let client = get("a.example", "/stream");
        let evil_body = "HTTP/1.1 101 Switching Protocols\r\n\r\n";
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            evil_body.len() + 10
        );
        let evil = get("evil.example", "/");
        let played = play_every_split(&[
            Wire::Client(&client),
            Wire::Server(head.as_bytes()),
            Wire::Client(UPGRADE),
            Wire::Server(evil_body.as_bytes()),
            Wire::Client(&evil),
            Wire::Server(b"0123456789HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(played.closed, Some(None), "{played:?}");
        assert_eq!(played.forwarded, cat(&[&client, UPGRADE]));
        assert_eq!(played.asked, hosts(&["a.example", "evil.example"]));
        // Chunked this time, with the fake answer in a chunk and in a trailer.
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                        24\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n\r\n\
                        0\r\nX: HTTP/1.1 101\r\n\r\n";
        let played = play_every_split(&[
            Wire::Client(&client),
            Wire::Client(UPGRADE),
            Wire::Server(chunked),
            Wire::Client(&evil),
        ]);
        assert_eq!(played.closed, None);
        assert_eq!(
            played.held,
            evil.len(),
            "held: the upgrade is not answered yet"
        );
    }

    /// The wrong hold: an upgrade request and the bytes behind it in one segment. The request
    /// goes at once; the bytes behind it wait for its answer.
    #[test]
    fn an_upgrade_goes_and_the_bytes_behind_it_wait() {
        let frame: &[u8] = &[0x81, 0x85, 1, 2, 3, 4, 5];
        let first = cat(&[UPGRADE, frame]);
        let played = play_every_split(&[Wire::Client(&first)]);
        assert_eq!(
            (played.forwarded.as_slice(), played.held),
            (UPGRADE, frame.len())
        );
        let played = play_every_split(&[
            Wire::Client(&first),
            Wire::Server(&cat(&[SWITCH, b"\x81\x05hello"])),
            Wire::Client(b"more tunnel bytes"),
        ]);
        assert_eq!(played.forwarded, cat(&[&first, b"more tunnel bytes"]));
        assert_eq!((played.closed, played.held), (None, 0));

        // A pipelined GET behind an upgrade the server refuses is checked, then goes.
        let first = cat(&[&get("a.example", "/"), UPGRADE, &get("b.example", "/after")]);
        let refused = cat(&[&ok("x"), b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno"]);
        let played = play_every_split(&[Wire::Client(&first), Wire::Server(&refused)]);
        assert_eq!(played.asked, hosts(&["a.example", "b.example"]));
        assert_eq!((played.forwarded, played.closed), (first, None));

        // ... and refused when its host is not allowed, none of it forwarded.
        let first = cat(&[UPGRADE, &get("evil.example", "/")]);
        let played = play_every_split(&[
            Wire::Client(&first),
            Wire::Server(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n"),
        ]);
        assert_eq!(played.forwarded, UPGRADE);
        assert_eq!(played.closed, Some(None));
    }

    #[test]
    fn connect_is_a_tunnel_after_2xx_only() {
        let tunnel = b"\x16\x03\x01 not http";
        for (answer, opened) in [
            (&b"HTTP/1.1 200 Connection established\r\n\r\n"[..], true),
            (b"HTTP/1.1 101 Switching\r\n\r\n", false),
            (
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
        ] {
            let first = cat(&[CONNECT, tunnel]);
            let played = play_every_split(&[Wire::Client(&first), Wire::Server(answer)]);
            if opened {
                assert_eq!((played.forwarded, played.closed), (first, None));
            } else {
                assert_eq!(played.forwarded, CONNECT);
                assert!(played.closed.is_some(), "{played:?}");
            }
        }
    }

    #[test]
    fn interim_responses_are_not_the_answer() {
        let first = cat(&[UPGRADE, b"x"]);
        let played = play_every_split(&[
            Wire::Client(&first),
            Wire::Server(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: <a>\r\n\r\n"),
        ]);
        assert_eq!((played.held, played.closed), (1, None));
    }

    #[test]
    fn an_upgrade_with_a_body_waits_after_the_body() {
        let request =
            b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nabc";
        let played = play_every_split(&[Wire::Client(request), Wire::Client(b"tail")]);
        assert_eq!(
            (played.forwarded.as_slice(), played.held),
            (&request[..], 4)
        );
        // A server that answers before the body ends: the answer takes effect after it.
        let played = play_every_split(&[
            Wire::Client(
                b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\na",
            ),
            Wire::Server(SWITCH),
            Wire::Client(b"bctail"),
        ]);
        assert_eq!(played.held, 0);
        assert!(played.forwarded.ends_with(b"bctail"));
    }

    #[test]
    fn an_upgrade_whose_answer_cannot_be_told_is_refused() {
        // A response that cannot be framed while the upgrade waits: close.
        let played = play_every_split(&[
            Wire::Client(&cat(&[UPGRADE, b"x"])),
            Wire::Server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        ]);
        assert_eq!(
            played.closed,
            Some(Some(Refusal::Unframed(Unframed::Length)))
        );
        // Unframed earlier, with no upgrade waiting: harmless until one is asked for.
        let played = play_every_split(&[
            Wire::Client(&get("a", "/")),
            Wire::Server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nunasked bytes"),
            Wire::Client(&get("b", "/")),
            Wire::Client(UPGRADE),
        ]);
        assert_eq!(
            played.closed,
            Some(Some(Refusal::Unframed(Unframed::Unasked))),
            "{played:?}"
        );
        assert_eq!(played.asked, hosts(&["b"]));
    }

    #[test]
    fn a_close_delimited_response_never_answers_the_upgrade() {
        let played = play_every_split(&[
            Wire::Client(&cat(&[&get("a", "/"), UPGRADE, b"x"])),
            Wire::Server(b"HTTP/1.0 200 OK\r\n\r\nHTTP/1.1 101 Switching\r\n\r\n"),
        ]);
        assert_eq!((played.held, played.closed), (1, None));
    }

    #[test]
    fn a_head_answer_has_no_body() {
        let head = b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n";
        let played = play_every_split(&[
            Wire::Client(&cat(&[head, UPGRADE, b"x"])),
            Wire::Server(&cat(&[
                b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\n",
                SWITCH,
            ])),
        ]);
        assert_eq!((played.held, played.closed), (0, None));
        assert!(played.forwarded.ends_with(b"x"));
    }

    #[test]
    fn too_many_owed_responses_are_refused() {
        let mut stream = Vec::new();
        for _ in 0..=super::super::response::MAX_OWED {
            stream.extend_from_slice(&get("a", "/"));
        }
        let played = play_wire(&[Wire::Client(&stream)]);
        assert_eq!(played.closed, Some(Some(Refusal::TooManyOwed)));
    }
}
