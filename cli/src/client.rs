//! The connection to the coordinator: picks the certificate for `--identity`, dials over mutual
//! TLS, bounds every call by `--timeout`, and turns gRPC statuses into operator-facing errors.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use faultline_identity::tls::{self, CertPaths, CoordinatorUrl, TlsError};
use faultline_proto::pb::experiments_client::ExperimentsClient;
use faultline_proto::pb::fleet_client::FleetClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::args::{Cli, IdentityArg};
use crate::error::CliError;

/// Where and as whom to reach the coordinator.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub certs_dir: PathBuf,
    pub identity: IdentityArg,
    pub timeout: Duration,
}

impl Target {
    pub fn from_cli(cli: &Cli) -> Self {
        Target {
            url: cli.coordinator.clone(),
            certs_dir: cli.certs_dir.clone(),
            identity: cli.identity,
            timeout: cli.timeout,
        }
    }

    /// The certificate, key and CA files of `--identity`.
    pub fn cert_paths(&self) -> CertPaths {
        self.paths()
    }

    fn paths(&self) -> CertPaths {
        CertPaths::in_dir(&self.certs_dir, self.identity.stem())
    }

    /// Opens a Fleet client. Fails with a precise error before dialling when the URL is bad or
    /// certificate files are missing.
    pub async fn fleet(&self) -> Result<FleetClient<Channel>, CliError> {
        Ok(FleetClient::new(self.channel().await?))
    }

    /// Opens a Tokens client (same checks as [`Target::fleet`]).
    pub async fn tokens(
        &self,
    ) -> Result<faultline_proto::pb::tokens_client::TokensClient<Channel>, CliError> {
        Ok(faultline_proto::pb::tokens_client::TokensClient::new(
            self.channel().await?,
        ))
    }

    /// Opens an Experiments client (same checks as [`Target::fleet`]).
    pub async fn experiments(&self) -> Result<ExperimentsClient<Channel>, CliError> {
        Ok(ExperimentsClient::new(self.channel().await?))
    }

    pub async fn channel(&self) -> Result<Channel, CliError> {
        let url = CoordinatorUrl::parse(&self.url).map_err(|e| match e {
            TlsError::Url { reason, .. } => CliError::Usage {
                flag: "--coordinator",
                reason: format!("{:?} {reason}", self.url),
            },
            other => CliError::Tls(other),
        })?;
        let paths = self.paths();
        let missing: Vec<PathBuf> = [&paths.cert, &paths.key, &paths.ca]
            .into_iter()
            .filter(|p| !p.exists())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(CliError::MissingCerts {
                identity: self.identity.stem(),
                dir: self.certs_dir.clone(),
                missing,
            });
        }
        tls::connect(&url, &paths, self.timeout)
            .await
            .map_err(|e| self.connect_error(e))
    }

    fn connect_error(&self, e: TlsError) -> CliError {
        match e {
            TlsError::ServerCertificate { url, reason } => CliError::ServerCertificate {
                url,
                reason,
                ca: self.paths().ca,
            },
            TlsError::Refused { reason, cert, .. } => CliError::Unauthenticated {
                message: format!("client certificate refused by the coordinator: {reason}"),
                cert,
            },
            TlsError::Connect { url, reason } if is_timeout(&reason) => CliError::Timeout {
                url,
                timeout: humantime::format_duration(self.timeout).to_string(),
            },
            TlsError::Connect { url, reason } => CliError::Unreachable { url, reason },
            other => CliError::Tls(other),
        }
    }

    /// Runs one RPC, bounded by `--timeout`, mapping a refusal to its [`CliError`].
    pub async fn call<T, F>(&self, rpc: F) -> Result<T, CliError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, rpc).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.status_error(status)),
            Err(_) => Err(CliError::Timeout {
                url: self.url.clone(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            }),
        }
    }

    /// Words a gRPC status for the operator.
    pub fn status_error(&self, status: Status) -> CliError {
        let message = status.message().to_string();
        match status.code() {
            Code::PermissionDenied => CliError::PermissionDenied { message },
            Code::Unauthenticated => CliError::Unauthenticated {
                message,
                cert: self.paths().cert,
            },
            Code::Unavailable => CliError::Unreachable {
                url: self.url.clone(),
                reason: message,
            },
            Code::DeadlineExceeded => CliError::Timeout {
                url: self.url.clone(),
                timeout: humantime::format_duration(self.timeout).to_string(),
            },
            Code::InvalidArgument => CliError::InvalidArgument(message),
            // A halt refusal gets the way out, unless the coordinator already names it.
            Code::FailedPrecondition
                if message.to_lowercase().contains("halt")
                    && !message.contains("faultctl resume") =>
            {
                CliError::Halted { message }
            }
            Code::FailedPrecondition => CliError::FailedPrecondition { message },
            Code::NotFound => CliError::NotFound { message },
            Code::Unimplemented => CliError::Unimplemented {
                url: self.url.clone(),
                message,
            },
            code => CliError::Rpc {
                url: self.url.clone(),
                code: code_name(code).to_string(),
                message,
            },
        }
    }
}

/// The dial did not finish within `--timeout` (tonic's connect timeout or our own bound).
fn is_timeout(reason: &str) -> bool {
    reason.contains("deadline has elapsed") || reason.starts_with("timed out")
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            url: "https://127.0.0.1:7443".into(),
            certs_dir: PathBuf::from("/c"),
            identity: IdentityArg::Viewer,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn statuses_are_worded_for_operators() {
        let t = target();
        let e = t.status_error(Status::permission_denied(
            "identity viewer/viewer (role viewer) may not call Fleet.HaltAll",
        ));
        assert!(e
            .to_string()
            .starts_with("permission denied: identity viewer/viewer"));
        let e = t.status_error(Status::unauthenticated("certificate has expired"));
        let text = e.to_string();
        assert!(
            text.starts_with("not authenticated: certificate has expired"),
            "{text}"
        );
        assert!(text.contains("/c/viewer.pem"), "{text}");
        let e = t.status_error(Status::unavailable("connection reset"));
        assert!(e
            .to_string()
            .starts_with("coordinator unreachable at https://127.0.0.1:7443: connection reset"));
        let e = t.status_error(Status::not_found("no experiment named x"));
        assert_eq!(
            e.to_string(),
            "no experiment named x\nhint: `faultctl get experiments` lists the experiments"
        );
        let e = t.status_error(Status::resource_exhausted("busy"));
        assert_eq!(
            e.to_string(),
            "coordinator at https://127.0.0.1:7443 answered RESOURCE_EXHAUSTED: busy"
        );
    }

    #[test]
    fn refusals_of_experiments_keep_the_coordinators_words() {
        let t = target();
        let msg = "spec.faults[1].load: 150 is outside 1..=100";
        let e = t.status_error(Status::invalid_argument(msg));
        assert_eq!(e.to_string(), msg);
        assert_eq!(e.exit_code(), crate::error::EXIT_FAILURE);
        let e = t.status_error(Status::failed_precondition(
            "the fleet is halted (game day over); experiments are refused until Fleet.Resume",
        ));
        let text = e.to_string();
        assert!(
            text.starts_with("the fleet is halted (game day over)"),
            "{text}"
        );
        assert!(text.contains("`faultctl resume`"), "{text}");
        let named = "the fleet is halted (x); refused until an admin resumes it (faultctl resume)";
        let e = t.status_error(Status::failed_precondition(named));
        assert_eq!(e.to_string(), named, "no second hint");
        let e = t.status_error(Status::failed_precondition("experiment x is completed"));
        assert_eq!(e.to_string(), "experiment x is completed");
    }

    #[tokio::test]
    async fn bad_url_names_the_flag_before_any_file_is_read() {
        let t = Target {
            url: "http://127.0.0.1:7443".into(),
            ..target()
        };
        let e = t.fleet().await.expect_err("plaintext URL");
        assert!(e.to_string().starts_with("--coordinator: "), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
    }

    #[tokio::test]
    async fn missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Target {
            certs_dir: dir.path().to_path_buf(),
            ..target()
        };
        let e = t.fleet().await.expect_err("no certs");
        let text = e.to_string();
        assert!(
            text.contains(&dir.path().join("viewer.pem").display().to_string()),
            "{text}"
        );
        assert!(
            text.contains(&dir.path().join("ca.pem").display().to_string()),
            "{text}"
        );
    }
}
