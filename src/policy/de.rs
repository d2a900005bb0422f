//! Deserialisation helpers shared by the configuration types ([`super::config`]) and the
//! preset names ([`super::presets`]).

/// serde's derived `Deserialize` for a unit-only enum reads a JSON string as the variant name,
/// but anything else (`1`, `null`) fails in serde_json as a syntax error ("expected value"),
/// though the JSON is well-formed. Each such enum derives with `remote = "Self"` and gets this
/// impl, which asks for a string (so another type is an "invalid type" error, with the field
/// path) and hands it to the derived code (which reports an unknown variant).
macro_rules! string_only {
    ($ty:ident, $expecting:literal) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                struct StringVisitor;
                impl serde::de::Visitor<'_> for StringVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        $ty::deserialize(serde::de::value::StrDeserializer::<E>::new(v))
                    }
                }
                deserializer.deserialize_str(StringVisitor)
            }
        }
    };
}
pub(crate) use string_only;
