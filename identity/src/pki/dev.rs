//! The development CA layout of `faultctl certs init`: the CA, the coordinator's server
//! certificate, role certificates for people and tools, and one certificate per agent, in the
//! layout that `--certs-dir` reads (see [`crate::tls::CertPaths::in_dir`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use faultline_core::{Identity, NodeName, Role};

use super::{io_err, parse_san, write_file, Ca, PkiError, Validity};

/// What `faultctl certs init` should produce.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Extra DNS names and IPs for the coordinator's certificate (localhost, 127.0.0.1 and ::1
    /// are always included).
    pub sans: Vec<String>,
    /// Node names that get an agent certificate.
    pub agents: Vec<String>,
    /// Validity of every certificate issued, in days.
    pub days: i64,
    /// Regenerate everything, including the CA (otherwise existing files are kept).
    pub force: bool,
}

/// One file written or kept by [`init_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitFile {
    pub path: PathBuf,
    pub created: bool,
}

/// Writes the CA and every certificate into `dir`. Existing files are kept unless `force`, so
/// running it again with more `agents` only adds their certificates, signed by the same CA.
/// Private keys are written 0600, certificates 0644.
pub fn init_dir(dir: &Path, opts: &InitOptions) -> Result<Vec<InitFile>, PkiError> {
    for a in &opts.agents {
        a.parse::<NodeName>()
            .map_err(|e| PkiError::Agent(format!("{a:?} in --agents: {e}")))?;
    }
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for s in &opts.sans {
        parse_san(s)?;
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err(dir))?;
    let validity = Validity::days(opts.days);
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let mut out = Vec::new();
    let ca = if !opts.force && ca_cert.exists() && ca_key.exists() {
        out.push(InitFile {
            path: ca_cert.clone(),
            created: false,
        });
        out.push(InitFile {
            path: ca_key.clone(),
            created: false,
        });
        Ca::load(&ca_cert, &ca_key)?
    } else {
        let ca = Ca::generate(
            "Faultline development CA",
            Validity::days(opts.days.max(1) * 2),
        )?;
        write_file(&ca_cert, ca.cert_pem(), false)?;
        write_file(&ca_key, ca.key_pem(), true)?;
        out.push(InitFile {
            path: ca_cert,
            created: true,
        });
        out.push(InitFile {
            path: ca_key,
            created: true,
        });
        ca
    };
    let mut wanted: Vec<(String, Identity, Vec<String>)> = vec![
        (
            "coordinator".into(),
            Identity::new(Role::Coordinator, "coordinator"),
            sans,
        ),
        ("admin".into(), Identity::new(Role::Admin, "admin"), vec![]),
        (
            "operator".into(),
            Identity::new(Role::Operator, "operator"),
            vec![],
        ),
        (
            "viewer".into(),
            Identity::new(Role::Viewer, "viewer"),
            vec![],
        ),
    ];
    for a in &opts.agents {
        wanted.push((
            format!("agent-{a}"),
            Identity::new(Role::Agent, a.as_str()),
            vec![],
        ));
    }
    for (stem, identity, sans) in wanted {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        if !opts.force && cert.exists() && key.exists() {
            out.push(InitFile {
                path: cert,
                created: false,
            });
            out.push(InitFile {
                path: key,
                created: false,
            });
            continue;
        }
        let issued = ca.issue(&identity, &sans, validity)?;
        // Key first: a certificate on disk always has its key beside it.
        write_file(&key, &issued.key_pem, true)?;
        write_file(&cert, &issued.cert_pem, false)?;
        out.push(InitFile {
            path: cert,
            created: true,
        });
        out.push(InitFile {
            path: key,
            created: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spiffe;

    #[test]
    fn init_writes_layout_with_modes_and_identities() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            sans: vec!["coord.example".into(), "10.1.2.3".into()],
            agents: vec!["node-a".into()],
            days: 30,
            force: false,
        };
        let files = init_dir(dir.path(), &opts).expect("init");
        assert!(files.iter().all(|f| f.created));
        for stem in ["coordinator", "admin", "operator", "viewer", "agent-node-a"] {
            let key = dir.path().join(format!("{stem}-key.pem"));
            let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{stem} key mode");
            let cert = dir.path().join(format!("{stem}.pem"));
            let mode = fs::metadata(&cert).expect("cert").permissions().mode() & 0o777;
            assert_eq!(mode, 0o644, "{stem} cert mode");
        }
        let mode = fs::metadata(dir.path().join("ca-key.pem"))
            .expect("ca key")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let id = spiffe::identity_of_file(&dir.path().join("agent-node-a.pem")).expect("identity");
        assert_eq!(id, Identity::new(Role::Agent, "node-a"));
        let id = spiffe::identity_of_file(&dir.path().join("operator.pem")).expect("identity");
        assert_eq!(id, Identity::new(Role::Operator, "operator"));

        // Running again with another agent keeps the CA and adds only the new files.
        let ca_before = fs::read(dir.path().join("ca.pem")).expect("ca");
        let opts = InitOptions {
            agents: vec!["node-a".into(), "node-b".into()],
            ..opts
        };
        let files = init_dir(dir.path(), &opts).expect("again");
        let created: Vec<_> = files
            .iter()
            .filter(|f| f.created)
            .map(|f| f.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            created,
            vec![
                Some("agent-node-b.pem".to_string()),
                Some("agent-node-b-key.pem".to_string())
            ]
        );
        assert_eq!(fs::read(dir.path().join("ca.pem")).expect("ca"), ca_before);
    }

    #[test]
    fn only_the_coordinator_may_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            sans: vec![],
            agents: vec!["node-a".into()],
            days: 1,
            force: false,
        };
        init_dir(dir.path(), &opts).expect("init");
        let usage =
            |stem: &str| crate::test_util::key_usage(&dir.path().join(format!("{stem}.pem")));
        assert_eq!(
            usage("coordinator"),
            (false, true),
            "coordinator: serverAuth only"
        );
        for stem in ["admin", "operator", "viewer", "agent-node-a"] {
            assert_eq!(usage(stem), (true, false), "{stem}: clientAuth only");
        }
    }

    #[test]
    fn bad_names_are_refused_before_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("certs");
        let opts = InitOptions {
            sans: vec![],
            agents: vec!["Bad_Name".into()],
            days: 1,
            force: false,
        };
        let err = init_dir(&target, &opts).expect_err("bad agent");
        assert!(
            err.to_string().contains("\"Bad_Name\" in --agents"),
            "{err}"
        );
        assert!(!target.exists(), "nothing written");
        let opts = InitOptions {
            sans: vec!["not a name".into()],
            agents: vec![],
            days: 1,
            force: false,
        };
        let err = init_dir(&target, &opts).expect_err("bad san");
        assert!(err.to_string().contains("--san"), "{err}");
    }
}
