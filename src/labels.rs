//! One list per label vocabulary of counters and log lines, through [`labelled!`]: the enum, `ALL` (for defining every counter up front) and `as_str` cannot
//! disagree, and a variant cannot be missing from `ALL`.

/// Generates a `Copy` enum whose variants carry stable labels, with `ALL` and `as_str`.
macro_rules! labelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// How many variants there are.
            pub const COUNT: usize = $name::ALL.len();

            /// The variant's position in [`Self::ALL`].
            pub const fn index(self) -> usize {
                self as usize
            }

            /// The stable label used in counters and logs.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use labelled;
