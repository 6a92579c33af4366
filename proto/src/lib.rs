//! The `faultline.v1` wire protocol: generated gRPC code, mutual TLS for every connection, and
//! the development PKI that issues Faultline identities.
#![deny(unsafe_code)]

pub mod convert;
pub mod http;
pub mod pki;
pub mod tls;

/// Generated prost/tonic code for package `faultline.v1`.
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("faultline.v1");
}

pub use v1 as pb;
