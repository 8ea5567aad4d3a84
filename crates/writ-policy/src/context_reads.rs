//! Which attributes of `context` a slice's policies read, so a decision
//! builds only those. Turning the context into Cedar values is a third of
//! a decision, and a slice's policies read a few of its fifteen
//! attributes; the answer is the same, as a policy cannot reach an
//! attribute it does not name.

use serde_json::Value;

/// The top-level `context` attributes a set of policies reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ContextReads {
    /// A policy uses `context` other than by naming an attribute (or could
    /// not be read): build all of it.
    All,
    /// Only these (`context.x`, `context has x`, `context["x"]`).
    Only(Vec<String>),
}

/// The whole context, for a set whose reads were not worked out.
pub(crate) static ALL: ContextReads = ContextReads::All;

impl ContextReads {
    /// What `policy` reads.
    pub(crate) fn of(policy: &cedar_policy::Policy) -> Self {
        let mut names = Vec::new();
        match policy.to_json() {
            Ok(json) if collect(&json, &mut names) => {
                names.sort();
                names.dedup();
                Self::Only(names)
            }
            _ => Self::All,
        }
    }

    /// What policies reading `each` read together.
    pub(crate) fn union<'a>(each: impl IntoIterator<Item = &'a ContextReads>) -> Self {
        let mut names: Vec<String> = Vec::new();
        for r in each {
            match r {
                Self::All => return Self::All,
                Self::Only(n) => names.extend(n.iter().cloned()),
            }
        }
        names.sort();
        names.dedup();
        Self::Only(names)
    }

    /// Whether the attribute `name` is to be built.
    pub(crate) fn wants(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// Adds the attributes `json` (a policy or expression in Cedar's JSON
/// form) reads of `context` to `out`; false when it uses `context` in any
/// other way.
fn collect(json: &Value, out: &mut Vec<String>) -> bool {
    match json {
        Value::Object(map) => {
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                return false;
            }
            for op in [".", "has"] {
                if let Some(access) = map.get(op).and_then(Value::as_object) {
                    let on_context = access
                        .get("left")
                        .and_then(|l| l.get("Var"))
                        .and_then(Value::as_str)
                        == Some("context");
                    if on_context {
                        return match access.get("attr").and_then(Value::as_str) {
                            Some(attr) => {
                                out.push(attr.to_owned());
                                true
                            }
                            None => false,
                        };
                    }
                }
            }
            map.values().all(|v| collect(v, out))
        }
        Value::Array(items) => items.iter().all(|v| collect(v, out)),
        _ => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reads(text: &str) -> ContextReads {
        let set: cedar_policy::PolicySet = text.parse().unwrap();
        let each: Vec<ContextReads> = set.policies().map(ContextReads::of).collect();
        ContextReads::union(&each)
    }

    fn only(names: &[&str]) -> ContextReads {
        ContextReads::Only(names.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn attributes_named_by_access_has_and_index_are_read() {
        assert_eq!(
            reads(
                r#"permit (principal, action, resource) when {
                     context has on_behalf_of && context.time.hour < 8 &&
                     context has request.mcp_tool && context["scopes"].contains("x")
                   };
                   forbid (principal, action, resource) when { context.depth > 2 };"#
            ),
            only(&["depth", "on_behalf_of", "request", "scopes", "time"])
        );
    }

    #[test]
    fn reads_are_found_in_every_kind_of_expression() {
        assert_eq!(
            reads(
                r#"permit (principal, action, resource)
                   when { if context.exception then context.ttl > 1 else false }
                   unless { context.chain.contains(principal) || principal is Agent && context.intent like "x*" ||
                            [context.depth].contains(context.time.unix) || {"a": context.attestation}.a == "" ||
                            context has request.mcp_tool.x };"#
            ),
            only(&[
                "attestation",
                "chain",
                "depth",
                "exception",
                "intent",
                "request",
                "time",
                "ttl"
            ])
        );
    }

    #[test]
    fn context_inside_a_method_call_or_an_extension_call_means_all_of_it() {
        for text in [
            r#"permit (principal, action, resource) when { [1].contains(context) };"#,
            r#"permit (principal, action, resource) unless { context is Agent };"#,
            r#"permit (principal, action, resource) when { (if true then context else {}) == {} };"#,
            r#"permit (principal, action, resource) when { ip(context.a).isLoopback() || ip(context) == ip("::1") };"#,
        ] {
            assert_eq!(reads(text), ContextReads::All, "{text}");
        }
    }

    #[test]
    fn a_policy_that_does_not_read_context_adds_nothing() {
        assert_eq!(
            reads("permit (principal, action, resource) when { principal has owner };"),
            only(&[])
        );
    }

    #[test]
    fn context_used_whole_means_all_of_it() {
        for text in [
            r#"permit (principal, action, resource) when { context == {"a": 1} };"#,
            r#"permit (principal, action, resource) when { [context].isEmpty() };"#,
            r#"permit (principal, action, resource) when { {"c": context}.c.depth > 1 };"#,
        ] {
            assert_eq!(reads(text), ContextReads::All, "{text}");
        }
    }

    #[test]
    fn a_string_or_attribute_called_context_is_not_the_context() {
        assert_eq!(
            reads(
                r#"permit (principal, action, resource) when {
                     principal has context && principal.context == "context"
                   };"#
            ),
            only(&[])
        );
    }
}
