//! Enums a pipeline spells by fixed names (`arch: encdec`, `objective: ul2`): each variant and
//! its spelling are listed once, and serde, the op schemas ([`NAMES`](Arch::NAMES)) and messages
//! ([`name`](Arch::name)) all read that one list.

/// Declares a fieldless enum with its spellings: `ALL`, `NAMES`, `name`, `from_name`, and serde
/// as the names (an unknown name is serde's `unknown variant`, listing the names).
macro_rules! spelled {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $spelling:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of [`Self::NAMES`].
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// How a pipeline spells each value.
            pub const NAMES: &'static [&'static str] = &[$($spelling,)+];

            /// How a pipeline spells this value.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $spelling,)+
                }
            }

            /// The value spelled `name`, if there is one.
            pub fn from_name(name: &str) -> Option<$name> {
                match name {
                    $($spelling => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_name(&s)
                    .ok_or_else(|| serde::de::Error::unknown_variant(&s, Self::NAMES))
            }
        }
    };
}
