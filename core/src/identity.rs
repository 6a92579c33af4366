//! Who is calling: a role and a name, carried in certificates as the SAN URI
//! `spiffe://faultline/<role>/<name>`.

use std::fmt;
use std::str::FromStr;

/// The URI scheme and trust domain every Faultline identity lives under.
pub const SPIFFE_PREFIX: &str = "spiffe://faultline/";

/// What a certificate holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A node agent: may only open an AgentSession for its own node name.
    Agent,
    /// Reads experiments, agents and policy.
    Viewer,
    /// Viewer, plus create, start and abort experiments.
    Operator,
    /// Operator, plus halt everything and change policy.
    Admin,
    /// The coordinator's own server identity.
    Coordinator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Agent,
        Role::Viewer,
        Role::Operator,
        Role::Admin,
        Role::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Coordinator => "coordinator",
        }
    }

    /// May read experiments, agents and policy.
    pub fn can_view(self) -> bool {
        matches!(self, Role::Viewer | Role::Operator | Role::Admin)
    }

    /// May create, start and abort experiments.
    pub fn can_operate(self) -> bool {
        matches!(self, Role::Operator | Role::Admin)
    }

    /// May halt the whole fleet and change policy.
    pub fn can_administer(self) -> bool {
        matches!(self, Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Self {
        Identity {
            role,
            name: name.into(),
        }
    }

    /// The SAN URI that carries this identity in a certificate.
    pub fn to_uri(&self) -> String {
        format!("{SPIFFE_PREFIX}{}/{}", self.role, self.name)
    }

    /// Parses `spiffe://faultline/<role>/<name>`.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(SPIFFE_PREFIX)
            .ok_or_else(|| IdentityError::NotFaultline(uri.to_string()))?;
        let (role, name) = rest
            .split_once('/')
            .ok_or_else(|| IdentityError::Malformed(uri.to_string()))?;
        let role: Role = role.parse()?;
        if name.is_empty() || name.contains('/') {
            return Err(IdentityError::Malformed(uri.to_string()));
        }
        Ok(Identity::new(role, name))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("unknown role {0:?}: expected one of agent, viewer, operator, admin, coordinator")]
    UnknownRole(String),
    #[error("URI {0:?} is not a Faultline identity (expected spiffe://faultline/<role>/<name>)")]
    NotFaultline(String),
    #[error("URI {0:?} is malformed (expected spiffe://faultline/<role>/<name>)")]
    Malformed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        let id = Identity::new(Role::Agent, "node-a");
        assert_eq!(id.to_uri(), "spiffe://faultline/agent/node-a");
        assert_eq!(Identity::from_uri(&id.to_uri()), Ok(id));
    }

    #[test]
    fn rejects_foreign_and_malformed_uris() {
        assert!(matches!(
            Identity::from_uri("spiffe://other/agent/a"),
            Err(IdentityError::NotFaultline(_))
        ));
        assert!(matches!(
            Identity::from_uri("spiffe://faultline/agent"),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            Identity::from_uri("spiffe://faultline/agent/"),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            Identity::from_uri("spiffe://faultline/root/x"),
            Err(IdentityError::UnknownRole(_))
        ));
    }

    #[test]
    fn role_permissions() {
        assert!(!Role::Agent.can_view());
        assert!(Role::Viewer.can_view() && !Role::Viewer.can_operate());
        assert!(Role::Operator.can_operate() && !Role::Operator.can_administer());
        assert!(Role::Admin.can_administer());
        assert!(!Role::Coordinator.can_view());
    }
}
