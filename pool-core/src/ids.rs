//! Validated identifiers.
//!
//! Every id that reaches a storage key is checked here once, so backends can build paths such
//! as `{project_id}/project_metadata.json` without re-validating. The accepted alphabet is
//! ASCII letters, digits, `-`, `_` and `.`; an id never starts with `.`, so `.` and `..` (and
//! hidden files) are impossible, and `/`, `\`, whitespace and control characters never pass.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which kind of id was being parsed.
        kind: &'static str,
    },
    /// The string was longer than the kind allows.
    #[error("{kind} is {len} bytes long, more than the {max} allowed")]
    TooLong {
        /// Which kind of id was being parsed.
        kind: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// The string held a character outside `[A-Za-z0-9._-]`.
    #[error("{kind} has the character {ch:?} at byte {at}; only A-Z a-z 0-9 . _ - are allowed")]
    InvalidChar {
        /// Which kind of id was being parsed.
        kind: &'static str,
        /// The character refused.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// The string started with a dot (which covers `.` and `..`).
    #[error("{kind} must not start with '.'")]
    LeadingDot {
        /// Which kind of id was being parsed.
        kind: &'static str,
    },
}

fn validate(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if let Some((at, ch)) = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::InvalidChar { kind, ch, at });
    }
    if s.starts_with('.') {
        return Err(IdError::LeadingDot { kind });
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest id accepted, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                validate($kind, &s, Self::MAX_LEN)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

define_id!(
    /// A project's id; safe to use as one path segment of a storage key.
    ProjectId,
    "project id",
    128
);
define_id!(
    /// The conversation (or session, or job) a project is handed to.
    ConversationId,
    "conversation id",
    256
);
define_id!(
    /// One manager process's identity; it owns the projects it reserved.
    OwnerId,
    "owner id",
    128
);
define_id!(
    /// The name of a project template (the kind of project to provision).
    TemplateName,
    "template name",
    64
);

/// Proof that a caller holds an allocation; checked by mark-active and archive so that a
/// stale holder is refused. Chosen by the caller of [`crate::Pool::allocate`] (the runtime
/// draws it at random).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AllocationToken(u64);

impl AllocationToken {
    /// Wraps a raw token value.
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    /// The raw token value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for AllocationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for AllocationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AllocationToken({self})")
    }
}

/// Why a string was refused as an [`AllocationToken`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an allocation token is 16 hexadecimal digits, got {0:?}")]
pub struct TokenError(String);

impl FromStr for AllocationToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        let ok = s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        let parsed = ok.then(|| u64::from_str_radix(s, 16).ok()).flatten();
        parsed
            .map(Self)
            .ok_or_else(|| TokenError(s.chars().take(40).collect()))
    }
}

impl TryFrom<String> for AllocationToken {
    type Error = TokenError;
    fn try_from(s: String) -> Result<Self, TokenError> {
        s.parse()
    }
}

impl From<AllocationToken> for String {
    fn from(t: AllocationToken) -> String {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_ids() {
        for s in [
            "default-1-9ca82",
            "horizon-617-9ca82",
            "a",
            "A.b_c-1",
            "x..",
        ] {
            assert_eq!(ProjectId::new(s).unwrap().as_str(), s);
        }
    }

    #[test]
    fn refuses_anything_that_could_escape_a_prefix() {
        let cases = [
            ("", "empty"),
            (".", "leading"),
            ("..", "leading"),
            ("../etc", "char"),
            ("a/b", "char"),
            ("a\\b", "char"),
            ("a\0b", "char"),
            ("a\nb", "char"),
            ("a b", "char"),
            ("é", "char"),
            (".hidden", "leading"),
        ];
        for (s, why) in cases {
            let err = ProjectId::new(s).unwrap_err();
            let matches = match why {
                "empty" => matches!(err, IdError::Empty { .. }),
                "leading" => matches!(err, IdError::LeadingDot { .. }),
                _ => matches!(err, IdError::InvalidChar { .. }),
            };
            assert!(matches, "{s:?} gave {err:?}");
        }
    }

    #[test]
    fn refuses_overlong_ids_with_their_length() {
        let long = "a".repeat(ProjectId::MAX_LEN + 1);
        assert_eq!(
            ProjectId::new(long).unwrap_err(),
            IdError::TooLong {
                kind: "project id",
                len: 129,
                max: 128
            }
        );
        assert!(ProjectId::new("a".repeat(ProjectId::MAX_LEN)).is_ok());
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let ok: ProjectId = serde_json::from_str("\"p-1\"").unwrap();
        assert_eq!(ok.as_str(), "p-1");
        assert!(serde_json::from_str::<ProjectId>("\"../x\"").is_err());
        assert!(serde_json::from_str::<TemplateName>("\"\"").is_err());
    }

    #[test]
    fn tokens_round_trip_as_hex() {
        let t = AllocationToken::from_u64(0xdead_beef);
        assert_eq!(t.to_string(), "00000000deadbeef");
        assert_eq!("00000000deadbeef".parse::<AllocationToken>().unwrap(), t);
        assert!("deadbeef".parse::<AllocationToken>().is_err());
        assert!("+000000000000001".parse::<AllocationToken>().is_err());
    }
}
