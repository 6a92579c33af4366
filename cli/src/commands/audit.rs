//! `faultctl audit`: the coordinator's audit log of mutations, newest first.

use faultline_proto::pb;
use serde_json::Value;

use super::pretty;
use crate::args::OutputFormat;
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::json;
use crate::table::Table;

pub async fn show(target: &Target, limit: u32, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let response = target
        .call(client.audit_log(pb::AuditLogRequest { limit }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&Value::Array(
            response.entries.iter().map(json::audit_entry).collect(),
        )),
        OutputFormat::Table => Ok(render(&response.entries)),
    }
}

pub fn render(entries: &[pb::AuditEntry]) -> String {
    if entries.is_empty() {
        return "the audit log is empty\n".into();
    }
    let mut table = Table::new(&["TIME", "IDENTITY", "ACTION", "ALLOWED", "DETAIL"]);
    for e in entries {
        table.row([
            format::timestamp(e.at_unix_ms),
            e.identity.clone(),
            e.action.clone(),
            if e.allowed { "yes" } else { "no" }.to_string(),
            e.detail.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_not_allowed() {
        let text = render(&[pb::AuditEntry {
            at_unix_ms: 1_700_000_000_000,
            identity: "viewer/viewer".into(),
            action: "Fleet.HaltAll".into(),
            detail: "refused: requires role admin".into(),
            allowed: false,
        }]);
        assert_eq!(
            text,
            "TIME                  IDENTITY       ACTION         ALLOWED  DETAIL\n\
             2023-11-14T22:13:20Z  viewer/viewer  Fleet.HaltAll  no       refused: requires role admin\n"
        );
    }
}
