//! `faultctl agents list`: every agent the coordinator has seen, as a table or JSON.

use faultline_proto::pb;
use serde_json::Value;

use super::pretty;
use crate::args::OutputFormat;
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::json;
use crate::table::{Align, Table};

pub async fn list(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let response = target
        .call(client.list_agents(pb::ListAgentsRequest {}))
        .await?;
    let mut agents = response.agents;
    agents.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    match output {
        OutputFormat::Json => pretty(&Value::Array(agents.iter().map(json::agent).collect())),
        OutputFormat::Table => Ok(render(&agents, format::now_unix_ms())),
    }
}

/// The agents table as seen at `now_ms`.
pub fn render(agents: &[pb::AgentInfo], now_ms: i64) -> String {
    if agents.is_empty() {
        return "no agents yet: start faultline-agent with --coordinator pointing at this \
                coordinator\n"
            .into();
    }
    let mut table = Table::new(&[
        "NAME",
        "STATUS",
        "LABELS",
        "LAST SEEN",
        "CPU",
        "MEM USED",
        "LOAD1",
        "FAULTS",
        "VERSION",
    ])
    .align(4, Align::Right)
    .align(5, Align::Right)
    .align(6, Align::Right)
    .align(7, Align::Right);
    for a in agents {
        let t = a.telemetry.as_ref();
        table.row([
            a.node_name.clone(),
            if a.connected {
                "connected"
            } else {
                "disconnected"
            }
            .to_string(),
            labels(a),
            format::ago(now_ms, a.last_seen_unix_ms),
            t.map_or("-".into(), |t| format::percent(t.cpu_busy_ratio)),
            t.map_or("-".into(), |t| format::bytes(t.memory_used_bytes)),
            t.map_or("-".into(), |t| format!("{:.2}", t.load1)),
            a.held_faults.len().to_string(),
            if a.version.is_empty() {
                "-".into()
            } else {
                a.version.clone()
            },
        ]);
    }
    table.render()
}

fn labels(a: &pb::AgentInfo) -> String {
    if a.labels.is_empty() {
        return "-".into();
    }
    let mut pairs: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str, connected: bool, seen: i64, telemetry: bool) -> pb::AgentInfo {
        pb::AgentInfo {
            node_name: name.into(),
            labels: [("zone", "a"), ("role", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            version: "0.1.0".into(),
            connected,
            last_seen_unix_ms: seen,
            telemetry: telemetry.then(|| pb::Telemetry {
                cpu_busy_ratio: 0.125,
                memory_used_bytes: 3 * 1024 * 1024 * 1024,
                load1: 0.5,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn table_shows_state_labels_age_and_telemetry() {
        let now = 1_700_000_010_000;
        let text = render(
            &[
                agent("demo-a", true, now - 2_000, true),
                agent("demo-b", false, now - 120_000, false),
            ],
            now,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME    STATUS        LABELS           LAST SEEN"));
        assert!(lines[0].ends_with("VERSION"));
        let a: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            a,
            [
                "demo-a",
                "connected",
                "role=web,zone=a",
                "2s",
                "ago",
                "12.5%",
                "3.0",
                "GiB",
                "0.50",
                "0",
                "0.1.0"
            ]
        );
        let b: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            b,
            [
                "demo-b",
                "disconnected",
                "role=web,zone=a",
                "2m",
                "ago",
                "-",
                "-",
                "-",
                "0",
                "0.1.0"
            ]
        );
    }

    #[test]
    fn empty_fleet_says_what_to_do() {
        assert!(render(&[], 0).starts_with("no agents yet"));
    }
}
