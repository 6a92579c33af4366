//! How guards and checks reach an HTTP endpoint (Prometheus or a service): TLS options, the
//! credentials (named by file, never written in the document), extra headers, and the request
//! method and body of HTTP probes. Validated here; the coordinator reads the files at each
//! evaluation.

use std::fmt;

use serde::Deserialize;

use super::url::HttpUrl;
use crate::fault::{join, SpecError};

/// Most extra headers one guard may send.
pub const MAX_HEADERS: usize = 32;
/// Longest request body of an HTTP probe (bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Headers the document may not set: the client sets them, or they carry credentials (which
/// come from files, see `auth`).
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "authorization",
    "proxy-authorization",
];

/// `tls:` of an https URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA(s) that sign the server's certificate; `None`: the system's roots.
    pub ca_file: Option<String>,
    /// Accept any server certificate (logged as a warning, shown in the plan).
    pub insecure_skip_verify: bool,
}

/// Credentials, read from files when the guard is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// `Authorization: Bearer <the file's content, trimmed>`.
    BearerTokenFile(String),
    /// `Authorization: Basic base64(username:<the file's content, trimmed>)`.
    Basic {
        username: String,
        password_file: String,
    },
}

/// Everything about reaching the endpoint besides its URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    pub tls: TlsOptions,
    pub auth: Option<HttpAuth>,
    /// Extra request headers, in document order.
    pub headers: Vec<(String, String)>,
}

impl HttpAccess {
    /// The parts of [`super::Guard::describe`] that are about access: ` with basic auth (user
    /// u), 2 header(s), TLS NOT VERIFIED (insecureSkipVerify)`. Never a secret.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        match &self.auth {
            None => {}
            Some(HttpAuth::BearerTokenFile(f)) => out.push_str(&format!(", bearer token from {f}")),
            Some(HttpAuth::Basic {
                username,
                password_file,
            }) => out.push_str(&format!(
                ", basic auth as {username} (password from {password_file})"
            )),
        }
        if !self.headers.is_empty() {
            let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
            out.push_str(&format!(", headers {}", names.join(", ")));
        }
        if let Some(ca) = &self.tls.ca_file {
            out.push_str(&format!(", CA {ca}"));
        }
        if self.tls.insecure_skip_verify {
            out.push_str(", TLS CERTIFICATE NOT VERIFIED (insecureSkipVerify)");
        }
        out
    }
}

/// The method of an HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
        HttpMethod::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Options => "OPTIONS",
        }
    }

    /// Whether a request body makes sense.
    pub fn takes_body(self) -> bool {
        matches!(
            self,
            HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch | HttpMethod::Delete
        )
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTls {
    pub ca_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawAuth {
    pub bearer_token_file: Option<String>,
    pub basic_auth: Option<RawBasicAuth>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawBasicAuth {
    pub username: Option<String>,
    pub password_file: Option<String>,
}

/// The access fields of a guard as written (`tls`, `auth`, `headers`).
#[derive(Debug, Clone)]
pub struct RawAccess<'a> {
    pub tls: &'a Option<RawTls>,
    pub auth: &'a Option<RawAuth>,
    pub headers: &'a Option<std::collections::BTreeMap<String, String>>,
}

/// An absolute file path without control characters.
fn file_path(path: &str, value: &str) -> Result<String, SpecError> {
    let v = value.trim();
    if !v.starts_with('/') || v.chars().any(char::is_control) || v.len() > 4096 {
        return Err(SpecError::new(
            path,
            format!("{v:?} is not an absolute file path (secrets are read from files on the coordinator's host)"),
        ));
    }
    Ok(v.to_string())
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl RawAccess<'_> {
    /// Validates the access fields of a guard whose URL is `url`; `path` is the guard type's
    /// path (`spec.guards[0].prometheus`).
    pub fn to_access(&self, path: &str, url: &HttpUrl) -> Result<HttpAccess, SpecError> {
        let mut access = HttpAccess::default();
        if let Some(t) = self.tls {
            let tp = join(path, "tls");
            if !url.https {
                return Err(SpecError::new(
                    tp,
                    "applies to https:// URLs only; the url is http://",
                ));
            }
            let insecure = t.insecure_skip_verify.unwrap_or(false);
            if insecure && t.ca_file.is_some() {
                return Err(SpecError::new(
                    tp,
                    "give caFile (verify against this CA) or insecureSkipVerify: true (verify nothing), not both",
                ));
            }
            access.tls = TlsOptions {
                ca_file: t
                    .ca_file
                    .as_deref()
                    .map(|f| file_path(&join(&tp, "caFile"), f))
                    .transpose()?,
                insecure_skip_verify: insecure,
            };
        }
        if let Some(a) = self.auth {
            let ap = join(path, "auth");
            access.auth = Some(match (&a.bearer_token_file, &a.basic_auth) {
                (Some(f), None) => {
                    HttpAuth::BearerTokenFile(file_path(&join(&ap, "bearerTokenFile"), f)?)
                }
                (None, Some(b)) => {
                    let bp = join(&ap, "basicAuth");
                    let username = b.username.as_deref().map(str::trim).unwrap_or("");
                    if username.is_empty()
                        || username.contains(':')
                        || username.chars().any(char::is_control)
                    {
                        return Err(SpecError::new(
                            join(&bp, "username"),
                            "is required: a user name without ':' or control characters",
                        ));
                    }
                    let password_file = b.password_file.as_deref().ok_or_else(|| {
                        SpecError::new(
                            join(&bp, "passwordFile"),
                            "is required: the file holding the password (never the password itself)",
                        )
                    })?;
                    HttpAuth::Basic {
                        username: username.to_string(),
                        password_file: file_path(&join(&bp, "passwordFile"), password_file)?,
                    }
                }
                _ => return Err(SpecError::new(
                    ap,
                    "needs exactly one of bearerTokenFile or basicAuth {username, passwordFile}",
                )),
            });
        }
        if let Some(h) = self.headers {
            let hp = join(path, "headers");
            if h.len() > MAX_HEADERS {
                return Err(SpecError::new(
                    hp,
                    format!("has {} headers; give at most {MAX_HEADERS}", h.len()),
                ));
            }
            for (name, value) in h {
                let at = join(&hp, name);
                if name.is_empty() || !name.chars().all(token_char) {
                    return Err(SpecError::new(at, "is not a valid header name"));
                }
                if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(SpecError::new(
                        at,
                        "may not be set here: the client sets it, and credentials come from auth.bearerTokenFile or auth.basicAuth (files), never from the document",
                    ));
                }
                if value.chars().any(|c| c.is_control() && c != '\t') || value.len() > 8192 {
                    return Err(SpecError::new(
                        at,
                        "must be at most 8192 bytes without control characters",
                    ));
                }
                access.headers.push((name.clone(), value.clone()));
            }
        }
        Ok(access)
    }
}

/// Validates an HTTP probe's `method` and `body`.
pub fn method_and_body(
    path: &str,
    method: &Option<String>,
    body: &Option<String>,
) -> Result<(HttpMethod, Option<String>), SpecError> {
    let method = match method.as_deref().map(str::trim) {
        None => HttpMethod::Get,
        Some(m) => HttpMethod::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(m))
            .ok_or_else(|| {
                let all: Vec<&str> = HttpMethod::ALL.iter().map(|m| m.as_str()).collect();
                SpecError::new(
                    join(path, "method"),
                    format!("{m:?} is not allowed; use one of {}", all.join(", ")),
                )
            })?,
    };
    if let Some(b) = body {
        if !method.takes_body() {
            return Err(SpecError::new(
                join(path, "body"),
                format!("a {method} request takes no body; use POST, PUT, PATCH or DELETE"),
            ));
        }
        if b.len() > MAX_BODY_BYTES {
            return Err(SpecError::new(
                join(path, "body"),
                format!("is {} bytes; at most {MAX_BODY_BYTES}", b.len()),
            ));
        }
    }
    Ok((method, body.clone()))
}
