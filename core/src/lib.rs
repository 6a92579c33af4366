//! Faultline's domain model: identities and roles, node names and labels, durations, fault specs
//! and their validation. Pure: no tokio, tonic, kube or libc.
#![forbid(unsafe_code)]

pub mod clock;
pub mod documents;
pub mod duration;
pub mod experiment;
pub mod fault;
pub mod identity;
pub mod labels;
pub mod schedule;
pub mod units;
pub mod workflow;

pub use identity::{Identity, Role};
pub use labels::{Labels, NodeName};

/// The Faultline version, shared by every binary and sent in Hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
