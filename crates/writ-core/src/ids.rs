//! Names and identifiers, checked once at the boundary and trusted after.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::random::{self, RandomError};

/// A name or id that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error(
        "{what} may contain only lowercase letters, digits, '-', '_' and '.', and must start with a letter or digit"
    )]
    BadCharacter { what: &'static str },
    #[error("{what} is malformed")]
    Malformed { what: &'static str },
}

const NAME_MAX: usize = 63;

fn check_name(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > NAME_MAX {
        return Err(NameError::TooLong {
            what,
            max: NAME_MAX,
        });
    }
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::BadCharacter { what })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check_name($what, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                check_name($what, &s)?;
                Ok(Self(s))
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The name of a registered agent: `[a-z0-9][a-z0-9._-]{0,62}`.
    AgentName,
    "agent name"
);
name_type!(
    /// The name of a registered tool: `[a-z0-9][a-z0-9._-]{0,62}`.
    ToolName,
    "tool name"
);

macro_rules! random_id {
    ($(#[$doc:meta])* $ty:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// A fresh id with 128 random bits.
            pub fn generate() -> Result<Self, RandomError> {
                Ok(Self(format!(concat!($prefix, "{}"), random::token_128()?)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                let body = s
                    .strip_prefix($prefix)
                    .ok_or(NameError::Malformed { what: $what })?;
                let ok = body.len() == 22
                    && body
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if ok {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(NameError::Malformed { what: $what })
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// One task: `task_` and 22 base64url characters.
    TaskId,
    "task_",
    "task id"
);
random_id!(
    /// One attested instance of an agent: `ins_` and 22 base64url characters.
    InstanceId,
    "ins_",
    "instance id"
);
random_id!(
    /// One approval request: `apr_` and 22 base64url characters.
    ApprovalId,
    "apr_",
    "approval id"
);
random_id!(
    /// The id of one issued token (the JWT `jti`).
    Jti,
    "jti_",
    "token id"
);

/// The SPIFFE ID of an agent in a trust domain.
pub fn agent_spiffe_id(trust_domain: &str, agent: &AgentName) -> String {
    format!("spiffe://{trust_domain}/agent/{agent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!("demo-agent".parse::<AgentName>().is_ok());
        assert!("a.b_c-1".parse::<ToolName>().is_ok());
        for bad in [
            "",
            "-x",
            "Upper",
            "has space",
            "../x",
            "x/y",
            &"a".repeat(64),
        ] {
            assert!(bad.parse::<AgentName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = TaskId::generate().unwrap();
        assert_eq!(id.as_str().parse::<TaskId>().unwrap(), id);
        assert!("task_short".parse::<TaskId>().is_err());
        assert!(
            id.as_str()
                .replace("task_", "ins_")
                .parse::<TaskId>()
                .is_err()
        );
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<TaskId>("\"task_'; drop table x;--aaaaaa\"").is_err());
    }
}
