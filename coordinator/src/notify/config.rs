//! `[[notifications]]` of the coordinator's configuration file: where run events go, validated
//! with errors that name the field (`notifications[1].kind`) and the allowed values.

use std::path::PathBuf;

use faultline_core::experiment::HttpUrl;
use serde::Deserialize;

use super::EventKind;
use crate::config::ConfigError;

/// Most `[[notifications]]` entries.
pub const MAX_SINKS: usize = 32;
/// PagerDuty's Events API v2 endpoint, the default `url` of `kind = "pagerduty"`.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Where notifications are sent, and in which format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// JSON body signed with `X-Faultline-Signature: sha256=<hex HMAC-SHA256>`.
    Webhook,
    /// A Slack incoming webhook (`{"text": ...}`).
    Slack,
    /// PagerDuty Events API v2: trigger on abort and failure, resolve on recovery.
    PagerDuty,
}

impl SinkKind {
    pub const ALL: [SinkKind; 3] = [SinkKind::Webhook, SinkKind::Slack, SinkKind::PagerDuty];

    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::PagerDuty => "pagerduty",
        }
    }
}

/// One `[[notifications]]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotification {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub events: Option<Vec<String>>,
    /// PEM CA file for an https `url` signed by a private CA (default: the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// One validated destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub kind: SinkKind,
    pub url: HttpUrl,
    /// The HMAC key (webhook) or the routing key (PagerDuty), read at each delivery.
    pub secret_file: Option<PathBuf>,
    pub events: Vec<EventKind>,
    pub ca_file: Option<PathBuf>,
}

fn field(index: usize, name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: format!("notifications[{index}].{name}"),
        message: message.into(),
    }
}

/// Validates every `[[notifications]]` entry.
pub fn sinks(raw: Vec<RawNotification>) -> Result<Vec<Sink>, ConfigError> {
    if raw.len() > MAX_SINKS {
        return Err(ConfigError::Field {
            field: "notifications".into(),
            message: format!("has {} entries; give at most {MAX_SINKS}", raw.len()),
        });
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| sink(i, r))
        .collect()
}

fn sink(i: usize, r: RawNotification) -> Result<Sink, ConfigError> {
    let kinds: Vec<&str> = SinkKind::ALL.iter().map(|k| k.as_str()).collect();
    let kind = match r.kind.as_deref() {
        None => {
            return Err(field(
                i,
                "kind",
                format!("is required: one of {}", kinds.join(", ")),
            ))
        }
        Some(k) => SinkKind::ALL
            .into_iter()
            .find(|x| x.as_str() == k)
            .ok_or_else(|| {
                field(
                    i,
                    "kind",
                    format!("{k:?} is not allowed; use one of {}", kinds.join(", ")),
                )
            })?,
    };
    let url_text = match (r.url.as_deref(), kind) {
        (Some(u), _) => u,
        (None, SinkKind::PagerDuty) => PAGERDUTY_URL,
        (None, _) => {
            return Err(field(
                i,
                "url",
                "is required: the http:// or https:// URL to POST to",
            ))
        }
    };
    let url = HttpUrl::parse(url_text).map_err(|e| field(i, "url", e))?;
    if r.ca_file.is_some() && !url.https {
        return Err(field(i, "ca_file", "applies to https:// URLs only"));
    }
    match (kind, &r.secret_file) {
        (SinkKind::Webhook, None) => {
            return Err(field(
                i,
                "secret_file",
                "is required for kind = \"webhook\": the file holding the HMAC-SHA256 key that signs each body (X-Faultline-Signature)",
            ))
        }
        (SinkKind::PagerDuty, None) => {
            return Err(field(
                i,
                "secret_file",
                "is required for kind = \"pagerduty\": the file holding the Events API v2 routing key",
            ))
        }
        (SinkKind::Slack, Some(_)) => {
            return Err(field(
                i,
                "secret_file",
                "is not used by kind = \"slack\" (the incoming-webhook URL is the credential); leave it out",
            ))
        }
        _ => {}
    }
    if let Some(f) = &r.secret_file {
        if !f.is_absolute() {
            return Err(field(
                i,
                "secret_file",
                format!("{} is not an absolute path", f.display()),
            ));
        }
    }
    let names: Vec<&str> = EventKind::CONFIGURABLE.iter().map(|e| e.as_str()).collect();
    let events = match r.events {
        None => EventKind::CONFIGURABLE.to_vec(),
        Some(list) if list.is_empty() => {
            return Err(field(
                i,
                "events",
                format!(
                    "is empty; list any of {} (or leave it out for all)",
                    names.join(", ")
                ),
            ))
        }
        Some(list) => {
            let mut out = Vec::new();
            for (j, e) in list.iter().enumerate() {
                let ev = EventKind::CONFIGURABLE
                    .into_iter()
                    .find(|x| x.as_str() == e)
                    .ok_or_else(|| ConfigError::Field {
                        field: format!("notifications[{i}].events[{j}]"),
                        message: format!("{e:?} is not an event; use any of {}", names.join(", ")),
                    })?;
                if !out.contains(&ev) {
                    out.push(ev);
                }
            }
            out
        }
    };
    Ok(Sink {
        kind,
        url,
        secret_file: r.secret_file,
        events,
        ca_file: r.ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Sink>, String> {
        crate::config::parse_config(toml_text)
            .map(|c| c.notifications)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn valid_entries_and_defaults() {
        let s = parse(
            "[[notifications]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret_file = \"/etc/faultline/hook\"\nevents = [\"aborted\", \"hypothesis_failed\"]\n\n[[notifications]]\nkind = \"pagerduty\"\nsecret_file = \"/etc/faultline/pd\"\n",
        )
        .expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].events,
            vec![EventKind::Aborted, EventKind::HypothesisFailed]
        );
        assert_eq!(
            s[1].url.to_string(),
            "https://events.pagerduty.com:443/v2/enqueue"
        );
        assert_eq!(s[1].events.len(), 5, "all events by default");
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_values() {
        let table = [
            ("[[notifications]]\nkind = \"email\"\nurl = \"http://x/\"\n", "notifications[0].kind: \"email\" is not allowed; use one of webhook, slack, pagerduty"),
            ("[[notifications]]\nurl = \"http://x/\"\n", "notifications[0].kind: is required"),
            ("[[notifications]]\nkind = \"webhook\"\nurl = \"http://x/\"\n", "notifications[0].secret_file: is required for kind = \"webhook\""),
            ("[[notifications]]\nkind = \"slack\"\n", "notifications[0].url: is required"),
            ("[[notifications]]\nkind = \"slack\"\nurl = \"ftp://x\"\n", "notifications[0].url: \"ftp://x\" is not an http:// or https:// URL"),
            ("[[notifications]]\nkind = \"slack\"\nurl = \"https://x/\"\nevents = [\"started\", \"exploded\"]\n", "notifications[0].events[1]: \"exploded\" is not an event; use any of started, aborted, completed, failed, hypothesis_failed"),
            ("[[notifications]]\nkind = \"slack\"\nurl = \"https://x/\"\nsecret_file = \"/s\"\n", "notifications[0].secret_file: is not used by kind = \"slack\""),
            ("[[notifications]]\nkind = \"webhook\"\nurl = \"http://x/\"\nsecret_file = \"rel\"\n", "notifications[0].secret_file: rel is not an absolute path"),
            ("[[notifications]]\nkind = \"slack\"\nurl = \"https://x/\"\nretries = 3\n", "unknown field `retries`"),
        ];
        for (text, want) in table {
            let e = parse(text).expect_err(text);
            assert!(e.contains(want), "{text}\nwant: {want}\ngot:  {e}");
        }
    }
}
