//! `spec.targets.pods` as written, validated into a [`PodSelector`]: namespaces and container
//! names are DNS-1123 labels, and the label and field selectors are checked against the
//! Kubernetes selector grammar here, so a typo is refused with its field path before the
//! coordinator asks the API server.

use serde::Deserialize;

use super::guard_doc::is_dns_label;
use super::pods::PodSelector;
use crate::fault::SpecError;
use crate::Labels;

/// Most namespaces one selector may list.
pub const MAX_NAMESPACES: usize = 100;
/// Most containers one selector may list.
pub const MAX_CONTAINERS: usize = 16;
/// Longest label or field selector.
pub const MAX_SELECTOR_LEN: usize = 4096;

const PATH: &str = "spec.targets.pods";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPods {
    pub namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    #[serde(default)]
    pub containers: Vec<String>,
}

fn at(field: &str) -> String {
    format!("{PATH}.{field}")
}

impl RawPods {
    pub fn to_selector(&self) -> Result<PodSelector, SpecError> {
        let (field, given): (&str, Vec<String>) = match (&self.namespace, &self.namespaces) {
            (Some(_), Some(_)) => {
                return Err(SpecError::new(
                    PATH,
                    "give namespace or namespaces, not both",
                ))
            }
            (Some(n), None) => ("namespace", vec![n.clone()]),
            (None, Some(ns)) => ("namespaces", ns.clone()),
            (None, None) => {
                return Err(SpecError::new(
                    at("namespace"),
                    "is required: the namespace of the pods (or namespaces: [a, b])",
                ))
            }
        };
        if given.is_empty() || given.len() > MAX_NAMESPACES {
            return Err(SpecError::new(
                at(field),
                format!("has {} namespaces; give 1..={MAX_NAMESPACES}", given.len()),
            ));
        }
        let mut namespaces: Vec<String> = Vec::new();
        for (i, ns) in given.iter().enumerate() {
            let path = if field == "namespace" {
                at(field)
            } else {
                format!("{}[{i}]", at(field))
            };
            if !is_dns_label(ns) {
                return Err(SpecError::new(
                    path,
                    format!("{ns:?} is not a namespace name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
                ));
            }
            if namespaces.contains(ns) {
                return Err(SpecError::new(path, format!("{ns:?} is listed twice")));
            }
            namespaces.push(ns.clone());
        }
        namespaces.sort();
        let label_selector = match &self.label_selector {
            None => None,
            Some(s) => Some(check_label_selector(&at("labelSelector"), s)?),
        };
        let field_selector = match &self.field_selector {
            None => None,
            Some(s) => Some(check_field_selector(&at("fieldSelector"), s)?),
        };
        if self.containers.len() > MAX_CONTAINERS {
            return Err(SpecError::new(
                at("containers"),
                format!(
                    "has {} containers; give at most {MAX_CONTAINERS}",
                    self.containers.len()
                ),
            ));
        }
        let mut containers: Vec<String> = Vec::new();
        for (i, c) in self.containers.iter().enumerate() {
            let path = format!("{}[{i}]", at("containers"));
            if !is_dns_label(c) {
                return Err(SpecError::new(
                    path,
                    format!("{c:?} is not a container name: use 1..=63 of a-z, 0-9 and '-', starting and ending with a letter or digit"),
                ));
            }
            if containers.contains(c) {
                return Err(SpecError::new(path, format!("{c:?} is listed twice")));
            }
            containers.push(c.clone());
        }
        Ok(PodSelector {
            namespaces,
            label_selector,
            field_selector,
            containers,
        })
    }
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn check_label(path: &str, requirement: &str, key: &str, value: &str) -> Result<(), SpecError> {
    let map = std::collections::BTreeMap::from([(key.to_string(), value.to_string())]);
    Labels::from_map(map)
        .map(|_| ())
        .map_err(|e| SpecError::new(path, format!("{requirement:?}: {e}")))
}

/// Checks a label selector (`app=checkout`, `tier!=db`, `env in (a,b)`, `!canary`, `release`);
/// returns it trimmed.
pub fn check_label_selector(path: &str, s: &str) -> Result<String, SpecError> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_SELECTOR_LEN {
        return Err(SpecError::new(
            path,
            format!("must be 1..={MAX_SELECTOR_LEN} characters; leave it out to select every pod"),
        ));
    }
    let syntax = |req: &str| {
        SpecError::new(
            path,
            format!("{req:?} is not a label requirement: use key=value, key!=value, key in (a,b), key notin (a,b), key or !key, separated by commas"),
        )
    };
    for req in split_top(s) {
        let req = req.trim();
        if req.is_empty() {
            return Err(syntax(req));
        }
        if let Some(key) = req.strip_prefix('!') {
            check_label(path, req, key.trim(), "")?;
            continue;
        }
        let key_end = req
            .find(|c: char| c.is_whitespace() || "=!()".contains(c))
            .unwrap_or(req.len());
        let (key, rest) = req.split_at(key_end);
        let rest = rest.trim();
        if rest.is_empty() {
            check_label(path, req, key, "")?;
            continue;
        }
        let op_value = ["==", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op));
        if let Some(value) = op_value {
            check_label(path, req, key, value.trim())?;
            continue;
        }
        let set = ["notin", "in"].iter().find_map(|op| {
            rest.strip_prefix(op)
                .filter(|r| r.starts_with(|c: char| c.is_whitespace() || c == '('))
        });
        let Some(set) = set else {
            return Err(syntax(req));
        };
        let inner = set
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| syntax(req))?;
        if inner.trim().is_empty() {
            return Err(SpecError::new(
                path,
                format!("{req:?}: the set of values is empty"),
            ));
        }
        for v in inner.split(',') {
            check_label(path, req, key, v.trim())?;
        }
    }
    Ok(s.to_string())
}

/// Checks a field selector (`spec.nodeName=node-a,status.phase!=Failed`); returns it trimmed.
pub fn check_field_selector(path: &str, s: &str) -> Result<String, SpecError> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_SELECTOR_LEN {
        return Err(SpecError::new(
            path,
            format!("must be 1..={MAX_SELECTOR_LEN} characters; leave it out to select every pod"),
        ));
    }
    for req in s.split(',') {
        let req = req.trim();
        let parts = ["==", "!=", "="]
            .iter()
            .find_map(|op| req.split_once(op).map(|(k, v)| (k.trim(), v.trim())));
        let key_ok = |k: &str| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        };
        match parts {
            Some((k, _)) if key_ok(k) => {}
            _ => {
                return Err(SpecError::new(
                    path,
                    format!("{req:?} is not a field requirement: use field=value or field!=value (e.g. spec.nodeName=node-a), separated by commas"),
                ))
            }
        }
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_of_the_kubernetes_grammar_pass() {
        for ok in [
            "app=checkout",
            "app==checkout,tier!=db",
            "env in (prod, staging),!canary",
            "release notin (a,b)",
            "app.kubernetes.io/name=shop",
            "track",
            "empty=",
        ] {
            assert_eq!(check_label_selector("p", ok).expect(ok), ok);
        }
    }

    #[test]
    fn bad_label_selectors_name_the_field_and_the_requirement() {
        let cases = [
            (
                "",
                "p: must be 1..=4096 characters; leave it out to select every pod",
            ),
            ("app=checkout,", "p: \"\" is not a label requirement"),
            (
                "app in checkout",
                "p: \"app in checkout\" is not a label requirement",
            ),
            ("app in ()", "p: \"app in ()\": the set of values is empty"),
            ("app>3", "p: \"app>3\": label key \"app>3\" is invalid"),
            (
                "app=no spaces",
                "p: \"app=no spaces\": label app: value \"no spaces\" is invalid",
            ),
        ];
        for (input, want) in cases {
            let err = check_label_selector("p", input)
                .expect_err(input)
                .to_string();
            assert!(err.starts_with(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn field_selectors() {
        assert_eq!(
            check_field_selector("f", " spec.nodeName=node-a,status.phase!=Failed ").expect("ok"),
            "spec.nodeName=node-a,status.phase!=Failed"
        );
        let err = check_field_selector("f", "spec.nodeName").expect_err("no operator");
        assert!(
            err.to_string()
                .starts_with("f: \"spec.nodeName\" is not a field requirement"),
            "{err}"
        );
    }
}
