//! A small glob engine for host patterns: `*` (any run of bytes, dots included), `?` (one byte),
//! `[set]` / `[!set]` / `[^set]` with ranges, and `{a,b}` alternatives (nestable). `**` is `*`.
//!
//! It follows globset's syntax for that subset (globset with `literal_separator(false)`; host
//! patterns contain no `/` and no `\`), and [`super::reference`] uses globset itself, so the
//! property tests hold the two engines against each other. globset is not used on the compiled
//! path because its regex engine would more than triple the size of the `.wasm` module.
//!
//! Stricter than globset, so that a typo fails loudly: outside a class only host-name bytes are
//! literals (`,` `!` `^` `]` are errors there), an alternative may not be empty, and `}` must
//! close a `{`.

use std::fmt;

/// One token of an expanded alternative; each matches one byte, except [`Token::Star`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// This byte.
    Literal(u8),
    /// Any one byte (`?`).
    Any,
    /// Any run of bytes, possibly empty (`*`).
    Star,
    /// One byte in (or, negated, not in) the inclusive ranges (`[a-c_]`).
    Class {
        negated: bool,
        ranges: Box<[(u8, u8)]>,
    },
}

/// Why a glob does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobError {
    /// A byte that cannot appear at that place in a host glob.
    BadChar(char),
    /// `[` without `]`.
    UnclosedClass,
    /// A range whose start is after its end.
    InvalidRange(char, char),
    /// `{` without `}`.
    UnclosedAlternates,
    /// `}` without `{`.
    UnopenedAlternates,
    /// `{a,}` or `{,a}`.
    EmptyAlternative,
    /// More than [`MAX_EXPANSIONS`] alternatives once `{...}` groups are multiplied out.
    TooManyAlternatives,
    /// `{...}` groups nested more than [`MAX_NESTING`] deep.
    TooDeep,
    /// An alternative with an empty label (a literal `..`, or a literal `.` first or last),
    /// which no well-formed name has: it could never match.
    EmptyLabel,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::BadChar(c) => write!(f, "{c:?} cannot appear there in a host pattern"),
            GlobError::UnclosedClass => f.write_str("unclosed character class; missing ']'"),
            GlobError::InvalidRange(a, b) => write!(f, "invalid range; '{a}' > '{b}'"),
            GlobError::UnclosedAlternates => f.write_str("unclosed alternate group; missing '}'"),
            GlobError::UnopenedAlternates => {
                f.write_str("unopened alternate group; missing '{' (or remove the '}')")
            }
            GlobError::EmptyAlternative => f.write_str(
                "empty alternative in '{...}': write each alternative in full, e.g. \
                 {example.com,www.example.com}",
            ),
            GlobError::TooManyAlternatives => write!(
                f,
                "more than {MAX_EXPANSIONS} alternatives once '{{...}}' groups are expanded"
            ),
            GlobError::TooDeep => write!(f, "'{{...}}' groups nested more than {MAX_NESTING} deep"),
            GlobError::EmptyLabel => f.write_str(
                "an empty label (\"..\", or a \".\" at either end) that no host name has",
            ),
        }
    }
}

/// Most alternatives a pattern may expand to.
pub(crate) const MAX_EXPANSIONS: usize = 256;

/// Deepest `{...}` nesting: the parser recurses once per level, and the Envoy module's stack is
/// small (build.rs), so the depth is bounded here rather than by the pattern's length.
pub(crate) const MAX_NESTING: usize = 8;

/// Bytes a literal may be: what a lowercased well-formed host name is made of.
fn is_literal(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
}

/// Parses a (lowercased) glob into its alternatives, `{...}` groups multiplied out.
pub(crate) fn parse(glob: &str) -> Result<Vec<Vec<Token>>, GlobError> {
    let mut parser = Parser {
        bytes: glob.as_bytes(),
        at: 0,
    };
    let (alts, end) = parser.sequence(0)?;
    match end {
        End::Eof if alts.iter().any(|alt| has_empty_label(alt)) => Err(GlobError::EmptyLabel),
        End::Eof => Ok(alts),
        End::Comma => Err(GlobError::BadChar(',')),
        End::Close => Err(GlobError::UnopenedAlternates),
    }
}

/// Whether an alternative has a literal empty label: `.` first, `.` last, or `..`. Names are
/// normalised without a trailing dot and never have an empty label, so such an alternative
/// matches nothing (a deny rule that would silently never apply).
fn has_empty_label(tokens: &[Token]) -> bool {
    let dot = |t: Option<&Token>| t == Some(&Token::Literal(b'.'));
    dot(tokens.first())
        || dot(tokens.last())
        || tokens.windows(2).any(|w| dot(w.first()) && dot(w.get(1)))
}

/// What stopped a sequence.
enum End {
    Eof,
    Comma,
    Close,
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn bump(&mut self) -> Option<u8> {
        let b = self.bytes.get(self.at).copied();
        if b.is_some() {
            self.at += 1;
        }
        b
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Parses items up to the end, or (inside `depth` groups) up to `,` or `}`.
    fn sequence(&mut self, depth: usize) -> Result<(Vec<Vec<Token>>, End), GlobError> {
        let mut alts: Vec<Vec<Token>> = vec![Vec::new()];
        let push = |alts: &mut Vec<Vec<Token>>, tok: Token| {
            for alt in alts.iter_mut() {
                if !(tok == Token::Star && alt.last() == Some(&Token::Star)) {
                    alt.push(tok.clone());
                }
            }
        };
        loop {
            let Some(b) = self.bump() else {
                return Ok((alts, End::Eof));
            };
            match b {
                b'*' => push(&mut alts, Token::Star),
                b'?' => push(&mut alts, Token::Any),
                b'[' => {
                    let class = self.class()?;
                    push(&mut alts, class);
                }
                b'{' if depth >= MAX_NESTING => return Err(GlobError::TooDeep),
                b'{' => {
                    let group = self.group(depth + 1)?;
                    let mut product = Vec::with_capacity(alts.len() * group.len());
                    for head in &alts {
                        for tail in &group {
                            let mut alt = head.clone();
                            for tok in tail {
                                if !(*tok == Token::Star && alt.last() == Some(&Token::Star)) {
                                    alt.push(tok.clone());
                                }
                            }
                            product.push(alt);
                        }
                    }
                    if product.len() > MAX_EXPANSIONS {
                        return Err(GlobError::TooManyAlternatives);
                    }
                    alts = product;
                }
                b',' if depth > 0 => return Ok((alts, End::Comma)),
                b'}' if depth > 0 => return Ok((alts, End::Close)),
                b'}' => return Err(GlobError::UnopenedAlternates),
                b if is_literal(b) => push(&mut alts, Token::Literal(b)),
                b => return Err(GlobError::BadChar(char::from(b))),
            }
        }
    }

    /// After `{`: alternatives up to the matching `}`.
    fn group(&mut self, depth: usize) -> Result<Vec<Vec<Token>>, GlobError> {
        let mut all = Vec::new();
        loop {
            let (alts, end) = self.sequence(depth)?;
            if alts.iter().any(Vec::is_empty) {
                return Err(GlobError::EmptyAlternative);
            }
            all.extend(alts);
            if all.len() > MAX_EXPANSIONS {
                return Err(GlobError::TooManyAlternatives);
            }
            match end {
                End::Comma => continue,
                End::Close => return Ok(all),
                End::Eof => return Err(GlobError::UnclosedAlternates),
            }
        }
    }

    /// After `[`: globset's class rules (a leading `]` or `-` and a trailing `-` are literal).
    fn class(&mut self) -> Result<Token, GlobError> {
        let negated = matches!(self.peek(), Some(b'!' | b'^'));
        if negated {
            self.bump();
        }
        let mut ranges: Vec<(u8, u8)> = Vec::new();
        let mut first = true;
        let mut in_range = false;
        loop {
            let b = self.bump().ok_or(GlobError::UnclosedClass)?;
            match (b, ranges.last_mut()) {
                (b']', _) if !first => break,
                (b'-', Some(last)) if !first && in_range => {
                    extend(last, b'-')?;
                    in_range = false;
                }
                (b'-', Some(_)) if !first => in_range = true,
                (b, Some(last)) if in_range => {
                    extend(last, b)?;
                    in_range = false;
                }
                (b, _) => ranges.push((b, b)),
            }
            first = false;
        }
        if in_range {
            ranges.push((b'-', b'-'));
        }
        Ok(Token::Class {
            negated,
            ranges: ranges.into_boxed_slice(),
        })
    }
}

fn extend(range: &mut (u8, u8), end: u8) -> Result<(), GlobError> {
    if end < range.0 {
        return Err(GlobError::InvalidRange(
            char::from(range.0),
            char::from(end),
        ));
    }
    range.1 = end;
    Ok(())
}

impl Token {
    fn matches_byte(&self, b: u8) -> bool {
        match self {
            Token::Literal(l) => *l == b,
            Token::Any => true,
            Token::Star => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi) != *negated
            }
        }
    }
}

/// Whether one expanded alternative matches all of `name`.
///
/// Every token but `*` consumes exactly one byte, so backtracking to the last `*` is enough:
/// `O(len(name) * len(tokens))` at worst.
pub(crate) fn matches(tokens: &[Token], name: &[u8]) -> bool {
    let (mut t, mut n) = (0usize, 0usize);
    // Position of the last `*` seen, and where in `name` it is assumed to end.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&b) = name.get(n) {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(tok) if tok.matches_byte(b) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, sn)) => {
                t = st + 1;
                n = sn + 1;
                star = Some((st, sn + 1));
            }
            None => return false,
        }
    }
    tokens
        .get(t..)
        .is_some_and(|rest| rest.iter().all(|tok| *tok == Token::Star))
}

/// The literal tail of an alternative after its last wildcard, if it holds a dot: the part after
/// that tail's first dot is a whole dot-suffix of every name the alternative matches
/// (`api-*.example.com` → `example.com`). `None` when there is no such suffix.
pub(crate) fn domain_key(tokens: &[Token]) -> Option<String> {
    let start = tokens
        .iter()
        .rposition(|t| !matches!(t, Token::Literal(_)))
        .map_or(0, |i| i + 1);
    let tail: Vec<u8> = tokens
        .get(start..)?
        .iter()
        .filter_map(|t| match t {
            Token::Literal(b) => Some(*b),
            _ => None,
        })
        .collect();
    let dot = tail.iter().position(|&b| b == b'.')?;
    let key = tail.get(dot + 1..)?;
    if key.is_empty() {
        return None;
    }
    String::from_utf8(key.to_vec()).ok()
}

/// The alternative as a plain name, when it has no wildcard.
pub(crate) fn literal(tokens: &[Token]) -> Option<String> {
    let bytes: Option<Vec<u8>> = tokens
        .iter()
        .map(|t| match t {
            Token::Literal(b) => Some(*b),
            _ => None,
        })
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn is_match(glob: &str, name: &str) -> bool {
        parse(glob)
            .unwrap()
            .iter()
            .any(|alt| matches(alt, name.as_bytes()))
    }

    #[test]
    fn matching() {
        let cases = [
            ("a*", "a", true),
            ("a*", "abc.d", true),
            ("a*", "ba", false),
            ("*b", "a.b", true),
            ("*b", "", false),
            ("*", "", true),
            ("**", "x.y", true),
            ("?.b", "a.b", true),
            ("?.b", ".b", false),
            ("?.b", "ab.b", false),
            ("a*b*c", "abxbc", true),
            ("a*b*c", "acb", false),
            ("*.*", "a.b", true),
            ("*.*", "ab", false),
            ("[ab].c", "b.c", true),
            ("[ab].c", "c.c", false),
            ("[!ab].c", "c.c", true),
            ("[^ab].c", "a.c", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[-a]x", "-x", true),
            ("[a-]x", "-x", true),
            ("[]a]x", "]x", true),
            ("{a,b}.c", "b.c", true),
            ("{a,b}.c", "ab.c", false),
            ("{a*,b}.c", "axy.c", true),
            ("x{a,{b,c}d}", "xcd", true),
            ("x{a,{b,c}d}", "xc", false),
            ("api-*.example.com", "api-.example.com", true),
            ("api-*.example.com", "api-a.b.example.com", true),
            ("api-*.example.com", "api.example.com", false),
        ];
        for (glob, name, want) in cases {
            assert_eq!(is_match(glob, name), want, "{glob} {name}");
        }
    }

    #[test]
    fn errors() {
        let cases = [
            ("[a", GlobError::UnclosedClass),
            ("[z-a]", GlobError::InvalidRange('z', 'a')),
            ("{a,b", GlobError::UnclosedAlternates),
            ("a}", GlobError::UnopenedAlternates),
            ("{a,}", GlobError::EmptyAlternative),
            ("{,a}", GlobError::EmptyAlternative),
            ("{}", GlobError::EmptyAlternative),
            ("a,b*", GlobError::BadChar(',')),
            ("a!*", GlobError::BadChar('!')),
            ("a/*", GlobError::BadChar('/')),
            ("a\\*", GlobError::BadChar('\\')),
            ("A*", GlobError::BadChar('A')),
            (
                "{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}",
                GlobError::TooManyAlternatives,
            ),
            ("a..*", GlobError::EmptyLabel),
            (".a*", GlobError::EmptyLabel),
            ("*a.", GlobError::EmptyLabel),
            ("{a.,b}.c", GlobError::EmptyLabel),
            ("{.a,b}*", GlobError::EmptyLabel),
            ("x{a,b.}", GlobError::EmptyLabel),
        ];
        for (glob, want) in cases {
            assert_eq!(parse(glob), Err(want), "{glob}");
        }
        assert_eq!(
            parse("{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}{a,b}")
                .unwrap()
                .len(),
            256
        );
        // Nesting is bounded (each level is a recursion): 8 levels parse, 9 do not, and a
        // pattern nested far deeper is an error, not a stack overflow.
        let nested = |n: usize| format!("{}a{}*", "{".repeat(n), "}".repeat(n));
        assert_eq!(parse(&nested(MAX_NESTING)).unwrap().len(), 1);
        assert_eq!(parse(&nested(MAX_NESTING + 1)), Err(GlobError::TooDeep));
        assert_eq!(parse(&nested(1_000_000)), Err(GlobError::TooDeep));
        // Dots that only some names have are fine: a class, `?`, `*` and alternatives that
        // meet a dot from the other side.
        for glob in ["a[.]*", "a.?.b", "*.*", "{a.,b}c", "x{.a,b}", "a.{b,c}.d"] {
            assert!(parse(glob).is_ok(), "{glob}");
        }
    }

    #[test]
    fn keys() {
        let key = |g: &str| domain_key(&parse(g).unwrap()[0]);
        assert_eq!(key("api-*.example.com").as_deref(), Some("example.com"));
        assert_eq!(key("*x-api.example.com").as_deref(), Some("example.com"));
        assert_eq!(key("a.*.c").as_deref(), Some("c"));
        assert_eq!(key("*.b*"), None);
        assert_eq!(key("*b"), None);
        assert_eq!(key("a.[bc]"), None);
        assert_eq!(
            literal(&parse("{a,b}.c").unwrap()[1]).as_deref(),
            Some("b.c")
        );
        assert_eq!(literal(&parse("a*").unwrap()[0]), None);
    }
}
