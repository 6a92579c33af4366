//! `faultctl certs init`: validates the flags, writes the certs layout with
//! `faultline_identity::pki::init_dir`, and tells the operator how to use the files.

use std::path::Path;

use faultline_core::NodeName;
use faultline_identity::pki::{self, InitFile, InitOptions};
use serde_json::json;

use super::pretty;
use crate::args::{CertsInitArgs, OutputFormat};
use crate::error::CliError;

pub fn init(
    args: &CertsInitArgs,
    default_dir: &Path,
    output: OutputFormat,
) -> Result<String, CliError> {
    let dir = args.dir.as_deref().unwrap_or(default_dir);
    let agents = node_names(&args.agents)?;
    let sans = san_list(&args.sans)?;
    let opts = InitOptions {
        sans: sans.clone(),
        agents: agents.clone(),
        days: args.days,
        force: args.force,
    };
    if args.kubernetes {
        check_namespace(&args.namespace)?;
    }
    let files = pki::init_dir(dir, &opts)?;
    if args.kubernetes {
        return kubernetes_secrets(dir, &args.namespace);
    }
    match output {
        OutputFormat::Json => pretty(&json!({
            "dir": dir.display().to_string(),
            "files": files.iter().map(|f| json!({
                "path": f.path.display().to_string(),
                "created": f.created,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => Ok(render(dir, &files, &agents, &sans)),
    }
}

fn check_namespace(ns: &str) -> Result<(), CliError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage {
            flag: "--namespace",
            reason: format!(
                "{ns:?} is not a namespace: use 1..=63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        })
    }
}

/// The Secrets `daemonset/manifests` mounts, as one YAML stream for `kubectl apply -f -`.
fn kubernetes_secrets(dir: &Path, namespace: &str) -> Result<String, CliError> {
    use base64::Engine as _;
    let read = |name: &str| -> Result<(String, String), CliError> {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|source| {
            CliError::Pki(pki::PkiError::Io {
                path: path.clone(),
                source,
            })
        })?;
        Ok((
            name.to_string(),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ))
    };
    let secret = |name: &str, files: &[(String, String)]| {
        let mut out = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: faultline\ntype: Opaque\ndata:\n"
        );
        for (file, b64) in files {
            out.push_str(&format!("  {file}: {b64}\n"));
        }
        out
    };
    let coordinator = [
        read("ca.pem")?,
        read("coordinator.pem")?,
        read("coordinator-key.pem")?,
    ];
    // No agent keys: agents make theirs on their nodes and enroll with their pod's
    // ServiceAccount token. The coordinator issues their certificates with this CA.
    let (_, ca) = read("ca.pem")?;
    let (_, ca_key) = read("ca-key.pem")?;
    let issuer = [("tls.crt".to_string(), ca), ("tls.key".to_string(), ca_key)];
    Ok(format!(
        "# Faultline TLS Secrets for daemonset/manifests (from {}).\n# Apply: faultctl certs init ... --kubernetes | kubectl apply -f -\n{}---\n{}",
        dir.display(),
        secret("faultline-coordinator-tls", &coordinator),
        secret("faultline-issuer", &issuer)
    ))
}

/// Validated, de-duplicated `--agents` entries, in the order given.
fn node_names(raw: &[String]) -> Result<Vec<String>, CliError> {
    let mut out: Vec<String> = Vec::new();
    for name in raw.iter().map(|n| n.trim()) {
        if name.is_empty() {
            return Err(CliError::Usage {
                flag: "--agents",
                reason: "empty node name in the list; use --agents a,b,c".into(),
            });
        }
        let node: NodeName = name.parse().map_err(|e| CliError::Usage {
            flag: "--agents",
            reason: format!("{e}"),
        })?;
        if !out.iter().any(|n| n == node.as_str()) {
            out.push(node.as_str().to_string());
        }
    }
    Ok(out)
}

fn san_list(raw: &[String]) -> Result<Vec<String>, CliError> {
    raw.iter()
        .map(|s| s.trim())
        .map(|s| {
            if s.is_empty() {
                Err(CliError::Usage {
                    flag: "--san",
                    reason: "empty name in the list; use --san coord.example.com,10.0.0.5".into(),
                })
            } else {
                Ok(s.to_string())
            }
        })
        .collect()
}

fn render(dir: &Path, files: &[InitFile], agents: &[String], sans: &[String]) -> String {
    let mut out = String::new();
    for f in files {
        let state = if f.created { "created" } else { "kept" };
        out.push_str(&format!("{state:<8} {}\n", f.path.display()));
    }
    let d = dir.display();
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    names.extend(sans.iter().map(String::as_str));
    out.push_str(&format!(
        "\nPrivate keys (*-key.pem) are 0600; keep ca-key.pem away from the nodes.\n\
         Use these files with:\n  \
         faultline-coordinator --certs-dir {d}   (coordinator.pem, valid for {})\n",
        names.join(", ")
    ));
    match agents.first() {
        Some(first) => out.push_str(&format!(
            "  faultline-agent --certs-dir {d} --node-name {first} --coordinator https://HOST:7443   \
             (agent-<node-name>.pem)\n"
        )),
        None => out.push_str(&format!(
            "  agents need their own certificate: faultctl certs init --dir {d} --agents NODE,...\n"
        )),
    }
    out.push_str(&format!(
        "  faultctl --certs-dir {d} agents list   (admin.pem; --identity operator|viewer for the others)\n"
    ));
    let coordinator_kept = files
        .iter()
        .any(|f| !f.created && f.path.file_name().is_some_and(|n| n == "coordinator.pem"));
    if coordinator_kept && !sans.is_empty() {
        out.push_str(
            "note: coordinator.pem already existed and was kept, so --san did not change it; \
             rerun with --force to reissue everything (agents then need the new files).\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_validated_trimmed_and_deduplicated() {
        let names = node_names(&["a".into(), " b ".into(), "a".into()]).expect("valid");
        assert_eq!(names, ["a", "b"]);
        let e = node_names(&["Bad_Name".into()]).expect_err("invalid");
        let text = e.to_string();
        assert!(
            text.starts_with("--agents: node name \"Bad_Name\" is invalid"),
            "{text}"
        );
        let e = node_names(&["a".into(), "".into()]).expect_err("empty");
        assert!(
            e.to_string().starts_with("--agents: empty node name"),
            "{e}"
        );
    }

    #[test]
    fn kept_coordinator_with_new_sans_gets_a_note() {
        let files = vec![InitFile {
            path: Path::new("/d/coordinator.pem").to_path_buf(),
            created: false,
        }];
        let text = render(Path::new("/d"), &files, &[], &["coord.example".into()]);
        assert!(text.starts_with("kept     /d/coordinator.pem\n"), "{text}");
        assert!(text.contains("valid for localhost, 127.0.0.1, ::1, coord.example"));
        assert!(text.contains("--san did not change it"), "{text}");
        let text = render(Path::new("/d"), &files, &["n1".into()], &[]);
        assert!(!text.contains("--san did not change it"), "{text}");
        assert!(text.contains("--node-name n1"), "{text}");
    }
}
