//! Scopes and capabilities: what a task may do with which tool.
//!
//! In tokens a capability is written `tool:scope`, space separated in the
//! `scope` claim (RFC 6749 §3.3).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{NameError, ToolName};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope must be 1 to 64 characters of letters, digits, '.', '_', '-' and '/'")]
    Invalid,
    #[error("capability {0:?} is not of the form tool:scope")]
    NotQualified(String),
    #[error(transparent)]
    Tool(#[from] NameError),
}

/// One scope of one tool, e.g. `read`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Scope(String);

impl Scope {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ScopeError::Invalid)
        }
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tool and the scopes asked for (or granted) on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    pub tool: ToolName,
    pub scopes: BTreeSet<Scope>,
}

impl Capability {
    /// Parses `tool:scope[,scope...]`, the CLI's short form.
    pub fn parse_short(s: &str) -> Result<Self, ScopeError> {
        let (tool, scopes) = s
            .split_once(':')
            .ok_or_else(|| ScopeError::NotQualified(s.to_owned()))?;
        let scopes = scopes
            .split(',')
            .map(str::parse)
            .collect::<Result<BTreeSet<Scope>, _>>()?;
        Ok(Self {
            tool: tool.parse()?,
            scopes,
        })
    }
}

/// Merges capabilities that name the same tool, so each tool appears once.
pub fn normalize(caps: &[Capability]) -> Vec<Capability> {
    let mut by_tool: BTreeMap<&ToolName, BTreeSet<Scope>> = BTreeMap::new();
    for c in caps {
        by_tool
            .entry(&c.tool)
            .or_default()
            .extend(c.scopes.iter().cloned());
    }
    by_tool
        .into_iter()
        .map(|(tool, scopes)| Capability {
            tool: tool.clone(),
            scopes,
        })
        .collect()
}

/// The `scope` claim for a set of capabilities: `tool:scope` items, space separated.
pub fn to_claim(caps: &[Capability]) -> String {
    let mut items: Vec<String> = caps
        .iter()
        .flat_map(|c| c.scopes.iter().map(move |s| format!("{}:{}", c.tool, s)))
        .collect();
    items.sort();
    items.join(" ")
}

/// Parses a `scope` claim back into capabilities.
pub fn from_claim(claim: &str) -> Result<Vec<Capability>, ScopeError> {
    let mut caps = Vec::new();
    for item in claim.split(' ').filter(|s| !s.is_empty()) {
        let (tool, scope) = item
            .split_once(':')
            .ok_or_else(|| ScopeError::NotQualified(item.to_owned()))?;
        caps.push(Capability {
            tool: tool.parse()?,
            scopes: BTreeSet::from([scope.parse()?]),
        });
    }
    Ok(normalize(&caps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_round_trip() {
        let caps = vec![
            Capability::parse_short("tickets:write,read").unwrap(),
            Capability::parse_short("search:query").unwrap(),
            Capability::parse_short("tickets:read").unwrap(),
        ];
        let claim = to_claim(&normalize(&caps));
        assert_eq!(claim, "search:query tickets:read tickets:write");
        assert_eq!(from_claim(&claim).unwrap(), normalize(&caps));
    }

    #[test]
    fn bad_scopes_are_refused() {
        for bad in ["", "a b", "x\"y", "ok:", ":read", "tickets"] {
            assert!(Capability::parse_short(bad).is_err(), "{bad:?} accepted");
        }
        assert!("a".repeat(65).parse::<Scope>().is_err());
    }
}
