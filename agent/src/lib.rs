//! The Faultline node agent: it holds a mutual-TLS session with the coordinator, keeps its
//! lease, reports telemetry, and hands fault orders to a [`FaultManager`] that reverts
//! everything when the lease lapses, on shutdown and at start-up.
#![deny(unsafe_code)]

mod agent;
pub mod backoff;
pub mod config;
pub mod drivers;
pub mod engine;
pub mod enroll;
pub mod faults;
pub mod host;
pub mod lease;
pub mod metrics;
pub mod net;
pub mod session;
pub mod standalone;
pub mod state_dir;
pub mod telemetry;
pub mod transport;

pub use agent::{Agent, AgentError};
pub use config::Config;
pub use faults::{FaultManager, RevertReason};
pub use session::SessionStatus;

/// A boxed future borrowing its fault manager.
pub use futures::future::BoxFuture;
