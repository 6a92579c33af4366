//! The `faultline.v1` wire protocol: the generated gRPC code and the conversions between wire
//! messages and `faultline-core` types; nothing else.
#![forbid(unsafe_code)]

pub mod codec;
pub mod convert;

/// Generated prost/tonic code for package `faultline.v1`.
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("faultline.v1");
}

pub use v1 as pb;
