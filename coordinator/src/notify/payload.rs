//! The bodies each destination receives, and the webhook signature. Pure functions.

use ring::hmac;
use serde_json::json;

use super::{EventKind, RunEvent, Sink, SinkKind};

/// Whether `sink` gets `event`: the listed events; PagerDuty also gets `recovered` (its
/// resolve).
pub fn wants(sink: &Sink, event: EventKind) -> bool {
    sink.events.contains(&event)
        || (sink.kind == SinkKind::PagerDuty && event == EventKind::Recovered)
}

/// `text` with every `http://` / `https://` URL replaced by `<url>`.
pub fn link_free(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let at = lower.find("http://").or_else(|| lower.find("https://"));
            match at {
                Some(i) => format!("{}<url>", &w[..i]),
                None => w.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The generic webhook body.
pub fn webhook(e: &RunEvent) -> Vec<u8> {
    let body = json!({
        "source": "faultline",
        "event": e.event.as_str(),
        "kind": e.kind.as_str(),
        "name": e.name,
        "phase": e.phase,
        "verdict": e.verdict,
        "summary": link_free(&e.summary),
        "at_unix_ms": e.at_unix_ms,
    });
    body.to_string().into_bytes()
}

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// A Slack incoming-webhook payload.
pub fn slack(e: &RunEvent) -> Vec<u8> {
    let icon = match e.event {
        EventKind::Started => ":arrow_forward:",
        EventKind::Completed => ":white_check_mark:",
        EventKind::Recovered => ":large_green_circle:",
        _ => ":red_circle:",
    };
    let text = format!(
        "{icon} Faultline {} *{}* {}: {}",
        e.kind.as_str(),
        e.name,
        e.event.as_str().replace('_', " "),
        link_free(&e.summary)
    );
    json!({ "text": text }).to_string().into_bytes()
}

/// A PagerDuty Events API v2 body: trigger for aborts and failures, resolve on recovery (and
/// on completion); `None` for events PagerDuty does not page on (started).
pub fn pagerduty(e: &RunEvent, routing_key: &str) -> Option<Vec<u8>> {
    let dedup_key = format!("faultline/{}/{}", e.kind.as_str(), e.name);
    let body = match e.event {
        EventKind::Aborted | EventKind::Failed | EventKind::HypothesisFailed => json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": format!("Faultline {} {} {}: {}", e.kind.as_str(), e.name, e.event.as_str().replace('_', " "), link_free(&e.summary)),
                "source": "faultline-coordinator",
                "severity": "error",
                "component": e.name,
                "class": e.event.as_str(),
                "custom_details": {"phase": e.phase, "verdict": e.verdict},
            },
        }),
        EventKind::Recovered | EventKind::Completed => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        EventKind::Started => return None,
    };
    Some(body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::RunKind;

    fn event(kind: EventKind) -> RunEvent {
        RunEvent {
            event: kind,
            kind: RunKind::Experiment,
            name: "checkout-loss".into(),
            phase: "aborted".into(),
            verdict: "none".into(),
            summary: "guard health (http) breached: GET http://10.0.0.1:8080/healthz answered 503"
                .into(),
            at_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bodies_are_link_free_and_shaped_for_their_receivers() {
        let body: serde_json::Value =
            serde_json::from_slice(&webhook(&event(EventKind::Aborted))).expect("json");
        assert_eq!(body["event"], "aborted");
        assert_eq!(body["kind"], "experiment");
        assert_eq!(body["name"], "checkout-loss");
        assert_eq!(
            body["summary"],
            "guard health (http) breached: GET <url> answered 503"
        );
        let slack: serde_json::Value =
            serde_json::from_slice(&slack(&event(EventKind::Aborted))).expect("json");
        assert!(slack["text"]
            .as_str()
            .is_some_and(|t| t.contains("*checkout-loss* aborted") && !t.contains("http://")));
        let pd: serde_json::Value = serde_json::from_slice(
            &pagerduty(&event(EventKind::Aborted), "R0UT1NG").expect("trigger"),
        )
        .expect("json");
        assert_eq!(pd["event_action"], "trigger");
        assert_eq!(pd["routing_key"], "R0UT1NG");
        assert_eq!(pd["dedup_key"], "faultline/experiment/checkout-loss");
        assert_eq!(pd["payload"]["severity"], "error");
        let resolve: serde_json::Value = serde_json::from_slice(
            &pagerduty(&event(EventKind::Recovered), "R0UT1NG").expect("resolve"),
        )
        .expect("json");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], "faultline/experiment/checkout-loss");
        assert!(pagerduty(&event(EventKind::Started), "k").is_none());
    }
}
