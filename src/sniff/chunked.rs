//! The chunked transfer coding (RFC 9112 §7.1), followed byte by byte so that it survives any
//! split of the stream: shared by the request side ([`super::pipeline`]) and the response side
//! ([`super::response`]) of a plaintext HTTP/1 connection.
//!
//! Chunk data is never looked at: [`Chunk::Data`] tells the caller how many bytes to skip in
//! bulk. Only the size lines, extensions and trailers are read byte by byte, each capped at
//! [`MAX_CHUNK_LINE`] bytes.

/// Longest chunk-size line (with extensions) or trailer line accepted.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the hex size; `digits` so far.
    Size {
        /// The size so far.
        size: u64,
        /// Hex digits read.
        digits: u8,
    },
    /// After the size: extensions up to CR.
    Extension {
        /// The chunk's size.
        size: u64,
        /// Extension bytes so far.
        len: usize,
    },
    /// CR seen after the size line; LF expected.
    SizeLf {
        /// The chunk's size.
        size: u64,
    },
    /// Chunk data remaining: skipped in bulk by the caller, never through [`Chunk::step`].
    Data(u64),
    /// CR expected after chunk data.
    DataCr,
    /// LF expected after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line of `len` bytes.
    Trailer {
        /// Trailer line bytes so far.
        len: usize,
    },
    /// CR of the final empty line seen; LF ends the body.
    EndLf,
    /// CR at the end of a trailer line seen; LF expected.
    TrailerLf,
}

/// The chunk framing is broken: what follows the body cannot be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl Chunk {
    /// The start of a chunked body.
    pub const START: Chunk = Chunk::Size { size: 0, digits: 0 };

    /// One byte of chunk framing. `Ok(None)`: the body ended with this byte.
    pub fn step(self, byte: u8) -> Result<Option<Chunk>, BadChunk> {
        let hex = |b: u8| char::from(b).to_digit(16).map(u64::from);
        let is_ctl = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
        Ok(Some(match self {
            Chunk::Size { size, digits } => match (hex(byte), byte) {
                (Some(d), _) if digits < 16 => Chunk::Size {
                    size: size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(d))
                        .ok_or(BadChunk)?,
                    digits: digits + 1,
                },
                (None, b';' | b' ' | b'\t') if digits > 0 => Chunk::Extension { size, len: 0 },
                (None, b'\r') if digits > 0 => Chunk::SizeLf { size },
                _ => return Err(BadChunk),
            },
            Chunk::Extension { size, len } => match byte {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Err(BadChunk),
                b if is_ctl(b) => return Err(BadChunk),
                _ if len >= MAX_CHUNK_LINE => return Err(BadChunk),
                _ => Chunk::Extension { size, len: len + 1 },
            },
            Chunk::SizeLf { size } => match byte {
                b'\n' if size == 0 => Chunk::TrailerStart,
                b'\n' => Chunk::Data(size),
                _ => return Err(BadChunk),
            },
            Chunk::Data(_) => return Err(BadChunk), // skipped in bulk by the caller
            Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
            Chunk::DataLf if byte == b'\n' => Chunk::START,
            Chunk::DataCr | Chunk::DataLf => return Err(BadChunk),
            Chunk::TrailerStart => match byte {
                b'\r' => Chunk::EndLf,
                b'\n' => return Err(BadChunk),
                b if is_ctl(b) => return Err(BadChunk),
                _ => Chunk::Trailer { len: 1 },
            },
            Chunk::Trailer { len } => match byte {
                b'\r' => Chunk::TrailerLf,
                b'\n' => return Err(BadChunk),
                b if is_ctl(b) => return Err(BadChunk),
                _ if len >= MAX_CHUNK_LINE => return Err(BadChunk),
                _ => Chunk::Trailer { len: len + 1 },
            },
            Chunk::TrailerLf if byte == b'\n' => Chunk::TrailerStart,
            Chunk::EndLf if byte == b'\n' => return Ok(None),
            Chunk::TrailerLf | Chunk::EndLf => return Err(BadChunk),
        }))
    }
}

/// Where a walk over a chunked body got to in one call of [`walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// Every byte was body: the body goes on in the next bytes, at this position.
    More(Chunk),
    /// The body ended after this many bytes.
    Ended(usize),
}

/// Walks `bytes` from position `chunk` inside a chunked body: data in bulk, framing bytewise.
pub fn walk(mut chunk: Chunk, bytes: &[u8]) -> Result<Walked, BadChunk> {
    let mut pos = 0usize;
    while let Some(rest) = bytes.get(pos..).filter(|r| !r.is_empty()) {
        if let Chunk::Data(remaining) = chunk {
            let available = u64::try_from(rest.len()).unwrap_or(u64::MAX);
            let used = remaining.min(available);
            pos = pos.saturating_add(usize::try_from(used).unwrap_or(usize::MAX));
            chunk = if used == remaining {
                Chunk::DataCr
            } else {
                Chunk::Data(remaining - used)
            };
            continue;
        }
        let byte = rest.first().copied().unwrap_or_default();
        pos = pos.saturating_add(1);
        match chunk.step(byte)? {
            Some(next) => chunk = next,
            None => return Ok(Walked::Ended(pos)),
        }
    }
    Ok(Walked::More(chunk))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// Walks `body` cut at every point (and byte by byte); all must agree.
    fn walk_every_split(body: &[u8]) -> Result<usize, BadChunk> {
        let whole = match walk(Chunk::START, body)? {
            Walked::Ended(n) => Ok(n),
            Walked::More(_) => Err(BadChunk),
        };
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            let split = match walk(Chunk::START, a) {
                Ok(Walked::Ended(n)) => Ok(n),
                Ok(Walked::More(c)) => match walk(c, b) {
                    Ok(Walked::Ended(n)) => Ok(n + cut),
                    Ok(Walked::More(_)) => Err(BadChunk),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            assert_eq!(split, whole, "cut at {cut}");
        }
        whole
    }

    #[test]
    fn bodies_end_where_their_framing_says() {
        let cases: &[(&[u8], Result<usize, BadChunk>)] = &[
            (b"0\r\n\r\n", Ok(5)),
            (b"5\r\nhello\r\n0\r\n\r\nGET", Ok(15)),
            (b"5;a=b\r\nhello\r\n0\r\n\r\n", Ok(19)),
            (b"5 ;a\r\nhello\r\n0\r\nT: x\r\nU: y\r\n\r\nrest", Ok(30)),
            (b"A\r\n0123456789\r\n0\r\n\r\n", Ok(20)),
            (b"0000000000000001\r\nx\r\n0\r\n\r\n", Ok(26)),
            // 17 hex digits, a bare LF, a control byte in an extension or trailer, data that
            // overruns its size, a negative or empty size: all broken.
            (b"00000000000000001\r\nx\r\n0\r\n\r\n", Err(BadChunk)),
            (b"5\nhello\r\n0\r\n\r\n", Err(BadChunk)),
            (b"5;a\x01\r\nhello\r\n0\r\n\r\n", Err(BadChunk)),
            (b"0\r\nT: \x01\r\n\r\n", Err(BadChunk)),
            (b"0\r\n\x01\r\n\r\n", Err(BadChunk)),
            (b"3\r\nhello\r\n0\r\n\r\n", Err(BadChunk)),
            (b"-1\r\n", Err(BadChunk)),
            (b"\r\n", Err(BadChunk)),
            (b";ext\r\n", Err(BadChunk)),
            (b"0\r\nT: x\n\r\n", Err(BadChunk)),
            (b"0\r\n\r\r", Err(BadChunk)),
        ];
        for (body, want) in cases {
            assert_eq!(
                walk_every_split(body),
                *want,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn lines_are_capped() {
        let mut ext = b"1;".to_vec();
        ext.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE));
        ext.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(walk(Chunk::START, &ext), Ok(Walked::Ended(ext.len())));
        ext.insert(3, b'x');
        assert_eq!(walk(Chunk::START, &ext), Err(BadChunk));

        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE));
        trailer.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            walk(Chunk::START, &trailer),
            Ok(Walked::Ended(trailer.len()))
        );
        trailer.insert(4, b'x');
        assert_eq!(walk(Chunk::START, &trailer), Err(BadChunk));
    }

    #[test]
    fn data_is_skipped_not_read() {
        // Framing bytes inside chunk data are data.
        let body = b"9\r\n0\r\n\r\nGET \r\n0\r\n\r\n";
        assert_eq!(walk_every_split(body), Ok(body.len()));
    }
}
