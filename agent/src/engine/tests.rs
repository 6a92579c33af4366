use super::ops::check_fault_id;
use super::revert::reason_from_label;
use crate::faults::{reason_label, RevertReason};

#[test]
fn fault_ids_are_plain_artifact_names() {
    for ok in ["f-1", "exp-7-node-a-0", &"a".repeat(64)] {
        assert_eq!(check_fault_id(ok), Ok(()), "{ok}");
    }
    for bad in ["", "F-1", "f_1", "f 1", "f/1", "f.1", &"a".repeat(65)] {
        let err = check_fault_id(bad).expect_err(bad);
        assert!(err.starts_with("fault_id: "), "{err}");
        assert!(
            err.ends_with("must be 1..=64 characters of a-z, 0-9 and '-'"),
            "{err}"
        );
    }
}

#[test]
fn journaled_reason_labels_round_trip() {
    for r in [
        RevertReason::Deadline,
        RevertReason::Lease,
        RevertReason::Abort,
        RevertReason::Shutdown,
        RevertReason::Recovery,
    ] {
        assert_eq!(reason_from_label(reason_label(r)), r);
    }
    assert_eq!(reason_from_label("failed"), RevertReason::Unspecified);
}
