//! A short hash of a policy's JSON, so that a decision log line, the `policy loaded` line and the
//! `egress_guard_policy_info` gauge can be tied to the file that made them (`egress-guard check`
//! prints the same hash for a file).
//!
//! The hash is of the JSON *tree*, not of its bytes: whitespace and the order of an object's keys
//! do not change it (an Istio `pluginConfig` written in YAML reaches the filter as JSON with keys
//! in another order), but any value does. Each value is hashed on its own and an object hashes
//! its `(key, value hash)` pairs sorted by key, so it is computed while parsing, holding only one
//! small list per open object: no copy of the document, which matters in a Wasm VM whose memory
//! never shrinks.
//!
//! The hash function is 64-bit FNV-1a (the `fnv` crate): the fingerprint names a policy an
//! operator wrote, it is not a security boundary, so a cryptographic hash would add code to the
//! module for nothing. Twelve hex digits (48 bits) are shown.

use std::fmt;
use std::hash::Hasher;

use fnv::FnvHasher;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The fingerprint of a policy: the first 12 hex digits of its JSON tree's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    /// The fingerprint of a JSON document, or `None` if it is not well-formed JSON (then it is no
    /// policy either).
    pub fn of(json: &[u8]) -> Option<Fingerprint> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let Digest(hash) = Digest::deserialize(&mut de).ok()?;
        de.end().ok()?;
        let hex = format!("{hash:016x}");
        let mut out = [b'0'; 12];
        out.copy_from_slice(hex.as_bytes().get(..12)?);
        Some(Fingerprint(out))
    }

    /// The 12 hex digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hash of one JSON value.
struct Digest(u64);

fn hash(tag: u8, parts: &[&[u8]]) -> Digest {
    let mut h = FnvHasher::default();
    h.write(&[tag]);
    for part in parts {
        // Length-prefixed, so that no two sequences of parts hash the same input.
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    Digest(h.finish())
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        d.deserialize_any(DigestVisitor)
    }
}

struct DigestVisitor;

impl<'de> Visitor<'de> for DigestVisitor {
    type Value = Digest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Digest, E> {
        Ok(hash(b'n', &[]))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Digest, E> {
        Ok(hash(b'b', &[&[u8::from(v)]]))
    }

    // Numbers hash as their shortest decimal text: 443 is 443 whether it arrived as u64 or i64.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Digest, E> {
        Ok(hash(b'#', &[v.to_string().as_bytes()]))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Digest, E> {
        Ok(hash(b'#', &[v.to_string().as_bytes()]))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Digest, E> {
        Ok(hash(b'#', &[format!("{v:?}").as_bytes()]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Digest, E> {
        Ok(hash(b's', &[v.as_bytes()]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Digest, A::Error> {
        let mut h = FnvHasher::default();
        h.write(b"[");
        while let Some(Digest(item)) = seq.next_element::<Digest>()? {
            h.write(&item.to_le_bytes());
        }
        h.write(b"]");
        Ok(Digest(h.finish()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Digest, A::Error> {
        let mut entries: Vec<(String, u64)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Digest(value) = map.next_value::<Digest>()?;
            entries.push((key, value));
        }
        entries.sort_unstable();
        let mut h = FnvHasher::default();
        h.write(b"{");
        for (key, value) in &entries {
            h.write(&(key.len() as u64).to_le_bytes());
            h.write(key.as_bytes());
            h.write(&value.to_le_bytes());
        }
        h.write(b"}");
        Ok(Digest(h.finish()))
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn fp(json: &str) -> String {
        Fingerprint::of(json.as_bytes()).unwrap().to_string()
    }

    #[test]
    fn whitespace_and_key_order_do_not_matter_values_do() {
        let a = fp(r#"{"mode": "audit", "allow": [{"hosts": ["a.example"], "ports": [443]}]}"#);
        assert_eq!(a.len(), 12);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(
            a,
            fp("{\"allow\":[{\"ports\":[443],\n \"hosts\":[\"a.example\"]}],\"mode\":\"audit\"}")
        );
        for other in [
            r#"{"mode": "allowlist", "allow": [{"hosts": ["a.example"], "ports": [443]}]}"#,
            r#"{"mode": "audit", "allow": [{"hosts": ["a.example"], "ports": ["443"]}]}"#,
            r#"{"mode": "audit", "allow": [{"hosts": ["a.example"], "ports": [443, 80]}]}"#,
            r#"{"mode": "audit", "allow": [{"hosts": ["a.example"]}, {"ports": [443]}]}"#,
            r#"{"mode": "audit", "deny": [{"hosts": ["a.example"], "ports": [443]}]}"#,
        ] {
            assert_ne!(a, fp(other), "{other}");
        }
        // Array order is meaning (rule order): it changes the hash.
        assert_ne!(
            fp(r#"{"presets": ["a", "b"]}"#),
            fp(r#"{"presets": ["b", "a"]}"#)
        );
        // Nesting is not confused with concatenation.
        assert_ne!(fp(r#"[["a"], "b"]"#), fp(r#"[["a", "b"]]"#));
        assert_ne!(fp(r#"{"a": "bc"}"#), fp(r#"{"ab": "c"}"#));
        assert_ne!(fp("{}"), fp("[]"));
        assert_ne!(fp("null"), fp("false"));
    }

    #[test]
    fn known_value_and_malformed_json() {
        // Pinned, so that a change to the scheme (which would disconnect logs from files already
        // checked) is seen in review.
        assert_eq!(fp("{}"), fp(" { } "));
        assert_eq!(fp("{}"), "08f44b07b590");
        assert_eq!(Fingerprint::of(b"{"), None);
        assert_eq!(Fingerprint::of(b"{} x"), None);
    }
}
