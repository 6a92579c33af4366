//! `NAMESPACE/NAME` references to Kubernetes objects, as flags give them
//! (`--agent-service-account`, `--publish-ca-bundle`).

use std::fmt;
use std::str::FromStr;

/// A namespaced object: the namespace is a DNS-1123 label (1..=63 characters), the name a
/// DNS-1123 subdomain (1..=253).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `a-z`, `0-9`, `-`, starting and ending with a letter or digit, 1..=`max` characters.
fn label_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl FromStr for NamespacedName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not NAMESPACE/NAME (for example faultline/faultline-agent)")
        })?;
        if !label_ok(namespace, 63) {
            return Err(format!(
                "namespace {namespace:?} in {s:?}: use 1..=63 lowercase letters, digits or '-', \
                 starting and ending with a letter or digit"
            ));
        }
        let name_ok = name.len() <= 253 && name.split('.').all(|part| label_ok(part, 63));
        if !name_ok {
            return Err(format!(
                "name {name:?} in {s:?}: use 1..=253 lowercase letters, digits, '-' or '.', each \
                 '.'-separated part starting and ending with a letter or digit"
            ));
        }
        Ok(NamespacedName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_slash_name() {
        let n: NamespacedName = "faultline/faultline-agent".parse().expect("parses");
        assert_eq!(n.namespace, "faultline");
        assert_eq!(n.name, "faultline-agent");
        assert_eq!(n.to_string(), "faultline/faultline-agent");
        assert!("chaos/a.b-c".parse::<NamespacedName>().is_ok());
        for (bad, says) in [
            ("faultline-agent", "is not NAMESPACE/NAME"),
            ("/x", "namespace \"\""),
            ("Faultline/x", "namespace \"Faultline\""),
            ("a.b/x", "namespace \"a.b\""),
            ("ns/", "name \"\""),
            ("ns/x/y", "name \"x/y\""),
            ("ns/-x", "name \"-x\""),
            ("ns/x..y", "name \"x..y\""),
        ] {
            let err = bad.parse::<NamespacedName>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
