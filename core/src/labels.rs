//! Node names and `k=v` labels, validated with Kubernetes' rules so the same names work in a
//! DaemonSet and on bare-metal hosts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A node name: a DNS-1123 subdomain (lowercase alphanumerics, `-` and `.`, at most 253 chars,
/// starting and ending with an alphanumeric).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
        let alnum =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty()
            || s.len() > 253
            || !s.chars().all(ok_char)
            || !alnum(s.chars().next())
            || !alnum(s.chars().last())
        {
            return Err(LabelError::NodeName(s.to_string()));
        }
        Ok(NodeName(s.to_string()))
    }
}

/// Labels of an agent, ordered by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

impl Labels {
    /// Parses `k=v,k=v`. An empty string is no labels.
    pub fn parse(s: &str) -> Result<Self, LabelError> {
        let mut map = BTreeMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| LabelError::Pair(pair.to_string()))?;
            validate_key(k)?;
            validate_value(k, v)?;
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(LabelError::Duplicate(k.to_string()));
            }
        }
        Ok(Labels(map))
    }

    /// Validates labels that arrived as a map (for example in a Hello).
    pub fn from_map(map: BTreeMap<String, String>) -> Result<Self, LabelError> {
        for (k, v) in &map {
            validate_key(k)?;
            validate_value(k, v)?;
        }
        Ok(Labels(map))
    }

    /// True when every selector pair is present with the same value.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.0.get(k) == Some(v))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.0 {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

fn name_part_ok(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(ok)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn validate_key(k: &str) -> Result<(), LabelError> {
    let name = match k.split_once('/') {
        Some((prefix, name)) => {
            if prefix.parse::<NodeName>().is_err() {
                return Err(LabelError::Key(k.to_string()));
            }
            name
        }
        None => k,
    };
    if name_part_ok(name) {
        Ok(())
    } else {
        Err(LabelError::Key(k.to_string()))
    }
}

fn validate_value(k: &str, v: &str) -> Result<(), LabelError> {
    if v.is_empty() || name_part_ok(v) {
        Ok(())
    } else {
        Err(LabelError::Value {
            key: k.to_string(),
            value: v.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("node name {0:?} is invalid: use 1..=253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit")]
    NodeName(String),
    #[error("label {0:?} is not of the form key=value")]
    Pair(String),
    #[error("label key {0:?} is invalid: use [prefix/]name, name 1..=63 of letters, digits, '-', '_', '.', starting and ending with a letter or digit")]
    Key(String),
    #[error("label {key}: value {value:?} is invalid: use 0..=63 of letters, digits, '-', '_', '.', starting and ending with a letter or digit")]
    Value { key: String, value: String },
    #[error("label key {0:?} is given twice")]
    Duplicate(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "node-a", "ip-10-0-0-1.ec2.internal", "0"] {
            assert!(ok.parse::<NodeName>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Node", "a_b", "a/b", &"x".repeat(254)] {
            assert!(bad.parse::<NodeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_parse_and_print() {
        let l = Labels::parse("zone=a, role=web,faultline.dev/tier=gold").expect("valid");
        assert_eq!(l.to_string(), "faultline.dev/tier=gold,role=web,zone=a");
        assert_eq!(Labels::parse("").expect("empty"), Labels::default());
        let sel = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        assert!(l.matches(&sel));
        let sel = BTreeMap::from([("zone".to_string(), "b".to_string())]);
        assert!(!l.matches(&sel));
    }

    #[test]
    fn labels_errors_name_the_problem() {
        assert_eq!(Labels::parse("zone"), Err(LabelError::Pair("zone".into())));
        assert!(matches!(Labels::parse("-x=1"), Err(LabelError::Key(_))));
        assert!(matches!(
            Labels::parse("x=a b"),
            Err(LabelError::Value { .. })
        ));
        assert_eq!(
            Labels::parse("a=1,a=2"),
            Err(LabelError::Duplicate("a".into()))
        );
        let msg = Labels::parse("x=a b").expect_err("bad").to_string();
        assert!(msg.contains("label x") && msg.contains("0..=63"), "{msg}");
    }
}
