use super::*;

/// Set in the child process of `entries_survive_a_crash`: the journal directory to write into
/// before dying by SIGKILL.
const CRASH_DIR_ENV: &str = "FAULTLINE_TEST_JOURNAL_CRASH_DIR";

fn entry(id: &str, state: EntryState) -> Entry {
    Entry {
        fault_id: id.into(),
        experiment_id: "exp-1".into(),
        kind: "cpu".into(),
        spec: vec![0x6a, 0x04, 0x08, 0x32, 0x10, 0x01],
        recipe: Recipe {
            kind: "cpu".into(),
            data: serde_json::json!({"workers": [{"pid": 4242, "start": 99}]}),
        },
        state,
        applied_unix_ms: 1_700_000_000_000,
        deadline_unix_ms: 1_700_000_060_000,
        last_error: String::new(),
        revert_reason: None,
    }
}

#[test]
fn put_replace_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(&dir.path().join("journal")).expect("open");
    assert!(j.is_empty());
    let planned = entry("f-1", EntryState::Planned);
    j.put(&planned).expect("put");
    assert_eq!(j.get("f-1").expect("get"), Some(planned.clone()));
    let mut applied = planned.clone();
    applied.state = EntryState::Applied;
    j.put(&applied).expect("replace");
    j.put(&entry("f-2", EntryState::RevertFailed))
        .expect("put 2");
    let (all, bad) = j.load().expect("load");
    assert!(bad.is_empty());
    assert_eq!(
        all.iter()
            .map(|e| (e.fault_id.as_str(), e.state))
            .collect::<Vec<_>>(),
        vec![
            ("f-1", EntryState::Applied),
            ("f-2", EntryState::RevertFailed)
        ]
    );
    j.remove("f-1").expect("remove");
    j.remove("never-there")
        .expect("removing a missing entry is fine");
    assert_eq!(j.len(), 1);
    assert_eq!(j.get("f-1").expect("get"), None);
}

#[test]
fn entries_are_json_with_the_spec_in_hex() {
    let text = serde_json::to_string(&entry("f-1", EntryState::Planned)).expect("json");
    assert!(text.contains(r#""spec":"6a0408321001""#), "{text}");
    assert!(text.contains(r#""state":"planned""#), "{text}");
    let back: Entry = serde_json::from_str(&text).expect("decode");
    assert_eq!(back.spec, vec![0x6a, 0x04, 0x08, 0x32, 0x10, 0x01]);
}

#[test]
fn unreadable_entries_are_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::open(&dir.path().join("journal")).expect("open");
    j.put(&entry("good", EntryState::Applied)).expect("put");
    j.tree.insert("bad", b"{not json".to_vec()).expect("raw");
    let (all, bad) = j.load().expect("load");
    assert_eq!(all.len(), 1);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].key, "bad");
}

/// The child side of `entries_survive_a_crash`: writes, then SIGKILLs itself (no destructor, no
/// clean close). A no-op when run as an ordinary test.
#[test]
fn crash_child_writes_then_dies() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let j = Journal::open(Path::new(&dir)).expect("open in child");
    j.put(&entry("f-1", EntryState::Planned)).expect("put 1");
    j.put(&entry("f-2", EntryState::Applied)).expect("put 2");
    j.put(&entry("f-3", EntryState::Applied)).expect("put 3");
    j.remove("f-3").expect("remove 3");
    let mut f1 = entry("f-1", EntryState::Applied);
    f1.applied_unix_ms = 42;
    j.put(&f1).expect("replace 1");
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL self");
    unreachable!("SIGKILL did not kill the child");
}

#[test]
fn entries_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal");
    let exe = std::env::current_exe().expect("test binary");
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "engine::journal::tests::crash_child_writes_then_dies",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the crashing child");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "the child must die by SIGKILL after writing: {status}"
    );
    let j = Journal::open(&path).expect("reopen after the crash");
    let (all, bad) = j.load().expect("load");
    assert!(bad.is_empty(), "{bad:?}");
    let got: Vec<(&str, EntryState, i64)> = all
        .iter()
        .map(|e| (e.fault_id.as_str(), e.state, e.applied_unix_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            ("f-1", EntryState::Applied, 42),
            ("f-2", EntryState::Applied, 1_700_000_000_000)
        ]
    );
}
