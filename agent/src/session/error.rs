//! Why a session attempt failed, and how loudly to say so.

use std::time::Duration;

use crate::metrics::FailureLevel;

/// A repeated connection failure is logged again at warn level every this many attempts.
pub(crate) const REPEAT_LOG_EVERY: u64 = 20;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    Connect(String),
    #[error("refused by the coordinator ({code}): {message}")]
    Refused { code: &'static str, message: String },
    #[error("session stream failed ({code}): {message}")]
    Stream { code: &'static str, message: String },
    #[error("no Welcome from the coordinator within {0:?} of Hello")]
    WelcomeTimeout(Duration),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the coordinator closed the session stream")]
    Closed,
}

impl SessionError {
    /// Classifies a gRPC status: UNAUTHENTICATED and PERMISSION_DENIED are refusals.
    pub fn from_status(status: tonic::Status) -> Self {
        use tonic::Code;
        let code = match status.code() {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Unavailable => "UNAVAILABLE",
            Code::Cancelled => "CANCELLED",
            Code::Aborted => "ABORTED",
            Code::Internal => "INTERNAL",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            _ => "UNKNOWN",
        };
        let mut message = status.message().to_string();
        if let Some(source) = std::error::Error::source(&status) {
            let chain = faultline_identity::tls::error_chain(source);
            if !message.contains(&chain) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&chain);
            }
        }
        if message.is_empty() {
            message = status.code().description().to_string();
        }
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                SessionError::Refused { code, message }
            }
            _ => SessionError::Stream { code, message },
        }
    }

    pub fn is_refusal(&self) -> bool {
        matches!(self, SessionError::Refused { .. })
    }
}

/// Logs a connection failure once, not on every retry.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    last: Option<String>,
    repeats: u64,
}

impl FailureLog {
    pub(crate) fn level(&mut self, e: &SessionError) -> FailureLevel {
        let text = e.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            self.repeats += 1;
            if self.repeats.is_multiple_of(REPEAT_LOG_EVERY) {
                FailureLevel::Repeated {
                    attempts: self.repeats + 1,
                }
            } else {
                FailureLevel::Quiet
            }
        } else {
            self.last = Some(text);
            self.repeats = 0;
            if e.is_refusal() {
                FailureLevel::Refused
            } else {
                FailureLevel::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_failures_are_logged_once() {
        let mut log = FailureLog::default();
        let down = SessionError::Connect("connecting to https://x:1: connection refused".into());
        let refused = SessionError::Refused {
            code: "UNAUTHENTICATED",
            message: "no client certificate".into(),
        };
        assert_eq!(log.level(&down), FailureLevel::New);
        let levels: Vec<FailureLevel> = (0..REPEAT_LOG_EVERY).map(|_| log.level(&down)).collect();
        assert!(levels[..levels.len() - 1]
            .iter()
            .all(|l| *l == FailureLevel::Quiet));
        assert_eq!(
            levels.last(),
            Some(&FailureLevel::Repeated {
                attempts: REPEAT_LOG_EVERY + 1
            })
        );
        assert_eq!(log.level(&refused), FailureLevel::Refused);
        assert_eq!(log.level(&refused), FailureLevel::Quiet);
        assert_eq!(log.level(&down), FailureLevel::New);
    }
}
