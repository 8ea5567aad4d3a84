//! Secrets as a type: never printed, compared in constant time, wiped on drop.

use std::fmt;

use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret string (a token, a password, an upstream credential).
///
/// `Debug`, `Display` and `Serialize` all print `<redacted>`; use
/// [`Secret::expose`] where the value must really leave the process.
#[derive(Clone, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    /// The secret value itself. Every call site is a place a secret leaves.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (for equal lengths; length is not secret).
    pub fn ct_eq(&self, other: &str) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(self.0.as_bytes(), other.as_bytes())
            .is_ok()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_everywhere() {
        let s = Secret::new("canary-7f3a9");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert!(s.ct_eq("canary-7f3a9"));
        assert!(!s.ct_eq("canary-7f3a8"));
        assert_eq!(s.expose(), "canary-7f3a9");
    }
}
