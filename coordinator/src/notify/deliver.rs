//! One destination's delivery task: takes events from its bounded queue in order and POSTs
//! each, retrying with exponential backoff; the final outcome is counted, and a failure is
//! written to the audit log. The secret is read from its file at each delivery and appears
//! in no log, metric or audit entry.

use std::sync::Arc;
use std::time::Duration;

use faultline_core::experiment::{HttpAccess, TlsOptions};
use hyper::body::Bytes;
use metrics::counter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{payload, RunEvent, Sink, SinkKind, NOTIFICATIONS, NOTIFICATION_ATTEMPTS};
use crate::http::{self, Request};
use crate::state::now_ms;
use crate::store::{AuditRecord, StoreHandle};

/// Requests per notification at most (the first and three retries).
pub const ATTEMPTS: u32 = 4;
/// How long one request may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause between attempts; doubled after each.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub async fn run(
    sink: Sink,
    mut rx: mpsc::Receiver<Arc<RunEvent>>,
    store: Arc<StoreHandle>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = deliver(&sink, &event) => r,
        };
        let outcome = if result.is_ok() {
            "delivered"
        } else {
            "failed"
        };
        counter!(NOTIFICATIONS, "kind" => sink.kind.as_str(), "event" => event.event.as_str(), "outcome" => outcome)
            .increment(1);
        match result {
            Ok(()) => tracing::debug!(
                destination = sink.kind.as_str(),
                event = event.event.as_str(),
                run = %event.name,
                "notification delivered"
            ),
            Err(e) => {
                tracing::warn!(
                    destination = sink.kind.as_str(),
                    url = %sink.url,
                    event = event.event.as_str(),
                    run = %event.name,
                    "notification not delivered after {ATTEMPTS} attempts: {e}"
                );
                let record = AuditRecord {
                    at_unix_ms: now_ms(),
                    identity: "coordinator".into(),
                    action: "Notify".into(),
                    detail: format!(
                        "{} notification {} for {} {} to {} not delivered after {ATTEMPTS} attempts: {e}",
                        sink.kind.as_str(),
                        event.event.as_str(),
                        event.kind.as_str(),
                        event.name,
                        sink.url
                    ),
                    allowed: false,
                };
                let _ = store.append_audit(record, |r| {
                    if let Err(e) = r {
                        tracing::warn!("could not audit a failed notification: {e}");
                    }
                });
            }
        }
    }
}

/// Why a delivery failed, and whether another attempt may help.
struct Failure {
    message: String,
    retry: bool,
}

async fn deliver(sink: &Sink, event: &RunEvent) -> Result<(), String> {
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match attempt_once(sink, event).await {
            Ok(()) => {
                counter!(NOTIFICATION_ATTEMPTS, "kind" => sink.kind.as_str(), "result" => "ok")
                    .increment(1);
                return Ok(());
            }
            Err(f) => {
                counter!(NOTIFICATION_ATTEMPTS, "kind" => sink.kind.as_str(), "result" => "error")
                    .increment(1);
                last = f.message;
                if !f.retry {
                    break;
                }
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    Err(last)
}

fn secret(sink: &Sink) -> Result<Vec<u8>, Failure> {
    let Some(path) = &sink.secret_file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path).map_err(|e| Failure {
        message: format!("reading secret_file {}: {e}", path.display()),
        retry: false,
    })?;
    let s = text.trim_end_matches(['\r', '\n']);
    if s.is_empty() {
        return Err(Failure {
            message: format!("secret_file {} is empty", path.display()),
            retry: false,
        });
    }
    Ok(s.as_bytes().to_vec())
}

async fn attempt_once(sink: &Sink, event: &RunEvent) -> Result<(), Failure> {
    let key = secret(sink)?;
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    let body = match sink.kind {
        SinkKind::Webhook => {
            let body = payload::webhook(event);
            headers.push((
                "X-Faultline-Signature".into(),
                payload::signature(&key, &body),
            ));
            headers.push(("X-Faultline-Event".into(), event.event.as_str().into()));
            body
        }
        SinkKind::Slack => payload::slack(event),
        SinkKind::PagerDuty => {
            let routing_key = String::from_utf8_lossy(&key).into_owned();
            match payload::pagerduty(event, &routing_key) {
                Some(b) => b,
                None => return Ok(()),
            }
        }
    };
    let access = HttpAccess {
        tls: TlsOptions {
            ca_file: sink.ca_file.as_ref().map(|p| p.display().to_string()),
            insecure_skip_verify: false,
        },
        ..HttpAccess::default()
    };
    let req = Request {
        url: &sink.url,
        path_and_query: &sink.url.path_and_query,
        method: "POST",
        headers: &headers,
        body: Some(Bytes::from(body)),
        access: &access,
        timeout: ATTEMPT_TIMEOUT,
    };
    match http::send(&req).await {
        Ok((status, _)) if (200..300).contains(&status) => Ok(()),
        Ok((status, _)) => Err(Failure {
            message: format!("{} answered HTTP {status}", sink.url.authority()),
            // 4xx other than 408 and 429 will not change by retrying.
            retry: status >= 500 || status == 408 || status == 429,
        }),
        Err(e) => Err(Failure {
            message: e,
            retry: true,
        }),
    }
}
