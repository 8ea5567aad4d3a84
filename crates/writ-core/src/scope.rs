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

/// Why a narrowing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarrowError {
    #[error("scope {0:?} is malformed")]
    Malformed(String),
    #[error("scope {0:?} is for another tool")]
    OtherTool(String),
    #[error("the task holds nothing for tool {0}")]
    NotHeld(String),
    #[error("scope {0} exceeds what the task holds")]
    Exceeds(String),
    #[error("scope is empty")]
    Empty,
}

/// The scopes asked for on one held capability: `read write`, or
/// `tool:read` naming that tool; each must be held. `None` asks for all.
/// The result is always a non-empty subset of `held.scopes`.
pub fn narrow_for_tool(
    held: &Capability,
    requested: Option<&str>,
) -> Result<BTreeSet<Scope>, NarrowError> {
    let Some(requested) = requested else {
        return Ok(held.scopes.clone());
    };
    let mut out = BTreeSet::new();
    for item in requested.split(' ').filter(|s| !s.is_empty()) {
        let bare = match item.split_once(':') {
            Some((t, s)) if t == held.tool.as_str() => s,
            Some(_) => return Err(NarrowError::OtherTool(item.to_owned())),
            None => item,
        };
        let s: Scope = bare
            .parse()
            .map_err(|_| NarrowError::Malformed(item.to_owned()))?;
        if !held.scopes.contains(&s) {
            return Err(NarrowError::Exceeds(s.to_string()));
        }
        out.insert(s);
    }
    if out.is_empty() {
        return Err(NarrowError::Empty);
    }
    Ok(out)
}

/// Capabilities narrowed to `requested` (`tool:scope ...`), each a subset of
/// what is `held`. `None` keeps everything held.
pub fn narrow(
    held: &[Capability],
    requested: Option<&str>,
) -> Result<Vec<Capability>, NarrowError> {
    let Some(requested) = requested else {
        return Ok(normalize(held));
    };
    let wanted = from_claim(requested).map_err(|_| NarrowError::Malformed(requested.to_owned()))?;
    if wanted.is_empty() {
        return Err(NarrowError::Empty);
    }
    for w in &wanted {
        let Some(h) = held.iter().find(|c| c.tool == w.tool) else {
            return Err(NarrowError::NotHeld(w.tool.to_string()));
        };
        if let Some(s) = w.scopes.iter().find(|s| !h.scopes.contains(*s)) {
            return Err(NarrowError::Exceeds(format!("{}:{s}", w.tool)));
        }
    }
    Ok(wanted)
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

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn caps() -> impl Strategy<Value = Vec<Capability>> {
            prop::collection::vec(
                (0..4usize, prop::collection::btree_set(0..5usize, 1..4)),
                1..4,
            )
            .prop_map(|v| {
                normalize(
                    &v.into_iter()
                        .map(|(t, s)| Capability {
                            tool: format!("tool{t}").parse().unwrap(),
                            scopes: s
                                .into_iter()
                                .map(|i| format!("s{i}").parse().unwrap())
                                .collect(),
                        })
                        .collect::<Vec<_>>(),
                )
            })
        }

        fn request() -> impl Strategy<Value = Option<String>> {
            prop::option::of(
                prop::collection::vec((0..5usize, 0..6usize, any::<bool>()), 0..5).prop_map(
                    |items| {
                        items
                            .into_iter()
                            .map(|(t, s, qualified)| {
                                if qualified {
                                    format!("tool{t}:s{s}")
                                } else {
                                    format!("s{s}")
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    },
                ),
            )
        }

        fn within(child: &[Capability], parent: &[Capability]) -> bool {
            child.iter().all(|c| {
                parent
                    .iter()
                    .any(|p| p.tool == c.tool && c.scopes.is_subset(&p.scopes))
            })
        }

        proptest! {
            /// Attenuation only narrows: any chain of narrowings stays
            /// within the root's tools and scopes.
            #[test]
            fn any_chain_of_narrowings_stays_within_the_root(
                root in caps(),
                hops in prop::collection::vec(request(), 1..5),
            ) {
                let mut current = root.clone();
                for r in hops {
                    if let Ok(next) = narrow(&current, r.as_deref()) {
                        prop_assert!(within(&next, &current));
                        prop_assert!(within(&next, &root));
                        current = next;
                    }
                }
            }

            #[test]
            fn narrowing_one_tool_yields_a_held_subset(root in caps(), r in request()) {
                let held = &root[0];
                if let Ok(s) = narrow_for_tool(held, r.as_deref()) {
                    prop_assert!(!s.is_empty());
                    prop_assert!(s.is_subset(&held.scopes));
                }
            }
        }
    }
}
