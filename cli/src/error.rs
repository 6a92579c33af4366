//! Everything that can go wrong in `faultctl`, worded for the operator, with a hint where the
//! fix is known, and the exit code each failure maps to.

use std::path::PathBuf;

use faultline_identity::{pki::PkiError, tls::TlsError};

/// Exit status for bad flags or input (as clap uses).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for every other failure.
pub const EXIT_FAILURE: i32 = 1;
/// `faultctl watch`: the experiment was aborted (by a guard, `faultctl abort` or a halt).
pub const EXIT_ABORTED: i32 = 3;
/// `faultctl watch`: the experiment failed or was interrupted by a coordinator restart.
pub const EXIT_FAILED: i32 = 4;
/// `faultctl watch` / `run`: the experiment completed but its steady-state hypothesis failed.
pub const EXIT_HYPOTHESIS_FAILED: i32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: names the flag and what it accepts.
    #[error("{flag}: {reason}")]
    Usage { flag: &'static str, reason: String },

    #[error(
        "certificate files for identity {identity} are missing: {}\n\
         hint: create them with `faultctl certs init --dir {}`, or point --certs-dir \
         (or $FAULTLINE_CERTS_DIR) at the directory that holds them",
        join_paths(missing),
        dir.display()
    )]
    MissingCerts {
        identity: &'static str,
        dir: PathBuf,
        missing: Vec<PathBuf>,
    },

    #[error(
        "coordinator unreachable at {url}: {reason}\n\
         hint: check --coordinator (or $FAULTLINE_COORDINATOR) and that faultline-coordinator \
         is running and listening there"
    )]
    Unreachable { url: String, reason: String },

    #[error(
        "TLS handshake with {url} failed: {reason}\n\
         hint: the coordinator's certificate must be signed by {}, name the host of \
         --coordinator (add names with `faultctl certs init --san HOST`) and carry the \
         coordinator's identity spiffe://faultline/coordinator/<name>",
        ca.display()
    )]
    ServerCertificate {
        url: String,
        reason: String,
        ca: PathBuf,
    },

    #[error("coordinator at {url} did not answer within {timeout} (--timeout)")]
    Timeout { url: String, timeout: String },

    #[error(
        "not authenticated: {message}\n\
         hint: the coordinator refused the certificate {}; is it signed by the coordinator's CA \
         and still valid?",
        cert.display()
    )]
    Unauthenticated { message: String, cert: PathBuf },

    #[error(
        "permission denied: {message}\n\
         hint: --identity picks the certificate: viewer reads, operator runs experiments, admin \
         halts and resumes"
    )]
    PermissionDenied { message: String },

    /// The coordinator refused the input; its message names the field path, printed as is.
    #[error("{0}")]
    InvalidArgument(String),

    #[error(
        "{message}\nhint: an admin lifts the halt with `faultctl resume` (see `faultctl policy`)"
    )]
    Halted { message: String },

    #[error("{message}")]
    FailedPrecondition { message: String },

    #[error("{message}\nhint: `faultctl get experiments` lists the experiments")]
    NotFound { message: String },

    #[error("{path}: {reason}")]
    Document { path: String, reason: String },

    #[error("the watch of {name} ended while it was still {phase}: {reason}")]
    WatchEnded {
        name: String,
        phase: String,
        reason: String,
    },

    #[error("not supported by the coordinator at {url}: {message}")]
    Unimplemented { url: String, message: String },

    #[error("coordinator at {url} answered {code}: {message}")]
    Rpc {
        url: String,
        code: String,
        message: String,
    },

    #[error("{0}")]
    Tls(#[from] TlsError),

    #[error("{0}")]
    Pki(#[from] PkiError),

    #[error("writing output: {0}")]
    Output(String),
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage { .. } | CliError::Document { .. } => EXIT_USAGE,
            CliError::Pki(PkiError::San(_) | PkiError::Agent(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        CliError::Output(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Output(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_certs_names_paths_and_the_fix() {
        let e = CliError::MissingCerts {
            identity: "viewer",
            dir: PathBuf::from("/c"),
            missing: vec![PathBuf::from("/c/viewer.pem"), PathBuf::from("/c/ca.pem")],
        };
        let text = e.to_string();
        assert!(text.contains("/c/viewer.pem, /c/ca.pem"), "{text}");
        assert!(text.contains("faultctl certs init --dir /c"), "{text}");
        assert_eq!(e.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = CliError::Usage {
            flag: "--agents",
            reason: "x".into(),
        };
        assert_eq!(e.to_string(), "--agents: x");
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert_eq!(
            CliError::Pki(PkiError::San("a b".into())).exit_code(),
            EXIT_USAGE
        );
    }
}
