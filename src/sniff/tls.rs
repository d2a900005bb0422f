//! TLS ClientHello parser: finds the SNI `host_name` in a client's first flight.
//!
//! The ClientHello may span several handshake records (RFC 8446 §5.1); it is reassembled, and
//! only handshake records may appear before it is complete. The parser is strict wherever a
//! server could read the bytes differently:
//!
//! - every record is a handshake record with a legacy version of 0x0301..=0x0304 and a length of
//!   1..=2^14; the first handshake message is a ClientHello (type 1);
//! - the ClientHello's vectors fit exactly in the handshake length; the record that carries the
//!   end of the ClientHello carries nothing after it (a server would read those bytes as a second
//!   handshake message, which RFC 8446 forbids before the server's reply);
//! - an extensions block, when present, fills the rest of the ClientHello exactly (its absence is
//!   valid before TLS 1.3 and means no SNI); no extension type appears twice;
//! - a server_name extension holds exactly one non-empty ASCII `host_name`;
//! - no `ech_outer_extensions` (0xfd00): RFC 9849 §5.1 allows it only inside the encrypted
//!   EncodedClientHelloInner ("MUST NOT appear in either ClientHelloOuter or ClientHelloInner"),
//!   so a ClientHello on the wire that carries it was not built by a conforming client.
//!
//! An `encrypted_client_hello` extension (0xfe0d, RFC 9849) is reported ([`ClientHello::ech`])
//! whatever its payload: real ECH and GREASE ECH look alike by design, and the SNI is then the
//! outer name (the provider's public name, or, with GREASE, the real name).
//!
//! Bytes after the record that ends the ClientHello (a change_cipher_spec, early data) are not
//! looked at.
//!
//! Recognition: a first byte of 0x16 is TLS. A first record of another TLS content type
//! (change_cipher_spec, alert, application data, heartbeat: 0x14, 0x15, 0x17, 0x18 followed by a
//! 3.x version) is recognised too and is malformed ([`Malformed::TlsRecordType`]), since some
//! servers drop such records and then read a ClientHello behind them. An SSLv2-compatible
//! ClientHello (RFC 5246 Appendix E.2) is recognised by its first five bytes (a two-byte header
//! with the high bit set and a length of at least 9, message type 1, version 0x0002 or
//! 0x0300..=0x0303) and is malformed ([`Malformed::TlsSslv2Hello`]): it cannot carry SNI. The
//! SSLv2 three-byte-header form (high bit clear) cannot be told apart from other protocols and is
//! not recognised.

use std::borrow::Cow;

use super::{Malformed, Outcome};

/// TLS record content type of a handshake record.
const CONTENT_HANDSHAKE: u8 = 22;
/// The other TLS content types a record can start with.
const CONTENT_OTHER: [u8; 4] = [20, 21, 23, 24];
/// Handshake message type of a ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest TLSPlaintext fragment (RFC 8446 §5.1: MUST NOT exceed 2^14).
pub const MAX_RECORD_LEN: usize = 1 << 14;
const RANDOM_LEN: usize = 32;
const MAX_SESSION_ID_LEN: usize = 32;
const EXT_SERVER_NAME: u16 = 0;
/// `encrypted_client_hello` (RFC 9849 §11.1).
const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// `ech_outer_extensions` (RFC 9849 §11.1): only ever inside the encrypted inner hello.
const EXT_ECH_OUTER_EXTENSIONS: u16 = 0xfd00;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What a ClientHello says that the policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The raw `host_name` of the server_name extension (ASCII, not normalised), `None` when
    /// the ClientHello has no server_name extension.
    pub sni: Option<String>,
    /// The ClientHello carries an `encrypted_client_hello` extension (real or GREASE ECH): the
    /// SNI is then only the outer name.
    pub ech: bool,
}

/// Parses a TLS ClientHello at the start of `buf` (the whole buffer held so far).
///
/// [`Outcome::NotThisProtocol`] when the first bytes are not TLS, [`Outcome::NeedMore`] while
/// the ClientHello is incomplete. There is no size cap here: [`super::sniff`] applies one.
pub fn parse_client_hello(buf: &[u8]) -> Outcome<ClientHello> {
    parse_capped(buf, usize::MAX).unwrap_or(Outcome::NeedMore)
}

/// The ClientHello, with its record headers, will end beyond the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// [`parse_client_hello`] with a cap: [`TooLarge`] as soon as the length fields read so far
/// prove that the ClientHello will end beyond `max_bytes`.
///
/// The cap is checked in byte order with the other rules (a record's length right after its
/// header, the handshake length right after the handshake header), so the answer for a prefix
/// is `NeedMore` or the answer for the whole input.
pub(crate) fn parse_capped(buf: &[u8], max_bytes: usize) -> Result<Outcome<ClientHello>, TooLarge> {
    HelloParser::default().resume(buf, max_bytes)
}

/// A first record of a non-handshake TLS content type: TLS if a 3.x version follows.
fn other_record(buf: &[u8]) -> Outcome<ClientHello> {
    match (buf.get(1), buf.get(2)) {
        (Some(3), Some(0..=4)) => Outcome::Malformed(Malformed::TlsRecordType),
        (Some(3), None) | (None, _) => Outcome::NeedMore,
        _ => Outcome::NotThisProtocol,
    }
}

/// A first byte with the high bit set: an SSLv2-compatible ClientHello, or not TLS.
fn sslv2(buf: &[u8]) -> Outcome<ClientHello> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Outcome::NeedMore;
    };
    // Smallest body: msg_type, version, three u16 lengths.
    if ((usize::from(b0 & 0x7f) << 8) | usize::from(b1)) < 9 {
        return Outcome::NotThisProtocol;
    }
    match buf.get(2) {
        None => return Outcome::NeedMore,
        Some(&HANDSHAKE_CLIENT_HELLO) => {}
        Some(_) => return Outcome::NotThisProtocol,
    }
    match (buf.get(3), buf.get(4)) {
        (Some(0), Some(2)) | (Some(3), Some(0..=3)) => Outcome::Malformed(Malformed::TlsSslv2Hello),
        (Some(0 | 3), None) | (None, _) => Outcome::NeedMore,
        _ => Outcome::NotThisProtocol,
    }
}

/// [`parse_capped`] over a buffer that grows between calls: records already walked are not
/// walked again, so feeding a ClientHello byte by byte costs about what one call on the whole
/// of it does.
///
/// Each call must pass the whole buffer so far, extending the one before (and the same
/// `max_bytes`); the answer is then exactly [`parse_capped`]'s on that buffer.
/// [`super::Sniffer`] holds one and starts it over when the buffer does not grow.
#[derive(Debug, Clone, Default)]
pub(crate) struct HelloParser {
    /// Start of the first handshake record not yet complete.
    pos: usize,
    /// How many bytes of that record's header are already checked.
    checked: usize,
    /// That record's length, once its header is complete and checked.
    len: Option<usize>,
    /// Handshake bytes in the complete records before `pos`.
    collected: usize,
    /// Handshake header plus body length, once the handshake header has arrived.
    total: Option<usize>,
    /// A buffer shorter than this is still `NeedMore`, without a look: the last call answered
    /// `NeedMore` in the middle of a record whose header was checked, with the handshake's
    /// length known and every check that does not wait for the record's end made (its bound
    /// against the cap, the handshake's length against the record). Only its last byte moves the
    /// walk on. (Buffers only grow, so a stale value is always behind the buffer.)
    quiet_until: usize,
    /// The last call answered `NeedMore` in the middle of a record header: `buf[..pos + checked]`
    /// was the whole buffer, and its header bytes are checked ([`HelloParser::skip_header_byte`]).
    in_header: bool,
}

impl HelloParser {
    /// A buffer shorter than this is still `NeedMore` (0 when the parser cannot say).
    #[inline]
    pub(crate) fn quiet_until(&self) -> usize {
        self.quiet_until
    }

    /// Whether the last call answered `NeedMore` in the middle of a record header (see
    /// [`HelloParser::skip_header_byte`]).
    #[inline]
    pub(crate) fn in_header(&self) -> bool {
        self.in_header
    }

    /// After a `NeedMore` in the middle of a record header ([`HelloParser::in_header`]), for
    /// `buf`, the last call's buffer and one more byte: `true` (and the byte is accounted for) if
    /// that byte is one of the first four of the header and passes its check (content type
    /// handshake, major version 3, minor version 1..=4, any high byte of the length), so that
    /// the answer is `NeedMore` as [`HelloParser::resume`] would say; `false` if `buf` must be
    /// resumed. The length's low byte completes the header and goes to the walk. A ClientHello
    /// in 1-byte records sends four such bytes in six.
    #[inline]
    pub(crate) fn skip_header_byte(&mut self, buf: &[u8]) -> bool {
        let Some(&b) = buf.last() else {
            return false;
        };
        let ok = match self.checked {
            0 => b == CONTENT_HANDSHAKE,
            1 => b == 3,
            2 => (1..=4).contains(&b),
            3 => true,
            _ => false,
        };
        if ok {
            work!(1);
            self.checked = self.checked.saturating_add(1);
        }
        ok
    }

    /// The answer for `buf`, which extends the buffer of the previous call.
    pub(crate) fn resume(
        &mut self,
        buf: &[u8],
        max_bytes: usize,
    ) -> Result<Outcome<ClientHello>, TooLarge> {
        self.in_header = false;
        if buf.len() < self.quiet_until {
            return Ok(Outcome::NeedMore);
        }
        match buf.first() {
            None => Ok(Outcome::NeedMore),
            Some(&CONTENT_HANDSHAKE) => self.records(buf, max_bytes),
            Some(&first) if CONTENT_OTHER.contains(&first) => Ok(other_record(buf)),
            Some(&first) if first & 0x80 != 0 => Ok(sslv2(buf)),
            Some(_) => Ok(Outcome::NotThisProtocol),
        }
    }

    /// Walks the handshake records from the first one not yet complete, reassembling the first
    /// handshake message. Only a complete record moves the walk on; a record still arriving is
    /// looked at again on the next call (its header and lengths only, never its body).
    fn records(&mut self, buf: &[u8], max_bytes: usize) -> Result<Outcome<ClientHello>, TooLarge> {
        let malformed = |why| Ok(Outcome::Malformed(why));
        loop {
            let len = match self.len {
                Some(len) => len,
                None => {
                    let rest = buf.get(self.pos..).unwrap_or_default();
                    match record_header(rest, self.checked) {
                        Err(why) => return malformed(why),
                        Ok(None) => {
                            self.checked = rest.len();
                            self.in_header = true;
                            return Ok(Outcome::NeedMore);
                        }
                        Ok(Some(len)) => *self.len.insert(len),
                    }
                }
            };
            let body_start = self.pos.saturating_add(RECORD_HEADER_LEN);
            let body_end = body_start.saturating_add(len);
            // The ClientHello ends at the end of this record or later.
            if body_end > max_bytes {
                return Err(TooLarge);
            }
            let avail_end = body_end.min(buf.len());
            let before = self.collected;
            if self.total.is_none() {
                let upto = buf.get(..avail_end).unwrap_or_default();
                let (header, have) = handshake_header(upto);
                if have >= 1 && header.first() != Some(&HANDSHAKE_CLIENT_HELLO) {
                    return malformed(Malformed::TlsNotClientHello);
                }
                if have == HANDSHAKE_HEADER_LEN {
                    let [_, a, b, c] = header;
                    let body_len = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
                    self.total = Some(HANDSHAKE_HEADER_LEN.saturating_add(body_len));
                }
            }
            let record_complete = avail_end == body_end;
            if let Some(total) = self.total {
                let in_this_record = total.saturating_sub(before);
                // Bytes of the ClientHello after this record, each record carrying at most 2^14.
                let after = in_this_record.saturating_sub(len);
                let headers = after
                    .div_ceil(MAX_RECORD_LEN)
                    .saturating_mul(RECORD_HEADER_LEN);
                if body_end.saturating_add(after).saturating_add(headers) > max_bytes {
                    return Err(TooLarge);
                }
                if in_this_record < len {
                    return malformed(Malformed::TlsTrailingHandshakeData);
                }
                if in_this_record == len && record_complete {
                    return Ok(finish(buf.get(..body_end).unwrap_or_default(), total));
                }
            }
            if !record_complete {
                if self.total.is_some() {
                    self.quiet_until = body_end;
                }
                return Ok(Outcome::NeedMore);
            }
            self.collected = before.saturating_add(len);
            self.pos = body_end;
            self.checked = 0;
            self.len = None;
        }
    }
}

/// Checks the record header at the start of `rest` as far as it has arrived, from byte `from`
/// on (the bytes before it were checked by an earlier call); its length once all five bytes are
/// there.
fn record_header(rest: &[u8], from: usize) -> Result<Option<usize>, Malformed> {
    work!(rest.len().min(RECORD_HEADER_LEN).saturating_sub(from));
    if from < 1 && rest.first().is_some_and(|&t| t != CONTENT_HANDSHAKE) {
        return Err(Malformed::TlsRecordType);
    }
    if from < 2 && rest.get(1).is_some_and(|&major| major != 3) {
        return Err(Malformed::TlsRecordVersion);
    }
    if from < 3 && rest.get(2).is_some_and(|minor| !(1..=4).contains(minor)) {
        return Err(Malformed::TlsRecordVersion);
    }
    let (Some(&hi), Some(&lo)) = (rest.get(3), rest.get(4)) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(Malformed::TlsRecordLength);
    }
    Ok(Some(len))
}

/// The handshake bytes of the records that `records` starts with, as far as it holds them:
/// each record's body in turn. The record headers must already be checked.
fn handshake_fragments(records: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = records.get(pos..pos.saturating_add(RECORD_HEADER_LEN))?;
        let [_, _, _, hi, lo] = <[u8; RECORD_HEADER_LEN]>::try_from(header).ok()?;
        let start = pos.saturating_add(RECORD_HEADER_LEN);
        pos = start.saturating_add(usize::from(u16::from_be_bytes([hi, lo])));
        work!(2);
        Some(
            records
                .get(start..pos.min(records.len()))
                .unwrap_or_default(),
        )
    })
}

/// The first (up to) four handshake bytes in `records`, and how many there are.
fn handshake_header(records: &[u8]) -> ([u8; 4], usize) {
    let mut header = [0u8; HANDSHAKE_HEADER_LEN];
    let mut have = 0;
    let bytes = handshake_fragments(records).flatten();
    for (slot, &byte) in header.iter_mut().zip(bytes) {
        *slot = byte;
        have += 1;
    }
    work!(have);
    (header, have)
}

/// Parses the complete ClientHello whose `total` bytes (header included) are the handshake
/// bytes of `records`, which ends with the record that ends it.
fn finish(records: &[u8], total: usize) -> Outcome<ClientHello> {
    let mut fragments = handshake_fragments(records);
    let first = fragments.next().unwrap_or_default();
    let message: Cow<'_, [u8]> = if first.len() >= total {
        Cow::Borrowed(first)
    } else {
        work!(total);
        // A fragment at a time (a copy each), not a byte at a time; 1-byte records are pushed.
        let mut message = Vec::with_capacity(records.len());
        for fragment in std::iter::once(first).chain(fragments) {
            match fragment {
                [byte] => message.push(*byte),
                _ => message.extend_from_slice(fragment),
            }
        }
        Cow::Owned(message)
    };
    // The fragments end exactly at `total`; a shorter message fails as a lying length.
    let body = message.get(HANDSHAKE_HEADER_LEN..total).unwrap_or_default();
    work!(body.len());
    match parse_body(body) {
        Ok(hello) => Outcome::Found(hello),
        Err(why) => Outcome::Malformed(why),
    }
}

/// A cursor over a byte slice that never reads past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        let (&byte, tail) = self.rest.split_first()?;
        self.rest = tail;
        Some(byte)
    }

    fn u16(&mut self) -> Option<u16> {
        let bytes = self.take(2)?;
        Some(u16::from_be_bytes(bytes.try_into().ok()?))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }
}

/// Parses a ClientHello body (after the four-byte handshake header).
fn parse_body(body: &[u8]) -> Result<ClientHello, Malformed> {
    let short = Malformed::TlsHandshakeLength;
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(short)?;
    if version >> 8 != 3 {
        return Err(Malformed::TlsClientHelloVersion);
    }
    r.take(RANDOM_LEN).ok_or(short)?;
    let session_id_len = usize::from(r.u8().ok_or(short)?);
    if session_id_len > MAX_SESSION_ID_LEN {
        return Err(Malformed::TlsSessionId);
    }
    r.take(session_id_len).ok_or(short)?;
    let suites = r.vec16().ok_or(short)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Malformed::TlsCipherSuites);
    }
    if r.vec8().ok_or(short)?.is_empty() {
        return Err(Malformed::TlsCompressionMethods);
    }
    if r.is_empty() {
        // No extensions block at all: valid before TLS 1.3, and no SNI.
        return Ok(ClientHello {
            sni: None,
            ech: false,
        });
    }
    let extensions = r.vec16().ok_or(Malformed::TlsExtensions)?;
    if !r.is_empty() {
        return Err(Malformed::TlsExtensions);
    }
    parse_extensions(extensions)
}

/// Parses the extensions block: every extension fits, no type twice, at most one SNI, no
/// `ech_outer_extensions`; notes `encrypted_client_hello`.
fn parse_extensions(block: &[u8]) -> Result<ClientHello, Malformed> {
    let mut r = Reader::new(block);
    let mut types = Vec::new();
    let mut server_name = None;
    let mut ech = false;
    let mut outer_extensions = false;
    while !r.is_empty() {
        let kind = r.u16().ok_or(Malformed::TlsExtensions)?;
        let data = r.vec16().ok_or(Malformed::TlsExtensions)?;
        match kind {
            EXT_SERVER_NAME if server_name.is_none() => server_name = Some(data),
            EXT_ENCRYPTED_CLIENT_HELLO => ech = true,
            EXT_ECH_OUTER_EXTENSIONS => outer_extensions = true,
            _ => {}
        }
        types.push(kind);
    }
    types.sort_unstable();
    let duplicate = types.windows(2).find_map(|pair| match pair {
        [a, b] if a == b => Some(*a),
        _ => None,
    });
    match duplicate {
        Some(EXT_SERVER_NAME) => return Err(Malformed::TlsSniDuplicateExtension),
        Some(_) => return Err(Malformed::TlsDuplicateExtension),
        None => {}
    }
    if outer_extensions {
        return Err(Malformed::TlsEchOuterExtensions);
    }
    let sni = server_name.map(parse_server_name).transpose()?;
    Ok(ClientHello { sni, ech })
}

/// Parses a server_name extension body (RFC 6066 §3): exactly one non-empty ASCII host_name.
fn parse_server_name(data: &[u8]) -> Result<String, Malformed> {
    if data.is_empty() {
        return Err(Malformed::TlsSniEmptyExtension);
    }
    let mut r = Reader::new(data);
    let list = r.vec16().ok_or(Malformed::TlsSniList)?;
    if !r.is_empty() || list.is_empty() {
        return Err(Malformed::TlsSniList);
    }
    let mut r = Reader::new(list);
    let mut first = None;
    let mut entries = 0usize;
    while !r.is_empty() {
        let name_type = r.u8().ok_or(Malformed::TlsSniList)?;
        let name = r.vec16().ok_or(Malformed::TlsSniList)?;
        first.get_or_insert((name_type, name));
        entries += 1;
    }
    let Some((name_type, name)) = first else {
        return Err(Malformed::TlsSniList);
    };
    if entries > 1 {
        return Err(Malformed::TlsSniMultipleNames);
    }
    if name_type != NAME_TYPE_HOST_NAME {
        return Err(Malformed::TlsSniNameType);
    }
    if name.is_empty() {
        return Err(Malformed::TlsSniEmptyName);
    }
    if !name.is_ascii() {
        return Err(Malformed::TlsSniNonAscii);
    }
    String::from_utf8(name.to_vec()).map_err(|_| Malformed::TlsSniNonAscii)
}

/// Builders of hand-made ClientHellos and the table of malformed ones, shared with the tests of
/// [`super::sniff`].
#[cfg(test)]
pub(crate) mod build {
    /// A ClientHello body, field by field, so that each can be broken on its own.
    #[derive(Clone)]
    pub(crate) struct Hello {
        pub version: [u8; 2],
        pub session_id: Vec<u8>,
        pub suites: Vec<u8>,
        pub compression: Vec<u8>,
        /// `None`: no extensions block at all.
        pub extensions: Option<Vec<(u16, Vec<u8>)>>,
        /// Added to the extensions block length field.
        pub extensions_len_delta: i32,
    }

    impl Hello {
        /// A plausible TLS 1.2 ClientHello with the given SNI.
        pub(crate) fn with_sni(name: &[u8]) -> Hello {
            Hello {
                version: [3, 3],
                session_id: vec![7; 32],
                suites: vec![0x13, 0x01, 0xc0, 0x2f],
                compression: vec![0],
                extensions: Some(vec![
                    (0, sni_ext(&[(0, name)])),
                    (10, vec![0, 2, 0, 29]),
                    (43, vec![2, 3, 3]),
                ]),
                extensions_len_delta: 0,
            }
        }

        pub(crate) fn body(&self) -> Vec<u8> {
            let mut out = self.version.to_vec();
            out.extend([0x5a; 32]);
            out.push(self.session_id.len() as u8);
            out.extend(&self.session_id);
            out.extend((self.suites.len() as u16).to_be_bytes());
            out.extend(&self.suites);
            out.push(self.compression.len() as u8);
            out.extend(&self.compression);
            if let Some(extensions) = &self.extensions {
                let mut block = Vec::new();
                for (kind, data) in extensions {
                    block.extend(kind.to_be_bytes());
                    block.extend((data.len() as u16).to_be_bytes());
                    block.extend(data);
                }
                let len = block.len() as i32 + self.extensions_len_delta;
                out.extend((len as u16).to_be_bytes());
                out.extend(block);
            }
            out
        }

        /// The handshake message (type 1, true length).
        pub(crate) fn message(&self) -> Vec<u8> {
            handshake(1, &self.body())
        }

        /// The message in one record.
        pub(crate) fn record(&self) -> Vec<u8> {
            records(&self.message(), usize::MAX)
        }
    }

    /// A server_name extension body with these (name_type, name) entries.
    pub(crate) fn sni_ext(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(*name);
        }
        let mut out = (list.len() as u16).to_be_bytes().to_vec();
        out.extend(list);
        out
    }

    /// A handshake message of this type around `body`.
    pub(crate) fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        let mut out = vec![kind];
        out.extend(&len.to_be_bytes()[1..]);
        out.extend(body);
        out
    }

    /// One record header of this type and length.
    pub(crate) fn header(kind: u8, len: usize) -> Vec<u8> {
        let mut out = vec![kind, 3, 1];
        out.extend((len as u16).to_be_bytes());
        out
    }

    /// `message` framed as handshake records of at most `chunk` bytes.
    pub(crate) fn records(message: &[u8], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in message.chunks(chunk.min(super::MAX_RECORD_LEN)) {
            out.extend(header(22, piece.len()));
            out.extend(piece);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::build::*;
    use super::*;
    use crate::sniff::tests::sniff_every_prefix;
    use crate::sniff::{sniff, Sniffed};

    fn found(sni: Option<&str>) -> Outcome<ClientHello> {
        Outcome::Found(ClientHello {
            sni: sni.map(str::to_string),
            ech: false,
        })
    }

    /// Parses `input` whole and through `sniff` on every prefix; both must agree. One
    /// [`HelloParser`] fed every prefix in turn answers as a fresh parse of each.
    fn check(input: &[u8]) -> Outcome<ClientHello> {
        let whole = parse_client_hello(input);
        let mut parser = HelloParser::default();
        for end in 0..=input.len() {
            assert_eq!(
                parser.resume(&input[..end], usize::MAX),
                parse_capped(&input[..end], usize::MAX),
                "resumed, prefix of {end} bytes"
            );
        }
        let sniffed = sniff_every_prefix(input, 1 << 20);
        let expect = match &whole {
            Outcome::Found(hello) => Sniffed::tls(hello.sni.clone(), hello.ech),
            Outcome::Malformed(why) => Sniffed::Malformed(*why),
            Outcome::NeedMore => Sniffed::NeedMore,
            Outcome::NotThisProtocol => Sniffed::Other,
        };
        assert_eq!(sniffed, expect);
        whole
    }

    #[test]
    fn well_formed_hand_built() {
        let hello = Hello::with_sni(b"api.github.com");
        assert_eq!(check(&hello.record()), found(Some("api.github.com")));
        for chunk in [1, 2, 3, 4, 5, 7, 100] {
            let framed = records(&hello.message(), chunk);
            assert_eq!(check(&framed), found(Some("api.github.com")), "{chunk}");
        }
        // The raw name is kept as sent; normalisation happens in policy::name.
        let upper = Hello::with_sni(b"API.GitHub.com.");
        assert_eq!(check(&upper.record()), found(Some("API.GitHub.com.")));

        let mut none = hello.clone();
        none.extensions = None;
        assert_eq!(check(&none.record()), found(None));
        let mut no_sni = hello.clone();
        no_sni.extensions = Some(vec![(10, vec![0, 2, 0, 29])]);
        assert_eq!(check(&no_sni.record()), found(None));
        let mut empty_block = hello.clone();
        empty_block.extensions = Some(vec![]);
        assert_eq!(check(&empty_block.record()), found(None));

        // Whatever follows the record that ends the ClientHello is not looked at.
        let mut trailing = hello.record();
        trailing.extend([20, 3, 3, 0, 1, 1, 23, 3, 3, 0]);
        assert_eq!(check(&trailing), found(Some("api.github.com")));
    }

    #[test]
    fn ech_is_reported() {
        let mut hello = Hello::with_sni(b"cloudflare-ech.com");
        let with_ech = |hello: &Hello| {
            let mut hello = hello.clone();
            if let Some(ext) = hello.extensions.as_mut() {
                ext.push((
                    EXT_ENCRYPTED_CLIENT_HELLO,
                    vec![0, 0, 1, 0, 1, 7, 0, 0, 0, 1, 9],
                ));
            }
            hello
        };
        let ech = ClientHello {
            sni: Some("cloudflare-ech.com".into()),
            ech: true,
        };
        assert_eq!(
            check(&with_ech(&hello).record()),
            Outcome::Found(ech.clone())
        );
        for chunk in [1, 3, 100] {
            let framed = records(&with_ech(&hello).message(), chunk);
            assert_eq!(check(&framed), Outcome::Found(ech.clone()), "{chunk}");
        }
        // Whatever the payload, even empty: GREASE and real ECH look alike, and the server
        // judges the payload, not us.
        hello.extensions = Some(vec![(EXT_ENCRYPTED_CLIENT_HELLO, vec![])]);
        assert_eq!(
            check(&hello.record()),
            Outcome::Found(ClientHello {
                sni: None,
                ech: true
            })
        );
        // ECH before the SNI.
        hello.extensions = Some(vec![
            (EXT_ENCRYPTED_CLIENT_HELLO, vec![0]),
            (0, sni_ext(&[(0, b"a.example")])),
        ]);
        assert_eq!(
            check(&hello.record()),
            Outcome::Found(ClientHello {
                sni: Some("a.example".into()),
                ech: true
            })
        );
        // A neighbouring code point is not ECH.
        hello.extensions = Some(vec![(0xfe0c, vec![0]), (0, sni_ext(&[(0, b"a.example")]))]);
        assert_eq!(check(&hello.record()), found(Some("a.example")));
    }

    #[test]
    fn incomplete_is_need_more() {
        let input = records(&Hello::with_sni(b"a.example").message(), 7);
        for end in 0..input.len() {
            assert_eq!(
                parse_client_hello(&input[..end]),
                Outcome::NeedMore,
                "{end}"
            );
        }
    }

    #[test]
    fn not_tls() {
        for input in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"\x17\x04\x03",
            b"\x15\x02\x00",
            b"\x80\x02\x01",
            b"\x80\x20\x02\x03\x01",
            b"\x80\x20\x01\x02\x00",
            b"\x80\x20\x01\x03\x04",
        ] {
            assert_eq!(
                parse_client_hello(input),
                Outcome::NotThisProtocol,
                "{input:?}"
            );
        }
    }

    #[test]
    fn malformed_table() {
        use Malformed::*;
        let base = Hello::with_sni(b"api.github.com");
        let message = base.message();
        let body = base.body();
        let with = |f: &dyn Fn(&mut Hello)| {
            let mut hello = base.clone();
            f(&mut hello);
            hello.record()
        };
        let concat = |parts: &[&[u8]]| parts.concat();
        // A body (with only extension 10, or no extensions block), then edited.
        let raw = |block: bool, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut hello = base.clone();
            hello.extensions = block.then(|| vec![(10, vec![0, 2, 0, 29])]);
            let mut body = hello.body();
            edit(&mut body);
            records(&handshake(1, &body), usize::MAX)
        };

        let cases: Vec<(&str, Vec<u8>, Malformed)> = vec![
            (
                "record length longer than the message, then a CCS record",
                concat(&[
                    &header(22, message.len() + 6),
                    &message,
                    &[20, 3, 3, 0, 1, 1],
                ]),
                TlsTrailingHandshakeData,
            ),
            (
                "record length shorter than the message",
                concat(&[&header(22, message.len() - 4), &message]),
                TlsRecordType,
            ),
            (
                "record length 0",
                concat(&[&header(22, 0), &message]),
                TlsRecordLength,
            ),
            (
                "record length 2^14 + 1",
                concat(&[&header(22, MAX_RECORD_LEN + 1), &message]),
                TlsRecordLength,
            ),
            (
                "record version 2.0",
                concat(&[&[22, 2, 0, 0, message.len() as u8], &message[..]]),
                TlsRecordVersion,
            ),
            (
                "record version 3.5",
                concat(&[&[22, 3, 5, 0, message.len() as u8], &message[..]]),
                TlsRecordVersion,
            ),
            (
                "handshake length shorter than the body, record as long as the body",
                records(&concat(&[&[1, 0, 0, 40], &body]), usize::MAX),
                TlsTrailingHandshakeData,
            ),
            (
                "handshake length shorter than the body, record as long as the length",
                records(&concat(&[&[1, 0, 0, 40], &body[..40]]), usize::MAX),
                TlsHandshakeLength,
            ),
            (
                "handshake length longer than the body, then a CCS record",
                concat(&[
                    &records(&concat(&[&[1, 0, 0x10, 0], &body]), usize::MAX),
                    &[20, 3, 3, 0, 1, 1],
                ]),
                TlsRecordType,
            ),
            (
                "handshake length 0",
                records(&handshake(1, &[]), usize::MAX),
                TlsHandshakeLength,
            ),
            (
                "alert record between fragments",
                concat(&[
                    &records(&message[..50], usize::MAX),
                    &[21, 3, 3, 0, 2, 2, 40],
                    &records(&message[50..], usize::MAX),
                ]),
                TlsRecordType,
            ),
            (
                "change_cipher_spec record first",
                vec![20, 3, 1, 0, 1, 1],
                TlsRecordType,
            ),
            (
                "application data record first",
                vec![23, 3, 3, 0, 5],
                TlsRecordType,
            ),
            (
                "handshake type ServerHello",
                records(&handshake(2, &body), 9999),
                TlsNotClientHello,
            ),
            (
                "handshake type 0",
                records(&handshake(0, &body), 1),
                TlsNotClientHello,
            ),
            (
                "client_hello version 2.0",
                with(&|h| h.version = [2, 0]),
                TlsClientHelloVersion,
            ),
            (
                "session id of 33 bytes",
                with(&|h| h.session_id = vec![0; 33]),
                TlsSessionId,
            ),
            (
                "no cipher suites",
                with(&|h| h.suites = vec![]),
                TlsCipherSuites,
            ),
            (
                "odd cipher suites",
                with(&|h| h.suites = vec![0x13, 1, 0]),
                TlsCipherSuites,
            ),
            (
                "no compression methods",
                with(&|h| h.compression = vec![]),
                TlsCompressionMethods,
            ),
            (
                "extensions length +1",
                with(&|h| h.extensions_len_delta = 1),
                TlsExtensions,
            ),
            (
                "extensions length -1",
                with(&|h| h.extensions_len_delta = -1),
                TlsExtensions,
            ),
            (
                "one stray byte instead of an extensions block",
                raw(false, &|b| b.push(0)),
                TlsExtensions,
            ),
            (
                "extension overruns the block",
                raw(true, &|b| {
                    // The block ends with extension 10: type, length 4, data; lengthen it.
                    let n = b.len();
                    b[n - 5] += 1;
                }),
                TlsExtensions,
            ),
            (
                "two names in server_name",
                with(&|h| {
                    h.extensions = Some(vec![(
                        0,
                        sni_ext(&[(0, b"allowed.example"), (0, b"denied.example")]),
                    )])
                }),
                TlsSniMultipleNames,
            ),
            (
                "empty server_name extension",
                with(&|h| h.extensions = Some(vec![(0, vec![])])),
                TlsSniEmptyExtension,
            ),
            (
                "server_name extension twice",
                with(&|h| {
                    h.extensions = Some(vec![
                        (0, sni_ext(&[(0, b"allowed.example")])),
                        (10, vec![0, 2, 0, 29]),
                        (0, sni_ext(&[(0, b"denied.example")])),
                    ])
                }),
                TlsSniDuplicateExtension,
            ),
            (
                "another extension twice",
                with(&|h| {
                    h.extensions = Some(vec![
                        (10, vec![0, 2, 0, 29]),
                        (0, sni_ext(&[(0, b"a.example")])),
                        (10, vec![0, 2, 0, 23]),
                    ])
                }),
                TlsDuplicateExtension,
            ),
            (
                "encrypted_client_hello twice",
                with(&|h| {
                    h.extensions = Some(vec![
                        (EXT_ENCRYPTED_CLIENT_HELLO, vec![0]),
                        (0, sni_ext(&[(0, b"a.example")])),
                        (EXT_ENCRYPTED_CLIENT_HELLO, vec![0]),
                    ])
                }),
                TlsDuplicateExtension,
            ),
            (
                "ech_outer_extensions in a ClientHello on the wire",
                with(&|h| {
                    h.extensions = Some(vec![
                        (0, sni_ext(&[(0, b"a.example")])),
                        (EXT_ECH_OUTER_EXTENSIONS, vec![2, 0, 10]),
                    ])
                }),
                TlsEchOuterExtensions,
            ),
            (
                "ech_outer_extensions next to encrypted_client_hello",
                with(&|h| {
                    h.extensions = Some(vec![
                        (EXT_ENCRYPTED_CLIENT_HELLO, vec![0]),
                        (EXT_ECH_OUTER_EXTENSIONS, vec![]),
                    ])
                }),
                TlsEchOuterExtensions,
            ),
            (
                "zero-length host_name",
                with(&|h| h.extensions = Some(vec![(0, sni_ext(&[(0, b"")]))])),
                TlsSniEmptyName,
            ),
            (
                "non-ASCII host_name",
                with(&|h| h.extensions = Some(vec![(0, sni_ext(&[(0, "bücher.de".as_bytes())]))])),
                TlsSniNonAscii,
            ),
            (
                "host_name with a byte over 0x7f",
                with(&|h| h.extensions = Some(vec![(0, sni_ext(&[(0, b"a\xffb")]))])),
                TlsSniNonAscii,
            ),
            (
                "name_type 1",
                with(&|h| h.extensions = Some(vec![(0, sni_ext(&[(1, b"a.example")]))])),
                TlsSniNameType,
            ),
            (
                "empty server_name_list",
                with(&|h| h.extensions = Some(vec![(0, vec![0, 0])])),
                TlsSniList,
            ),
            (
                "server_name_list length shorter than its extension",
                with(&|h| {
                    let mut data = sni_ext(&[(0, b"a.example")]);
                    data[1] -= 1;
                    h.extensions = Some(vec![(0, data)])
                }),
                TlsSniList,
            ),
            (
                "host_name overruns the list",
                with(&|h| {
                    let mut data = sni_ext(&[(0, b"a.example")]);
                    data[4] += 1;
                    h.extensions = Some(vec![(0, data)])
                }),
                TlsSniList,
            ),
            (
                "SSLv2-compatible hello",
                vec![
                    0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
                ],
                TlsSslv2Hello,
            ),
            (
                "SSLv2 hello with SSLv2 version",
                vec![0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15],
                TlsSslv2Hello,
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(check(&input), Outcome::Malformed(want), "{name}");
        }
    }

    #[test]
    fn huge_handshake_length_is_too_large() {
        // A ClientHello claiming 16 MiB, and one just over the cap.
        let head = records(&[1, 0xff, 0xff, 0xff, 3, 3], usize::MAX);
        let head = concat_record_len(head, 16384);
        assert_eq!(parse_client_hello(&head), Outcome::NeedMore);
        assert_eq!(sniff(&head, 65536), Sniffed::TooLarge);

        let hello = Hello::with_sni(b"a.example");
        let framed = hello.record();
        assert!(matches!(sniff(&framed, framed.len()), Sniffed::Tls(_)));
        // The first header bytes already prove that the hello cannot fit.
        for end in 9..framed.len() {
            assert_eq!(
                sniff(&framed[..end], framed.len() - 1),
                Sniffed::TooLarge,
                "{end}"
            );
        }
        // Split in 100-byte records, the extra record headers count against the cap.
        let split = records(&hello.message(), 100);
        assert!(matches!(sniff(&split, split.len()), Sniffed::Tls(_)));
        assert_eq!(sniff(&split[..10], split.len() - 1), Sniffed::TooLarge);
    }

    /// Rewrites the first record's length field (the body stays as it is).
    fn concat_record_len(mut input: Vec<u8>, len: u16) -> Vec<u8> {
        input[3..5].copy_from_slice(&len.to_be_bytes());
        input
    }

    #[test]
    fn seed_files_parse() {
        let seeds: &[(&str, &[u8], Option<&str>)] = &[
            (
                "tls13_sni",
                include_bytes!("../../tests/data/tls/tls13_sni.bin"),
                Some("api.github.com"),
            ),
            (
                "tls12_sni",
                include_bytes!("../../tests/data/tls/tls12_sni.bin"),
                Some("api.github.com"),
            ),
            (
                "tls13_no_sni",
                include_bytes!("../../tests/data/tls/tls13_no_sni.bin"),
                None,
            ),
            (
                "tls12_no_sni",
                include_bytes!("../../tests/data/tls/tls12_no_sni.bin"),
                None,
            ),
            (
                "tls13_sni_100_byte_records",
                include_bytes!("../../tests/data/tls/tls13_sni_100_byte_records.bin"),
                Some("api.github.com"),
            ),
        ];
        for (name, bytes, sni) in seeds {
            assert_eq!(check(bytes), found(*sni), "{name}");
        }
    }
}
