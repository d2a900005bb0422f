//! Host patterns: their syntax and validation, and the index a compiled policy looks names up in.
//!
//! Four kinds of pattern, each indexed so that a lookup costs the same with 10 or 100,000 rules:
//!
//! | pattern | kind | index |
//! |---|---|---|
//! | `github.com` | [`PatternKind::Exact`] | hash map keyed by the name |
//! | `*.github.com` | [`PatternKind::Suffix`] | hash map keyed by `github.com`, probed with each dot-suffix of the name |
//! | `*` | [`PatternKind::Any`] | one port index |
//! | `api-*.example.com`, `?.x`, `[ab].x`, `{a,b}.x` | [`PatternKind::Glob`] | see below |
//!
//! A glob is expanded into its `{...}` alternatives (`policy::glob`). An alternative without
//! wildcards is a plain name and goes to the exact map. One whose literal tail holds a dot
//! (`api-*.example.com`) is keyed by the dot-suffix that tail guarantees (`example.com`) and is
//! only tried on names with that suffix, probed along with the `*.suffix` patterns. The rest (no
//! literal domain tail, like `api-*` or `*b`) are tried on every name, so a policy should not
//! have many of those.
//!
//! Every hit is a port index, which gives the lowest rule id whose ports contain the port.
//!
//! The lookup stops at the first key it finds. At build time an exact name's port index is
//! folded with those of the patterns keyed by its dot-suffixes that match it (`*.suffix`, keyed
//! globs), and a `*.s` key's with those of the `*.t` keys, `t` a shorter dot-suffix of `s`; the
//! dot-suffixes are probed longest first. Globs keyed by a shorter suffix are still tried, and
//! `*` and the unkeyed globs always. So a name an exact rule lists costs one probe, and one a
//! `*.s` rule matches one probe per dot up to `s`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use rustc_hash::FxHashMap;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::glob::{self, GlobError, Token};
use super::key::Key;
use super::name::{classify_sni, MalformedName, NameClass};
use super::ports::{PortIndex, PortRange};
use super::{min_rule, RuleId};

/// What kind of host pattern a [`HostPattern`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatternKind {
    /// A plain name: matches exactly that name.
    Exact,
    /// `*.suffix`: matches any name ending in `.suffix` with at least one label before it; never
    /// the apex `suffix`.
    Suffix,
    /// `*` alone: matches any well-formed name.
    Any,
    /// Any other glob (`?`, `[a-z]`, `{a,b}`, `*` elsewhere); `*` may span dots.
    Glob,
}

/// A validated host pattern: ASCII, lowercased, one trailing dot removed.
///
/// Build one with [`HostPattern::parse`] (or `str::parse`, or from JSON); the fields are private so
/// every `HostPattern` is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    text: String,
    kind: PatternKind,
}

/// Why a host pattern is invalid. Its `Display` is the reason shown after the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub kind: PatternErrorKind,
}

/// What is wrong with a host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternErrorKind {
    /// Empty (or only a dot).
    Empty,
    /// Contains non-ASCII characters; internationalised names must be written in punycode.
    NonAscii,
    /// An IP literal: IPs belong in `cidrs`.
    IpLiteral,
    /// A character that cannot occur in a host name or a glob over host names.
    BadChar(char),
    /// A plain name (or the suffix of `*.suffix`) that no well-formed name can equal.
    BadName(MalformedName),
    /// A glob that does not parse; the reason.
    Glob(String),
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.pattern;
        match &self.kind {
            PatternErrorKind::Empty => write!(f, "{p:?} is not a host pattern: it is empty"),
            PatternErrorKind::NonAscii => {
                write!(f, "{p:?} is not ASCII: write the punycode (xn--) form")
            }
            PatternErrorKind::IpLiteral => {
                write!(f, "{p:?} is an IP address, not a host name: use cidrs")
            }
            PatternErrorKind::BadChar(c) => write!(
                f,
                "{p:?} is not a host pattern: {c:?} cannot appear in a host name"
            ),
            PatternErrorKind::BadName(MalformedName::TooLong) => {
                write!(f, "{p:?} is not a host name: longer than 253 bytes")
            }
            PatternErrorKind::BadName(MalformedName::NumericName) => write!(
                f,
                "{p:?} is not a host name: resolvers read a name ending in a number as an IPv4 \
                 address (use cidrs)"
            ),
            PatternErrorKind::BadName(_) => write!(
                f,
                "{p:?} is not a host name: a label is empty or longer than 63 bytes"
            ),
            PatternErrorKind::Glob(msg) => write!(f, "{p:?} is not a valid glob: {msg}"),
        }
    }
}

impl std::error::Error for PatternError {}

/// Bytes with a meaning in glob syntax.
fn is_glob_meta(b: u8) -> bool {
    matches!(b, b'*' | b'?' | b'[' | b']' | b'{' | b'}' | b'\\')
}

/// Bytes a well-formed (lowercased) name consists of.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
}

impl HostPattern {
    /// Validates and normalises a pattern as written in `hosts`.
    pub fn parse(raw: &str) -> Result<HostPattern, PatternError> {
        let err = |kind| PatternError {
            pattern: raw.to_string(),
            kind,
        };
        if !raw.is_ascii() {
            return Err(err(PatternErrorKind::NonAscii));
        }
        let lower = raw.to_ascii_lowercase();
        let text = lower.strip_suffix('.').unwrap_or(&lower);
        if text.is_empty() {
            return Err(err(PatternErrorKind::Empty));
        }
        let bracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .is_some_and(|t| t.parse::<Ipv6Addr>().is_ok());
        if bracketed || text.parse::<IpAddr>().is_ok() {
            return Err(err(PatternErrorKind::IpLiteral));
        }
        let check_name = |name: &str| -> Result<(), PatternError> {
            if let Some(c) = name.chars().find(|&c| !is_name_byte(c as u8)) {
                return Err(err(PatternErrorKind::BadChar(c)));
            }
            // The one trailing dot allowed is already gone; classify_sni would drop another.
            if name.ends_with('.') {
                return Err(err(PatternErrorKind::BadName(MalformedName::BadLabel)));
            }
            match classify_sni(name.as_bytes()) {
                NameClass::Malformed(kind) => Err(err(PatternErrorKind::BadName(kind))),
                NameClass::Name(_) | NameClass::IpLiteral(_) => Ok(()),
            }
        };
        let kind = if text == "*" {
            PatternKind::Any
        } else if !text.bytes().any(is_glob_meta) {
            check_name(text)?;
            PatternKind::Exact
        } else if let Some(suffix) = text
            .strip_prefix("*.")
            .filter(|s| !s.bytes().any(is_glob_meta))
        {
            check_name(suffix)?;
            PatternKind::Suffix
        } else {
            glob::parse(text).map_err(|e| match e {
                GlobError::BadChar(c) => err(PatternErrorKind::BadChar(c)),
                other => err(PatternErrorKind::Glob(other.to_string())),
            })?;
            PatternKind::Glob
        };
        Ok(HostPattern {
            text: text.to_string(),
            kind,
        })
    }

    /// The normalised pattern (lowercase, no trailing dot).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Which kind of pattern this is.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for HostPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<HostPattern, PatternError> {
        HostPattern::parse(s)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<HostPattern, D::Error> {
        struct PatternVisitor;
        impl Visitor<'_> for PatternVisitor {
            type Value = HostPattern;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host pattern string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostPattern, E> {
                HostPattern::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PatternVisitor)
    }
}

/// Indexes patterns one rule at a time, straight into the compiled index's maps;
/// [`HostIndexBuilder::build`] only expands the globs.
///
/// A pattern's text becomes the key itself (copied into the slot and freed if it fits
/// [`super::key::INLINE`] bytes, else moved), and each key's
/// [`PortIndex`] takes its rules as they come: no per-key list of rule ids and no second map is
/// alive while compiling (a VM's linear memory keeps the compile's peak for good).
#[derive(Debug, Default)]
pub(crate) struct HostIndexBuilder {
    exact: FxHashMap<Key, PortIndex>,
    suffix: FxHashMap<Key, SuffixNode>,
    any: PortIndex,
    /// Each glob's text and its rules, expanded by `build`.
    globs: FxHashMap<Box<str>, PortIndex>,
    /// Every rule with at least one pattern.
    with_hosts: PortIndex,
}

impl HostIndexBuilder {
    /// A builder whose maps hold `exact` and `suffix` keys without growing (growing a map
    /// holds its old and new tables at once).
    pub(crate) fn with_capacity(exact: usize, suffix: usize) -> HostIndexBuilder {
        HostIndexBuilder {
            exact: FxHashMap::with_capacity_and_hasher(exact, Default::default()),
            suffix: FxHashMap::with_capacity_and_hasher(suffix, Default::default()),
            ..HostIndexBuilder::default()
        }
    }

    /// Indexes `pattern` for `rule`, whose ports are `ports` (empty: any port).
    pub(crate) fn add(&mut self, pattern: HostPattern, rule: RuleId, ports: &[PortRange]) {
        let kind = pattern.kind;
        let mut text = pattern.text;
        match kind {
            PatternKind::Exact => self
                .exact
                .entry(Key::new(text))
                .or_default()
                .add(rule, ports),
            PatternKind::Suffix => {
                text.drain(..2); // "*."
                self.suffix
                    .entry(Key::new(text))
                    .or_default()
                    .wildcard
                    .add(rule, ports);
            }
            PatternKind::Any => self.any.add(rule, ports),
            PatternKind::Glob => self
                .globs
                .entry(text.into_boxed_str())
                .or_default()
                .add(rule, ports),
        }
        self.with_hosts.add(rule, ports);
    }

    /// Compiles the index.
    pub(crate) fn build(self) -> Result<HostIndex, GlobError> {
        let mut exact = self.exact;
        let mut suffix = self.suffix;
        let mut keyed: FxHashMap<String, Vec<GlobEntry>> = FxHashMap::default();
        let mut rest: Vec<GlobEntry> = Vec::new();
        // Sorted, so the order globs are tried in is deterministic.
        let mut globs: Vec<(Box<str>, PortIndex)> = self.globs.into_iter().collect();
        globs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (pattern, rules) in globs {
            for tokens in glob::parse(&pattern)? {
                if let Some(name) = glob::literal(&tokens) {
                    exact.entry(Key::new(name)).or_default().overlay(&rules);
                    continue;
                }
                let entry = GlobEntry {
                    rules: rules.clone(),
                    tokens: tokens.into_boxed_slice(),
                };
                match glob::domain_key(&entry.tokens) {
                    Some(key) => keyed.entry(key).or_default().push(entry),
                    None => rest.push(entry),
                }
            }
        }
        for (key, entries) in keyed {
            suffix.entry(Key::new(key)).or_default().globs = entries.into_boxed_slice();
        }
        let mut index = HostIndex {
            exact: FxHashMap::default(),
            suffix,
            any: self.any,
            globs: rest.into_boxed_slice(),
            with_hosts: self.with_hosts,
        };
        index.fold_suffixes();
        // Every exact name answers for the suffix patterns that match it, so a lookup that
        // finds the name probes no suffix.
        for (name, rules) in exact.iter_mut() {
            index.each_match(name.as_bytes(), |other| rules.overlay(other));
        }
        index.exact = exact;
        Ok(index)
    }
}

/// One expanded glob alternative and the rules that have it.
#[derive(Debug, Clone)]
struct GlobEntry {
    tokens: Box<[Token]>,
    rules: PortIndex,
}

/// What hangs off a dot-suffix `s`: the rules of `*.s`, and the globs whose literal tail
/// guarantees the suffix `s`.
#[derive(Debug, Clone, Default)]
struct SuffixNode {
    /// The rules of `*.s` and of every `*.t` with `t` a shorter dot-suffix of `s` (a name with a
    /// label before `.s` has one before `.t` too): the longest suffix found answers for them.
    wildcard: PortIndex,
    globs: Box<[GlobEntry]>,
    /// Whether a shorter dot-suffix's node has globs, which must then still be tried.
    shorter_globs: bool,
}

/// The compiled host-pattern index of a policy.
#[derive(Debug, Clone)]
pub(crate) struct HostIndex {
    exact: FxHashMap<Key, PortIndex>,
    /// Keyed by a dot-suffix of names (`github.com` for `*.github.com`).
    suffix: FxHashMap<Key, SuffixNode>,
    any: PortIndex,
    /// Glob alternatives without a literal domain tail: tried on every name.
    globs: Box<[GlobEntry]>,
    /// Every indexed rule that has host patterns, for [`HostIndex::any_rule_on`].
    with_hosts: PortIndex,
}

/// The positions of the dots in a name, in order, found eight bytes at a time.
struct Dots<'a> {
    chunks: std::slice::Chunks<'a, u8>,
    /// One past the end of the chunk `mask` is from.
    base: usize,
    /// Bit `8 * i + 7` is set while byte `i` of that chunk is a dot not yet returned.
    mask: u64,
}

impl<'a> Dots<'a> {
    fn new(name: &'a [u8]) -> Dots<'a> {
        Dots {
            chunks: name.chunks(8),
            base: 0,
            mask: 0,
        }
    }
}

impl Iterator for Dots<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.mask = dot_mask(self.chunks.next()?);
            // One past the chunk's end.
            self.base += 8;
        }
        let bit = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base - 8 + bit / 8)
    }
}

/// Bit `8 * i + 7` set exactly where byte `i` of `chunk` (at most 8 bytes) is a dot.
fn dot_mask(chunk: &[u8]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let word = <[u8; 8]>::try_from(chunk).unwrap_or_else(|_| {
        // The last, shorter chunk, padded with zeros (not dots).
        let mut word = [0u8; 8];
        for (to, from) in word.iter_mut().zip(chunk) {
            *to = *from;
        }
        word
    });
    // Bytes equal to '.' become zero; a zero byte is the only one whose low seven bits plus
    // 0x7f do not carry into bit 7 and whose bit 7 is clear (no borrow between bytes).
    let x = u64::from_le_bytes(word) ^ 0x2e2e_2e2e_2e2e_2e2e;
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The lowest of `best` and the rules of the `globs` that match `name` on `port`.
fn best_glob(
    globs: &[GlobEntry],
    name: &str,
    port: u16,
    mut best: Option<RuleId>,
) -> Option<RuleId> {
    for entry in globs {
        if let Some(id) = entry.rules.get(port) {
            if best.is_none_or(|b| id < b) && glob::matches(&entry.tokens, name.as_bytes()) {
                best = Some(id);
            }
        }
    }
    best
}

impl HostIndex {
    /// The lowest rule id with a host pattern matching `name` and ports containing `port`.
    ///
    /// `name` is expected normalised ([`super::name`]); the lookup is nonetheless literal for any
    /// string (exact equality, `ends_with(".suffix")` with at least one byte before the dot).
    pub(crate) fn lookup(&self, name: &str, port: u16) -> Option<RuleId> {
        let mut best = None;
        let bytes = name.as_bytes();
        if let Some(rules) = self.exact.get(bytes) {
            // Folded at build time: it holds every suffix pattern that matches the name.
            best = rules.get(port);
        } else if !self.suffix.is_empty() {
            // Longest dot-suffix first.
            for at in Dots::new(bytes) {
                let Some(node) = bytes.get(at + 1..).and_then(|key| self.suffix.get(key)) else {
                    continue;
                };
                if !node.globs.is_empty() {
                    best = best_glob(&node.globs, name, port, best);
                }
                // `*.s` needs a label before `.s`; a glob checks the whole name itself.
                if at > 0 {
                    best = min_rule(best, node.wildcard.get(port));
                    if !node.shorter_globs {
                        break;
                    }
                }
            }
        }
        best = min_rule(best, self.any.get(port));
        if self.globs.is_empty() {
            return best;
        }
        best_glob(&self.globs, name, port, best)
    }

    /// Calls `f` with the rules of every pattern keyed by a dot-suffix of `name` that matches it
    /// (on some port): the `*.s` patterns and the keyed globs. Unlike `lookup` it does not rely
    /// on the folded wildcards, and it tries every suffix. (`*` and the other globs are not
    /// folded into exact names: `lookup` tries them after any hit, and folding `*` with its own
    /// ports would give every name a list of its own.)
    fn each_match(&self, name: &[u8], mut f: impl FnMut(&PortIndex)) {
        for at in Dots::new(name) {
            let Some(node) = name.get(at + 1..).and_then(|key| self.suffix.get(key)) else {
                continue;
            };
            if at > 0 {
                f(&node.wildcard);
            }
            for entry in node.globs.iter() {
                if glob::matches(&entry.tokens, name) {
                    f(&entry.rules);
                }
            }
        }
    }

    /// Folds into each suffix node the wildcards of its shorter dot-suffixes and notes whether
    /// any of those has globs. The wildcards folded in are the unfolded
    /// ones (each node is folded from the others' originals).
    fn fold_suffixes(&mut self) {
        let mut updates: Vec<(Key, PortIndex, bool)> = Vec::new();
        for (key, node) in &self.suffix {
            let mut wildcard = node.wildcard.clone();
            let mut shorter_globs = false;
            let mut found = false;
            let key_bytes = key.as_bytes();
            for at in Dots::new(key_bytes) {
                if let Some(shorter) = key_bytes.get(at + 1..).and_then(|k| self.suffix.get(k)) {
                    found = true;
                    wildcard.overlay(&shorter.wildcard);
                    shorter_globs |= !shorter.globs.is_empty();
                }
            }
            if found {
                updates.push((key.clone(), wildcard, shorter_globs));
            }
        }
        for (key, wildcard, shorter_globs) in updates {
            if let Some(node) = self.suffix.get_mut(key.as_bytes()) {
                node.wildcard = wildcard;
                node.shorter_globs = shorter_globs;
            }
        }
    }

    /// The lowest rule id that has host patterns and whose ports contain `port`: the first rule a
    /// name could bring into play on this port.
    pub(crate) fn any_rule_on(&self, port: u16) -> Option<RuleId> {
        self.with_hosts.get(port)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn kinds_and_normalisation() {
        let cases = [
            ("github.com", "github.com", PatternKind::Exact),
            ("GitHub.COM.", "github.com", PatternKind::Exact),
            ("*.GitHub.com", "*.github.com", PatternKind::Suffix),
            ("*", "*", PatternKind::Any),
            ("*.", "*", PatternKind::Any),
            ("api-*.example.com", "api-*.example.com", PatternKind::Glob),
            ("*.*.example.com", "*.*.example.com", PatternKind::Glob),
            ("?.x", "?.x", PatternKind::Glob),
            ("[A-C].x", "[a-c].x", PatternKind::Glob),
            ("{a,b}.x", "{a,b}.x", PatternKind::Glob),
            ("under_score.x", "under_score.x", PatternKind::Exact),
            ("1.2.3.example", "1.2.3.example", PatternKind::Exact),
        ];
        for (raw, text, kind) in cases {
            let p = HostPattern::parse(raw).unwrap();
            assert_eq!((p.as_str(), p.kind()), (text, kind), "{raw}");
        }
    }

    #[test]
    fn errors() {
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        let cases = [
            ("", "\"\" is not a host pattern: it is empty"),
            (".", "\".\" is not a host pattern: it is empty"),
            (
                "bücher.de",
                "\"bücher.de\" is not ASCII: write the punycode (xn--) form",
            ),
            (
                "10.0.0.1",
                "\"10.0.0.1\" is an IP address, not a host name: use cidrs",
            ),
            (
                "::1",
                "\"::1\" is an IP address, not a host name: use cidrs",
            ),
            (
                "127.1",
                "\"127.1\" is not a host name: resolvers read a name ending in a number as an \
                 IPv4 address (use cidrs)",
            ),
            (
                "*.0x7f",
                "\"*.0x7f\" is not a host name: resolvers read a name ending in a number as an \
                 IPv4 address (use cidrs)",
            ),
            (
                "[::1]",
                "\"[::1]\" is an IP address, not a host name: use cidrs",
            ),
            (
                "https://github.com",
                "\"https://github.com\" is not a host pattern: ':' cannot appear in a host name",
            ),
            (
                "github.com:443",
                "\"github.com:443\" is not a host pattern: ':' cannot appear in a host name",
            ),
            (
                "https://*.github.com",
                "\"https://*.github.com\" is not a host pattern: ':' cannot appear in a host name",
            ),
            (
                "a b.com",
                "\"a b.com\" is not a host pattern: ' ' cannot appear in a host name",
            ),
            (
                "a..b",
                "\"a..b\" is not a host name: a label is empty or longer than 63 bytes",
            ),
            (
                "*..b",
                "\"*..b\" is not a host name: a label is empty or longer than 63 bytes",
            ),
            (
                "api-[a.com",
                "\"api-[a.com\" is not a valid glob: unclosed character class; missing ']'",
            ),
            (
                "[z-a].com",
                "\"[z-a].com\" is not a valid glob: invalid range; 'z' > 'a'",
            ),
            // Found by the config_structured fuzz target: one trailing dot is dropped, and the
            // name check dropped a second, so these were accepted as patterns ending in a dot,
            // which no (normalised) name equals: a deny rule that silently never matched.
            (
                "evil.example..",
                "\"evil.example..\" is not a host name: a label is empty or longer than 63 bytes",
            ),
            (
                "*.Evil.Example..",
                "\"*.Evil.Example..\" is not a host name: a label is empty or longer than 63 bytes",
            ),
            (
                "10.0.0.1..",
                "\"10.0.0.1..\" is not a host name: a label is empty or longer than 63 bytes",
            ),
            // The same for globs: an alternative with an empty label matches no name.
            (
                "api-*.example..",
                "\"api-*.example..\" is not a valid glob: an empty label (\"..\", or a \".\" at \
                 either end) that no host name has",
            ),
            (
                "a..*.example",
                "\"a..*.example\" is not a valid glob: an empty label (\"..\", or a \".\" at \
                 either end) that no host name has",
            ),
            (
                ".api-*.example",
                "\".api-*.example\" is not a valid glob: an empty label (\"..\", or a \".\" at \
                 either end) that no host name has",
            ),
            (
                "{a.,b}.example",
                "\"{a.,b}.example\" is not a valid glob: an empty label (\"..\", or a \".\" at \
                 either end) that no host name has",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                HostPattern::parse(raw).unwrap_err().to_string(),
                want,
                "{raw}"
            );
        }
        assert!(HostPattern::parse(&long)
            .unwrap_err()
            .to_string()
            .ends_with("is not a host name: longer than 253 bytes"));
    }

    #[test]
    fn index_lookup() {
        let table: Vec<Vec<PortRange>> = vec![
            vec![PortRange { lo: 443, hi: 443 }],
            vec![],
            vec![],
            vec![],
            vec![],
        ];
        let patterns: Vec<(HostPattern, RuleId)> = [
            ("github.com", 0),
            ("*.github.com", 1),
            ("api-*.example.com", 2),
            ("*", 4),
            ("*.com", 3),
        ]
        .into_iter()
        .map(|(p, id)| (HostPattern::parse(p).unwrap(), id))
        .collect();
        let mut b = HostIndexBuilder::default();
        for (p, id) in patterns {
            b.add(p, id, &table[id as usize]);
        }
        let idx = b.build().unwrap();
        assert_eq!(idx.lookup("github.com", 443), Some(0));
        assert_eq!(idx.lookup("github.com", 80), Some(3));
        assert_eq!(idx.lookup("a.b.github.com", 80), Some(1));
        assert_eq!(idx.lookup("api-v1.example.com", 80), Some(2));
        assert_eq!(idx.lookup("example.org", 80), Some(4));
        assert_eq!(idx.lookup(".com", 80), Some(4));
        assert_eq!(idx.any_rule_on(443), Some(0));
        assert_eq!(idx.any_rule_on(80), Some(1));
    }

    /// An index of `(pattern, rule, ports)`.
    fn index(patterns: &[(&str, RuleId, &[PortRange])]) -> HostIndex {
        let mut b = HostIndexBuilder::default();
        for &(p, id, ports) in patterns {
            b.add(HostPattern::parse(p).unwrap(), id, ports);
        }
        b.build().unwrap()
    }

    const P80: &[PortRange] = &[PortRange { lo: 80, hi: 80 }];

    /// The lookup stops at the longest dot-suffix it finds (and at an exact name): what the
    /// shorter ones and the other patterns would add must already be in what it finds.
    #[test]
    fn the_first_key_found_answers_for_the_rest() {
        // A shorter suffix with a lower rule, on some ports.
        let idx = index(&[("*.com", 0, P80), ("*.example.com", 1, &[])]);
        assert_eq!(idx.lookup("a.example.com", 80), Some(0));
        assert_eq!(idx.lookup("a.example.com", 443), Some(1));
        assert_eq!(idx.lookup("a.b.example.com", 80), Some(0));
        // A glob keyed by a shorter suffix (`a*.com` is tried on names under `com`).
        let idx = index(&[("a*.com", 0, &[]), ("*.example.com", 1, &[])]);
        assert_eq!(idx.lookup("ab.example.com", 443), Some(0));
        assert_eq!(idx.lookup("b.example.com", 443), Some(1));
        // An exact name answers for suffixes, keyed and other globs, and `*`.
        let idx = index(&[
            ("*.example.com", 0, P80),
            ("api-*.example.com", 1, &[PortRange { lo: 81, hi: 81 }]),
            ("*i.example.com", 2, &[PortRange { lo: 82, hi: 82 }]),
            ("*", 3, &[PortRange { lo: 83, hi: 83 }]),
            ("api-v1.example.com", 4, &[]),
        ]);
        for (port, want) in [(80, 0), (81, 1), (82, 4), (83, 3), (443, 4)] {
            assert_eq!(idx.lookup("api-v1.example.com", port), Some(want), "{port}");
        }
        assert_eq!(idx.lookup("api-vi.example.com", 82), Some(2));
        // No label before the dot: `*.example.com` does not match, `*.com` does.
        let idx = index(&[("*.com", 1, &[]), ("*.example.com", 0, &[])]);
        assert_eq!(idx.lookup(".example.com", 443), Some(1));
        assert_eq!(idx.lookup("a.example.com", 443), Some(0));
    }

    #[test]
    fn dots_eight_bytes_at_a_time() {
        let mut names: Vec<Vec<u8>> = vec![Vec::new(), b".".to_vec(), b"........".to_vec()];
        // Every byte value next to dots, at every offset of a word.
        for len in 1..=20 {
            for at in 0..len {
                for b in [0u8, b'-', b'.' - 1, b'.' + 1, b'.' ^ 0x80, 0x80, 0xff, b'n'] {
                    let mut n = vec![b; len];
                    n[at] = b'.';
                    names.push(n);
                }
            }
        }
        for n in names {
            let want: Vec<usize> = (0..n.len()).filter(|&i| n[i] == b'.').collect();
            assert_eq!(Dots::new(&n).collect::<Vec<_>>(), want, "{n:?}");
        }
    }
}
