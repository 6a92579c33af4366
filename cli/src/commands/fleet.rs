//! `faultctl policy`, `halt` and `resume`: the fleet-wide switches.

use faultline_proto::pb;
use serde_json::json;

use super::pretty;
use crate::args::OutputFormat;
use crate::client::Target;
use crate::error::CliError;
use crate::format;
use crate::json;
use crate::table::Table;

pub async fn policy(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let policy = target
        .call(client.get_policy(pb::GetPolicyRequest {}))
        .await?;
    match output {
        OutputFormat::Json => pretty(&json::policy(&policy)),
        OutputFormat::Table => Ok(render_policy(&policy)),
    }
}

pub fn render_policy(p: &pb::Policy) -> String {
    let halted = if p.halted {
        format!("yes: {}", p.halted_reason)
    } else {
        "no".into()
    };
    let kinds = if p.allowed_fault_kinds.is_empty() {
        "-".to_string()
    } else {
        p.allowed_fault_kinds.join(", ")
    };
    let mut protected: Vec<String> = p
        .protected_agent_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    protected.sort();
    let protected = if protected.is_empty() {
        "-".to_string()
    } else {
        protected.join(", ")
    };
    let mut table = Table::new(&["SETTING", "VALUE"]);
    table.row(["halted".to_string(), halted]);
    table.row([
        "max fleet under fault".to_string(),
        format!("{}%", p.max_fleet_percent_under_fault),
    ]);
    table.row([
        "max concurrent experiments".to_string(),
        p.max_concurrent_experiments.to_string(),
    ]);
    table.row([
        "max experiment duration".to_string(),
        format::duration_ms(p.max_duration_ms),
    ]);
    table.row(["allowed fault kinds".to_string(), kinds]);
    table.row(["protected agent labels".to_string(), protected]);
    table.row([
        "protected namespaces".to_string(),
        if p.protected_namespaces.is_empty() {
            "-".to_string()
        } else {
            p.protected_namespaces.join(", ")
        },
    ]);
    table.row([
        "max namespace under fault".to_string(),
        // 0 is outside 1..=100: a coordinator that predates pod targets.
        if p.max_pod_percent_per_namespace > 0.0 {
            format!("{}% of its matching pods", p.max_pod_percent_per_namespace)
        } else {
            "-".to_string()
        },
    ]);
    table.row(["agent lease".to_string(), format::duration_ms(p.lease_ms)]);
    table.render()
}

pub async fn halt(target: &Target, reason: &str, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let r = target
        .call(client.halt_all(pb::HaltAllRequest {
            reason: reason.to_string(),
        }))
        .await?;
    match output {
        OutputFormat::Json => pretty(&json!({
            "halted": true,
            "agents_signalled": r.agents_signalled,
            "experiments_aborted": r.experiments_aborted,
        })),
        OutputFormat::Table => Ok(format!(
            "fleet halted: revert-all sent to {} connected agent(s), {} experiment(s) aborted.\n\
             New experiments are refused until `faultctl resume`.\n",
            r.agents_signalled, r.experiments_aborted
        )),
    }
}

pub async fn resume(target: &Target, output: OutputFormat) -> Result<String, CliError> {
    let mut client = target.fleet().await?;
    let r = target.call(client.resume(pb::ResumeRequest {})).await?;
    match output {
        OutputFormat::Json => pretty(&json!({ "was_halted": r.was_halted })),
        OutputFormat::Table if r.was_halted => {
            Ok("fleet resumed: experiments may run again.\n".into())
        }
        OutputFormat::Table => Ok("the fleet was not halted; nothing changed.\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_reads_as_settings() {
        let p = pb::Policy {
            max_fleet_percent_under_fault: 50.0,
            max_concurrent_experiments: 5,
            allowed_fault_kinds: vec!["network".into(), "cpu".into()],
            max_duration_ms: 3_600_000,
            protected_agent_labels: [("faultline.dev/protected".to_string(), "true".to_string())]
                .into_iter()
                .collect(),
            halted: true,
            halted_reason: "SLO breach".into(),
            lease_ms: 5_000,
            protected_namespaces: vec!["kube-system".into(), "faultline".into()],
            max_pod_percent_per_namespace: 25.0,
        };
        let text = render_policy(&p);
        assert!(
            text.contains("halted                      yes: SLO breach\n"),
            "{text}"
        );
        assert!(text.contains("max fleet under fault       50%\n"), "{text}");
        assert!(text.contains("max experiment duration     1h\n"), "{text}");
        assert!(
            text.contains("allowed fault kinds         network, cpu\n"),
            "{text}"
        );
        assert!(text.contains("faultline.dev/protected=true"), "{text}");
        assert!(text.contains("agent lease                 5s\n"), "{text}");
        assert!(
            text.contains("protected namespaces        kube-system, faultline\n"),
            "{text}"
        );
        assert!(
            text.contains("max namespace under fault   25% of its matching pods\n"),
            "{text}"
        );
    }
}
