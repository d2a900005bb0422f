//! Follows a plaintext HTTP/1 connection past its first request, so that every request on it —
//! keep-alive and pipelined — is checked before its bytes are forwarded.
//!
//! The network filter sees the client's bytes in chunks. While it holds them (returns `Pause`)
//! they accumulate in its buffer and the next callback shows them again followed by the new
//! bytes; once it lets them go (`Continue`) they leave the buffer. [`Pipeline`] is fed the whole
//! buffer each time and remembers how much of its front it has already accounted for.
//!
//! Request bodies are skipped by their framing (Content-Length, chunked). A request that asks to
//! leave HTTP (`Upgrade`, `CONNECT`) is followed by a wait for the server's answer: `101` (or
//! `2xx` to `CONNECT`) turns the rest of the connection into a tunnel, anything else back into
//! HTTP. Client bytes sent during that wait are held.

use super::http::{BodyFraming, HeadParser, RequestHead};
use super::{Malformed, Outcome};

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// What the filter should do with its buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every byte in the buffer belongs to requests already allowed: let the buffer go, then
    /// call [`Pipeline::flushed`].
    Forward,
    /// A request head is incomplete (or the server's answer to an upgrade is awaited): hold the
    /// buffer.
    Hold,
    /// A complete request head: decide on it, then call [`Pipeline::scan`] again.
    Head(RequestHead),
    /// The bytes break HTTP/1 framing: later requests cannot be known, so deny.
    Malformed(Malformed),
    /// A request head longer than the cap.
    TooLarge,
}

/// Where the connection stands.
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

/// Position inside a chunked body (RFC 9112 §7.1), byte by byte so it survives any split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` so far.
    Size { size: u64, digits: u8 },
    /// After the size: extensions up to CR.
    Extension { size: u64, len: usize },
    /// CR seen after the size line; LF expected.
    SizeLf { size: u64 },
    /// Chunk data remaining.
    Data(u64),
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line of `len` bytes.
    Trailer { len: usize },
    /// CR of the final empty line seen; LF ends the body.
    EndLf,
    /// CR at the end of a trailer line seen; LF expected.
    TrailerLf,
}

/// The per-connection tracker.
#[derive(Debug, Clone)]
pub struct Pipeline {
    state: State,
    /// Bytes at the front of the current buffer already accounted for.
    offset: usize,
    max_head: usize,
    /// The request being waited on is a CONNECT (then any 2xx accepts it).
    connect: bool,
    /// The current request asks to leave HTTP: wait for the answer after its body.
    pending_upgrade: bool,
    /// Client bytes were held while waiting for the server's answer to an upgrade.
    held_during_upgrade: bool,
    /// The start of the server's answer to an upgrade, when it came in pieces.
    answer: Vec<u8>,
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
            connect: false,
            pending_upgrade: false,
            held_during_upgrade: false,
            answer: Vec::new(),
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

    /// The filter let its buffer go.
    pub fn flushed(&mut self) {
        self.offset = 0;
    }

    /// Accounts for the buffer from where the last call stopped.
    pub fn scan(&mut self, buf: &[u8]) -> Step {
        loop {
            let rest = buf.get(self.offset..).unwrap_or_default();
            match self.state {
                State::Tunnel => return Step::Forward,
                State::AwaitingUpgrade if rest.is_empty() => return Step::Forward,
                State::AwaitingUpgrade => {
                    self.held_during_upgrade = true;
                    return Step::Hold;
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
                            Step::Head(head)
                        }
                        Outcome::NeedMore if window.len() >= self.max_head => Step::TooLarge,
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
                    let Some((&byte, _)) = rest.split_first() else {
                        return Step::Forward;
                    };
                    if let Chunk::Data(remaining) = chunk {
                        let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
                        let used = remaining.min(available);
                        self.offset = self
                            .offset
                            .saturating_add(usize::try_from(used).unwrap_or(usize::MAX));
                        self.state = State::Chunked(if used == remaining {
                            Chunk::DataCr
                        } else {
                            Chunk::Data(remaining - used)
                        });
                        continue;
                    }
                    self.offset = self.offset.saturating_add(1);
                    match chunk_step(chunk, byte) {
                        Ok(Some(next)) => self.state = State::Chunked(next),
                        Ok(None) => self.state = self.after_body(),
                        Err(why) => return Step::Malformed(why),
                    }
                }
            }
        }
    }

    /// The first bytes of the server's data while an upgrade answer is awaited. Returns what
    /// the filter must do with client bytes it held meanwhile.
    pub fn server_answered(&mut self, data: &[u8]) -> UpgradeAnswer {
        if self.state != State::AwaitingUpgrade {
            return UpgradeAnswer::NotWaiting;
        }
        // `HTTP/1.1 101`: twelve bytes tell.
        let wanted = 12usize.saturating_sub(self.answer.len());
        self.answer
            .extend_from_slice(data.get(..wanted.min(data.len())).unwrap_or_default());
        let Some(status) = self.answer.get(..12) else {
            return UpgradeAnswer::Pending;
        };
        let accepted = (status.starts_with(b"HTTP/1.1 ") || status.starts_with(b"HTTP/1.0 "))
            && match status.get(9..12) {
                Some(b"101") => !self.connect,
                Some([b'2', _, _]) => self.connect,
                _ => false,
            };
        self.answer.clear();
        let held = std::mem::take(&mut self.held_during_upgrade);
        if accepted {
            self.state = State::Tunnel;
            UpgradeAnswer::Tunnel { held }
        } else {
            self.state = State::Head;
            UpgradeAnswer::StillHttp { held }
        }
    }

    fn enter_body(&mut self, head: &RequestHead) {
        self.connect = head.method == "CONNECT";
        self.pending_upgrade = head.upgrade;
        self.state = match head.framing {
            BodyFraming::ContentLength(0) | BodyFraming::None => self.after_body(),
            BodyFraming::ContentLength(n) => State::Body(n),
            BodyFraming::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
        };
    }

    /// The state after a request's body: the next head, or the wait for an upgrade answer.
    fn after_body(&mut self) -> State {
        if std::mem::take(&mut self.pending_upgrade) {
            State::AwaitingUpgrade
        } else {
            State::Head
        }
    }
}

/// What the server's answer to an upgrade means for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeAnswer {
    /// No upgrade was awaited.
    NotWaiting,
    /// Not enough of the answer yet.
    Pending,
    /// The server left HTTP; `held`: client bytes were held meanwhile and may now go.
    Tunnel {
        /// Client bytes are held.
        held: bool,
    },
    /// The server stayed in HTTP; `held`: client bytes sent meanwhile were held and were not
    /// checked — the filter must not let them go unchecked.
    StillHttp {
        /// Client bytes are held.
        held: bool,
    },
}

/// One byte of chunk framing. `Ok(None)`: the body ended.
fn chunk_step(chunk: Chunk, byte: u8) -> Result<Option<Chunk>, Malformed> {
    let bad = Malformed::HttpChunkedBody;
    let hex = |b: u8| char::from(b).to_digit(16).map(u64::from);
    Ok(Some(match chunk {
        Chunk::Size { size, digits } => match (hex(byte), byte) {
            (Some(d), _) if digits < 16 => Chunk::Size {
                size: size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(d))
                    .ok_or(bad)?,
                digits: digits + 1,
            },
            (None, b';' | b' ' | b'\t') if digits > 0 => Chunk::Extension { size, len: 0 },
            (None, b'\r') if digits > 0 => Chunk::SizeLf { size },
            _ => return Err(bad),
        },
        Chunk::Extension { size, len } => match byte {
            b'\r' => Chunk::SizeLf { size },
            b'\n' => return Err(bad),
            b if (b < 0x20 && b != b'\t') || b == 0x7f => return Err(bad),
            _ if len >= MAX_CHUNK_LINE => return Err(bad),
            _ => Chunk::Extension { size, len: len + 1 },
        },
        Chunk::SizeLf { size } => match byte {
            b'\n' if size == 0 => Chunk::TrailerStart,
            b'\n' => Chunk::Data(size),
            _ => return Err(bad),
        },
        Chunk::Data(_) => return Err(bad), // handled in bulk by the caller
        Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
        Chunk::DataLf if byte == b'\n' => Chunk::Size { size: 0, digits: 0 },
        Chunk::DataCr | Chunk::DataLf => return Err(bad),
        Chunk::TrailerStart => match byte {
            b'\r' => Chunk::EndLf,
            b'\n' => return Err(bad),
            _ => Chunk::Trailer { len: 1 },
        },
        Chunk::Trailer { len } => match byte {
            b'\r' => Chunk::TrailerLf,
            b'\n' => return Err(bad),
            b if (b < 0x20 && b != b'\t') || b == 0x7f => return Err(bad),
            _ if len >= MAX_CHUNK_LINE => return Err(bad),
            _ => Chunk::Trailer { len: len + 1 },
        },
        Chunk::TrailerLf if byte == b'\n' => Chunk::TrailerStart,
        Chunk::EndLf if byte == b'\n' => return Ok(None),
        Chunk::TrailerLf | Chunk::EndLf => return Err(bad),
    }))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::sniff::http::parse_request_head;

    const CAP: usize = 16384;

    /// What the filter ends up doing with a connection's bytes.
    #[derive(Debug, PartialEq, Eq)]
    enum End {
        /// Every later request head's host was seen, in order; all bytes went out.
        Hosts(Vec<Option<String>>),
        /// The connection was refused at this point, after these hosts.
        Refused(Vec<Option<String>>, Step),
    }

    /// Plays the filter: the first request is parsed and decided by sniff() (which holds bytes
    /// until that head is complete, so no split falls inside it); the stream arrives cut at
    /// `splits`; held bytes stay in the buffer, forwarded ones leave it.
    fn run(stream: &[u8], splits: &[usize]) -> End {
        let first = match parse_request_head(stream) {
            Outcome::Found(head) => head,
            other => panic!("first request: {other:?}"),
        };
        let mut pipeline = Pipeline::after(&first, CAP);
        let mut hosts = Vec::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut cuts: Vec<usize> = splits
            .iter()
            .copied()
            .filter(|&c| c > first.head_len && c < stream.len())
            .collect();
        cuts.push(stream.len());
        let mut start = 0;
        for cut in cuts {
            buffer.extend_from_slice(&stream[start..cut]);
            start = cut;
            loop {
                match pipeline.scan(&buffer) {
                    Step::Forward => {
                        buffer.clear();
                        pipeline.flushed();
                        break;
                    }
                    Step::Hold => break,
                    Step::Head(head) => hosts.push(head.host),
                    refused => return End::Refused(hosts, refused),
                }
            }
        }
        End::Hosts(hosts)
    }

    /// `run` for every single split point and for byte-at-a-time delivery: all must agree.
    fn run_every_split(stream: &[u8]) -> End {
        let whole = run(stream, &[]);
        for cut in 1..stream.len() {
            assert_eq!(run(stream, &[cut]), whole, "split at {cut}");
        }
        let bytes: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(run(stream, &bytes), whole, "byte at a time");
        whole
    }

    fn hosts(names: &[&str]) -> End {
        End::Hosts(names.iter().map(|h| Some(h.to_string())).collect())
    }

    #[test]
    fn keep_alive_and_pipelined_requests_are_all_seen() {
        let stream = b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n\
                       GET /2 HTTP/1.1\r\nHost: b.example\r\n\r\n\
                       HEAD /3 HTTP/1.1\r\nHost: c.example\r\n\r\n";
        assert_eq!(run_every_split(stream), hosts(&["b.example", "c.example"]));
    }

    #[test]
    fn a_request_inside_a_body_is_not_a_request() {
        // The body of the first request looks like a request for evil.example: it is body.
        let body = b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n";
        let mut stream = format!(
            "POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(run_every_split(&stream), hosts(&["b.example"]));
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let stream = b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5;ext=1\r\nhello\r\n\
                       1B\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\
                       0\r\nX-Trailer: t\r\n\r\n\
                       GET /after HTTP/1.1\r\nHost: b.example\r\n\r\n";
        assert_eq!(run_every_split(stream), hosts(&["b.example"]));
    }

    #[test]
    fn a_later_head_with_a_bad_host_is_refused_not_skipped() {
        let stream = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n\
                       GET / HTTP/1.1\r\nHost: b.example\r\nHost: evil.example\r\n\r\n";
        assert_eq!(
            run_every_split(stream),
            End::Refused(vec![], Step::Malformed(Malformed::HttpDuplicateHost))
        );
    }

    #[test]
    fn bytes_that_are_not_a_request_are_refused() {
        let stream = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n\x16\x03\x01\x00\x05hello";
        assert_eq!(
            run(stream, &[]),
            End::Refused(vec![], Step::Malformed(Malformed::HttpNotARequest))
        );
    }

    #[test]
    fn broken_chunk_framing_is_refused() {
        for body in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"5\nhello\r\n", b"\r\n"] {
            let mut stream =
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            stream.extend_from_slice(body);
            assert_eq!(
                run(&stream, &[]),
                End::Refused(vec![], Step::Malformed(Malformed::HttpChunkedBody)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_head_broken_past_the_cap_is_too_large_however_it_arrives() {
        let mut stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nX: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', CAP));
        stream.extend_from_slice(b"\nbare LF past the cap\r\n\r\n");
        assert_eq!(run(&stream, &[]), End::Refused(vec![], Step::TooLarge));
        assert_eq!(
            run(&stream, &[60, 4000]),
            End::Refused(vec![], Step::TooLarge)
        );
    }

    #[test]
    fn an_endless_head_is_too_large() {
        let mut stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n".to_vec();
        stream.extend(std::iter::repeat_n(b'x', CAP));
        assert_eq!(run(&stream, &[]), End::Refused(vec![], Step::TooLarge));
    }

    fn upgrade_pipeline(request: &[u8]) -> Pipeline {
        match parse_request_head(request) {
            Outcome::Found(head) => Pipeline::after(&head, CAP),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_accepted_upgrade_becomes_a_tunnel() {
        let request =
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let mut pipeline = upgrade_pipeline(request);
        let mut buffer = request.to_vec();
        assert_eq!(pipeline.scan(&buffer), Step::Forward);
        pipeline.flushed();
        // A websocket frame before the answer is held, not parsed as HTTP.
        buffer = vec![0x81, 0x85, 1, 2, 3, 4, 5];
        assert_eq!(pipeline.scan(&buffer), Step::Hold);
        assert_eq!(pipeline.server_answered(b"HTTP/1."), UpgradeAnswer::Pending);
        assert_eq!(
            pipeline.server_answered(b"1 101 Switching Protocols\r\n"),
            UpgradeAnswer::Tunnel { held: true }
        );
        assert!(pipeline.is_tunnel());
        assert_eq!(pipeline.scan(&buffer), Step::Forward);
    }

    #[test]
    fn a_refused_upgrade_stays_http() {
        let request = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n";
        let mut pipeline = upgrade_pipeline(request);
        assert_eq!(pipeline.scan(request), Step::Forward);
        pipeline.flushed();
        assert_eq!(
            pipeline.server_answered(b"HTTP/1.1 200 OK\r\n\r\n"),
            UpgradeAnswer::StillHttp { held: false }
        );
        let next = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
        assert!(matches!(pipeline.scan(next), Step::Head(h) if h.host.as_deref() == Some("b")));
    }

    #[test]
    fn connect_is_a_tunnel_after_2xx_only() {
        let request = b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n";
        let mut pipeline = upgrade_pipeline(request);
        assert_eq!(pipeline.scan(request), Step::Forward);
        assert_eq!(
            pipeline.server_answered(b"HTTP/1.1 101 Switching\r\n"),
            UpgradeAnswer::StillHttp { held: false }
        );
        let mut pipeline = upgrade_pipeline(request);
        assert_eq!(pipeline.scan(request), Step::Forward);
        assert_eq!(
            pipeline.server_answered(b"HTTP/1.1 200 Connection established\r\n\r\n"),
            UpgradeAnswer::Tunnel { held: false }
        );
    }

    #[test]
    fn an_upgrade_with_a_body_waits_after_the_body() {
        let request =
            b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nabc";
        let mut pipeline = upgrade_pipeline(request);
        assert_eq!(pipeline.scan(request), Step::Forward);
        assert!(pipeline.awaiting_upgrade());
    }
}
