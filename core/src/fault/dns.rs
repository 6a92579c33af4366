//! DNS vocabulary of fault specs: the names a `dns` fault fails (exact names and `*.suffix`
//! patterns), what it answers instead, and their validation.

use std::fmt;
use std::str::FromStr;

use super::{join, SpecError};

/// At most this many names per fault (the eBPF map holds one entry per name).
pub const MAX_DNS_NAMES: usize = 64;
/// A name's length in text form without the trailing dot (RFC 1035: 255 bytes on the wire).
pub const MAX_NAME_LEN: usize = 253;
/// A label's length (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// What a query for a matching name gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsAction {
    /// An answer with rcode 3 (the name does not exist).
    #[default]
    Nxdomain,
    /// An answer with rcode 2 (the server failed).
    Servfail,
    /// No answer: the query is dropped, the client times out.
    Timeout,
}

impl DnsAction {
    pub const ALL: [DnsAction; 3] = [DnsAction::Nxdomain, DnsAction::Servfail, DnsAction::Timeout];

    pub fn as_str(self) -> &'static str {
        match self {
            DnsAction::Nxdomain => "nxdomain",
            DnsAction::Servfail => "servfail",
            DnsAction::Timeout => "timeout",
        }
    }
}

impl fmt::Display for DnsAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DnsAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DnsAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .ok_or_else(|| format!("{s:?} is not an action; use nxdomain, servfail or timeout"))
    }
}

/// One entry of `names`: `www.example.com` (that name only) or `*.example.com` (every name
/// below example.com, not example.com itself). Compared case-insensitively; a trailing dot is
/// allowed and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// Lower case, without `*.` and without the trailing dot.
    pub name: String,
    pub suffix: bool,
}

impl DnsName {
    /// Parses and checks one name; the error text names the rule broken.
    pub fn parse(text: &str) -> Result<DnsName, String> {
        let t = text.trim();
        let (suffix, rest) = match t.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let rest = rest.strip_suffix('.').unwrap_or(rest);
        if rest.is_empty() {
            return Err(format!(
                "{text:?} is not a name; use e.g. api.example.com or *.example.com"
            ));
        }
        if rest.len() > MAX_NAME_LEN {
            return Err(format!(
                "{text:?} is {} characters long; a name has 1..={MAX_NAME_LEN}",
                rest.len()
            ));
        }
        for label in rest.split('.') {
            if label.is_empty() || label.len() > MAX_LABEL_LEN {
                return Err(format!(
                    "{text:?} has a label of {} characters; labels have 1..={MAX_LABEL_LEN}",
                    label.len()
                ));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                let hint = if c == '*' {
                    " (a wildcard is only allowed as the whole first label, `*.example.com`)"
                } else {
                    ""
                };
                return Err(format!(
                    "{text:?} has {c:?} in a label; labels hold letters, digits, '-' and '_'{hint}"
                ));
            }
        }
        Ok(DnsName {
            name: rest.to_ascii_lowercase(),
            suffix,
        })
    }

    /// The name as written in specs (`*.example.com`).
    pub fn text(&self) -> String {
        if self.suffix {
            format!("*.{}", self.name)
        } else {
            self.name.clone()
        }
    }

    /// Whether a queried name (text form, any case, trailing dot allowed) matches.
    pub fn matches(&self, query: &str) -> bool {
        let q = query
            .strip_suffix('.')
            .unwrap_or(query)
            .to_ascii_lowercase();
        if self.suffix {
            q.len() > self.name.len() + 1
                && q.ends_with(&self.name)
                && q.as_bytes()[q.len() - self.name.len() - 1] == b'.'
        } else {
            q == self.name
        }
    }

    /// The DNS wire form without the root label: `\x03www\x07example\x03com`.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.name.len() + 1);
        for label in self.name.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsFault {
    /// None = the interface of the default route in the target's netns.
    pub interface: Option<String>,
    /// 1..=64 names.
    pub names: Vec<DnsName>,
    pub action: DnsAction,
    /// 0.0..=1.0 per query.
    pub probability: f64,
}

impl DnsFault {
    /// Parses `names` as written; `names_path` is the field's path (`spec.faults[0].names`),
    /// errors name the entry (`names[1]`).
    pub fn parse_names(texts: &[String], names_path: &str) -> Result<Vec<DnsName>, SpecError> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                DnsName::parse(t).map_err(|e| SpecError::new(format!("{names_path}[{i}]"), e))
            })
            .collect()
    }

    pub(crate) fn validate(&self, path: &str) -> Result<(), SpecError> {
        super::check_interface(path, &self.interface)?;
        if self.names.is_empty() || self.names.len() > MAX_DNS_NAMES {
            return Err(SpecError::new(
                join(path, "names"),
                format!(
                    "has {} names; give 1..={MAX_DNS_NAMES} (exact names or *.suffix patterns)",
                    self.names.len()
                ),
            ));
        }
        for (i, n) in self.names.iter().enumerate() {
            // Names built in code (not parsed) get the same checks.
            DnsName::parse(&n.text())
                .map_err(|e| SpecError::new(join(path, &format!("names[{i}]")), e))?;
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(SpecError::new(
                join(path, "probability"),
                format!("{} is outside 0..=1", self.probability),
            ));
        }
        Ok(())
    }

    /// `dns nxdomain for api.example.com, *.svc.local (30%)`.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.names.iter().map(DnsName::text).collect();
        let mut s = format!("dns {} for {}", self.action, names.join(", "));
        if self.probability < 1.0 {
            s.push_str(&format!(" ({}%)", self.probability * 100.0));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_normalise_and_match() {
        let n = DnsName::parse("API.Example.com.").expect("exact");
        assert_eq!((n.name.as_str(), n.suffix), ("api.example.com", false));
        assert!(n.matches("api.example.COM"));
        assert!(n.matches("api.example.com."));
        assert!(!n.matches("x.api.example.com"));
        let s = DnsName::parse("*.svc.cluster.local").expect("suffix");
        assert_eq!((s.name.as_str(), s.suffix), ("svc.cluster.local", true));
        assert!(s.matches("db.default.svc.cluster.local"));
        assert!(s.matches("A.SVC.cluster.local"));
        assert!(!s.matches("svc.cluster.local"));
        assert!(!s.matches("xsvc.cluster.local"));
        assert_eq!(s.text(), "*.svc.cluster.local");
        assert_eq!(
            DnsName::parse("a.bc").expect("short").wire(),
            b"\x01a\x02bc".to_vec()
        );
    }

    #[test]
    fn bad_names_say_the_rule() {
        let err = |t: &str| DnsName::parse(t).expect_err(t);
        assert!(err("").contains("is not a name"));
        assert!(err("*.").contains("is not a name"));
        assert!(err("a..b").contains("labels have 1..=63"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("label of 64 characters"));
        assert!(err(&format!("{}.com", "a.".repeat(130))).contains("a name has 1..=253"));
        assert!(err("a*.example.com").contains("only allowed as the whole first label"));
        assert!(err("*").contains("only allowed as the whole first label"));
        assert!(err("ex ample.com").contains("labels hold letters"));
    }

    #[test]
    fn actions_round_trip() {
        for a in DnsAction::ALL {
            assert_eq!(a.as_str().parse::<DnsAction>(), Ok(a));
        }
        assert!("refuse"
            .parse::<DnsAction>()
            .expect_err("refuse")
            .contains("use nxdomain, servfail or timeout"));
    }
}
