//! The real `faultline-agent` binary: bad flags exit 2 with the flag named, and `--help`.

mod common;

use common::*;

#[test]
fn bad_labels_exit_2_naming_the_flag() {
    let s = setup();
    let (status, err) = run_to_exit(&s.args(&["--labels", "zone=a,bad label"]));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--labels"), "{err}");
    assert!(
        err.contains("\"bad label\" is not of the form key=value"),
        "{err}"
    );
}

#[test]
fn certificate_for_another_node_exits_2() {
    let s = setup();
    let cert = s.certs.join("agent-node-b.pem");
    let key = s.certs.join("agent-node-b-key.pem");
    let (status, err) = run_to_exit(&s.args(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]));
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "error: certificate {} is for agent/node-b, but --node-name is node-a",
            cert.display()
        )
    );
}

#[test]
fn telemetry_interval_out_of_range_exits_2() {
    let s = setup();
    for bad in ["0s", "61s", "soon"] {
        let (status, err) = run_to_exit(&s.args(&["--telemetry-interval", bad]));
        assert_eq!(status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--telemetry-interval"), "{bad}: {err}");
    }
    let (_, err) = run_to_exit(&s.args(&["--telemetry-interval", "0s"]));
    assert!(
        err.contains("outside the allowed range 100ms..=1m"),
        "{err}"
    );
}

#[test]
fn other_bad_flags_exit_2_naming_the_flag() {
    let s = setup();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--node-name", "Node_A"], &["--node-name", "lowercase"]),
        (
            &["--coordinator", "http://127.0.0.1:1"],
            &["--coordinator", "https://"],
        ),
        (
            &["--metrics-listen", "everywhere"],
            &["--metrics-listen", "ADDR:PORT"],
        ),
        (&["--log-format", "xml"], &["--log-format", "text", "json"]),
    ];
    for (extra, want) in cases {
        let (status, err) = run_to_exit(&s.args(extra));
        assert_eq!(status.code(), Some(2), "{extra:?}: {err}");
        for w in *want {
            assert!(err.contains(w), "{extra:?}: {w:?} missing in {err}");
        }
    }
    // No certificates at all.
    let (status, err) = run_to_exit(&[
        "--coordinator",
        &s.coordinator,
        "--node-name",
        "node-a",
        "--state-dir",
        s.state.to_str().expect("utf-8"),
    ]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--certs-dir") && err.contains("agent-node-a.pem"),
        "{err}"
    );
}

#[test]
fn help_explains_each_flag_with_default_and_range() {
    let out = command(&["--help"]).output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--coordinator",
        "--node-name",
        "$NODE_NAME",
        "--labels",
        "--state-dir",
        "/var/lib/faultline",
        "--metrics-listen",
        "0.0.0.0:9465",
        "--certs-dir",
        "--telemetry-interval",
        "100ms..=60s",
        "[default: 1s]",
        "--tls-cert",
        "--tls-key",
        "--ca",
        "--log-format",
        "FAULTLINE_COORDINATOR",
    ] {
        assert!(help.contains(want), "{want:?} missing from --help:\n{help}");
    }
}
