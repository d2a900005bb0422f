//! The keys of the host index's maps: a name or a dot-suffix, its bytes inline when it is short.
//!
//! A map keyed by `Box<str>` keeps each key's bytes in an allocation of its own, so a lookup that
//! finds a key reads three places far apart: the map's control bytes, its slot, and the key's
//! bytes (to compare them). With 100,000 rules those are three cache misses, and often three
//! TLB misses. A [`Key`] of up to [`INLINE`] bytes (most host names) lives in the slot itself.
//! It is compared byte for byte like the `Box<str>` was: a hash alone never decides a match.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The longest key kept inline: a `Key` is then 24 bytes on every target (a `Box<str>` is 16 on
/// 64-bit targets, 8 on wasm32, plus its allocation).
pub(crate) const INLINE: usize = 22;

/// A host-map key. Hashes and compares as its bytes, so a map of `Key`s is looked up with a
/// `&[u8]` (`map.get(name.as_bytes())`).
#[derive(Clone)]
pub(crate) enum Key {
    /// `len <= INLINE`; the bytes past `len` are zero.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// Longer than [`INLINE`].
    Heap(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Key {
    /// The key for `text`: copied inline if it is short (the `String` is then freed), else
    /// moved.
    pub(crate) fn new(text: String) -> Key {
        let mut bytes = [0u8; INLINE];
        match (bytes.get_mut(..text.len()), u8::try_from(text.len())) {
            (Some(inline), Ok(len)) => {
                inline.copy_from_slice(text.as_bytes());
                Key::Inline { len, bytes }
            }
            _ => Key::Heap(text.into_bytes().into_boxed_slice()),
        }
    }

    /// The key's bytes.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Key::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

// `Borrow` requires these to agree with `[u8]`'s.
impl Hash for Key {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Key {
    #[inline]
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn inline_up_to_its_length_then_on_the_heap() {
        for len in [0, 1, INLINE - 1, INLINE, INLINE + 1, 253] {
            let text: String = "abcdefghij.".chars().cycle().take(len).collect();
            let key = Key::new(text.clone());
            assert_eq!(key.as_bytes(), text.as_bytes(), "{len}");
            assert_eq!(matches!(key, Key::Inline { .. }), len <= INLINE, "{len}");
        }
    }

    /// Keys are equal exactly when their bytes are, whether inline or not; `Debug` shows the text.
    #[test]
    fn equal_exactly_when_the_bytes_are() {
        let long = "a".repeat(INLINE + 1);
        let texts = [
            "",
            "a",
            "b",
            "ab",
            "example.com",
            "example.con",
            &long[1..],
            &long,
        ];
        for a in texts {
            for b in texts {
                assert_eq!(
                    Key::new(a.into()) == Key::new(b.into()),
                    a == b,
                    "{a:?} {b:?}"
                );
            }
        }
        assert_eq!(
            format!("{:?}", Key::new("example.com".into())),
            "\"example.com\""
        );
        assert_eq!(format!("{:?}", Key::new(long.clone())), format!("{long:?}"));
    }

    /// A map of keys finds exactly the keys it holds, looked up by bytes: a key and a longer or
    /// shorter one sharing its bytes, or one differing in its last byte, are different keys.
    #[test]
    fn a_map_of_keys_is_looked_up_by_bytes() {
        let hasher = rustc_hash::FxBuildHasher;
        let names = [
            "a",
            "example.com",
            "aaaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaa",
        ];
        let mut map = rustc_hash::FxHashMap::default();
        for (i, n) in names.iter().enumerate() {
            map.insert(Key::new(n.to_string()), i);
            assert_eq!(
                hasher.hash_one(Key::new(n.to_string())),
                hasher.hash_one(n.as_bytes()),
                "{n}"
            );
        }
        for (i, n) in names.iter().enumerate() {
            assert_eq!(map.get(n.as_bytes()), Some(&i), "{n}");
        }
        for absent in [
            "",
            "b",
            "example.co",
            "example.con",
            "aaaaaaaaaaaaaaaaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(map.get(absent.as_bytes()), None, "{absent}");
        }
    }
}
