//! `faultctl tokens create|list|revoke` and `faultctl agents revoke`: how hosts get an agent
//! identity, and how one is taken away.

use faultline_proto::pb;
use serde_json::{json, Value};

use super::pretty;
use crate::args::{CreateTokenArgs, OutputFormat};
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::table::Table;

fn info_json(t: &pb::TokenInfo) -> Value {
    let labels: serde_json::Map<String, Value> = t
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": t.id,
        "description": t.description,
        "labels": labels,
        "created_by": t.created_by,
        "created_unix_ms": t.created_unix_ms,
        "expires_unix_ms": t.expires_unix_ms,
        "uses": t.uses,
        "used": t.used,
        "revoked": t.revoked,
        "nodes": t.nodes,
    })
}

fn labels_text(t: &pb::TokenInfo) -> String {
    let mut l: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    l.sort();
    if l.is_empty() {
        "-".into()
    } else {
        l.join(",")
    }
}

pub async fn create(
    target: &Target,
    args: &CreateTokenArgs,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.tokens().await?;
    let r = target
        .call(client.create(pb::CreateTokenRequest {
            ttl_ms: args.ttl.as_millis() as u64,
            uses: args.uses,
            labels: args.labels.0.clone().into_iter().collect(),
            description: args.description.clone(),
        }))
        .await?;
    let info = r.info.unwrap_or_default();
    match output {
        OutputFormat::Json => pretty(&json!({ "token": r.token, "info": info_json(&info) })),
        OutputFormat::Table => Ok(format!(
            "{}\n\njoin token {} (shown once; the coordinator keeps only its hash): {} use(s), \
             expires {}, labels {}.\nOn the host: faultline-agent --coordinator {} --ca ca.pem \
             --join-token-file FILE (the token in FILE, mode 0600)\n",
            r.token,
            info.id,
            info.uses,
            format::timestamp(info.expires_unix_ms),
            labels_text(&info),
            target.url
        )),
    }
}

pub async fn list(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.tokens().await?;
    let r = target.call(client.list(pb::ListTokensRequest {})).await?;
    match output {
        OutputFormat::Json => pretty(&json!({
            "tokens": r.tokens.iter().map(info_json).collect::<Vec<_>>()
        })),
        OutputFormat::Table => {
            let now = format::now_unix_ms();
            let mut table = Table::new(&[
                "ID",
                "STATE",
                "USED",
                "EXPIRES",
                "LABELS",
                "NODES",
                "CREATED BY",
                "DESCRIPTION",
            ]);
            for t in &r.tokens {
                let state = if t.revoked {
                    "revoked"
                } else if now >= t.expires_unix_ms {
                    "expired"
                } else if t.used >= t.uses {
                    "used up"
                } else {
                    "valid"
                };
                table.row([
                    t.id.clone(),
                    state.to_string(),
                    format!("{}/{}", t.used, t.uses),
                    format::timestamp(t.expires_unix_ms),
                    labels_text(t),
                    if t.nodes.is_empty() {
                        "-".into()
                    } else {
                        t.nodes.join(",")
                    },
                    t.created_by.clone(),
                    t.description.clone(),
                ]);
            }
            Ok(table.render())
        }
    }
}

pub async fn revoke(target: &Target, id: &str, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.tokens().await?;
    let t = target
        .call(client.revoke(pb::RevokeTokenRequest { id: id.to_string() }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&info_json(&t)),
        OutputFormat::Table => Ok(format!(
            "join token {} revoked (it was used {} of {} times); no further node can enroll \
             with it.\n",
            t.id, t.used, t.uses
        )),
    }
}

pub async fn revoke_agent(
    target: &Target,
    node: &str,
    reason: &str,
    output: OutputFormat,
) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let r = target
        .call(client.revoke_agent(pb::RevokeAgentRequest {
            node_name: node.to_string(),
            reason: reason.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&json!({
            "node": node,
            "session_closed": r.session_closed,
            "revoked_serials": r.revoked_serials,
        })),
        OutputFormat::Table => Ok(format!(
            "agent {node} revoked: {}; certificates refused in the handshake until they expire \
             ({}); it may enroll again only with a new join token.\n",
            if r.session_closed {
                "its session was closed"
            } else {
                "it had no session"
            },
            if r.revoked_serials.is_empty() {
                "every one that started before now".to_string()
            } else {
                format!("serials {}", r.revoked_serials.join(", "))
            }
        )),
    }
}
