//! A mutation whose audit entry cannot be written is refused and changes nothing; a halt and
//! the abort of a running experiment — reverts — go ahead and say they were not audited. The
//! store is the real sled store with audit writes failing on demand.

use faultline_core::experiment::Phase;
use faultline_core::Role;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use tonic::Code;

use crate::experiments::ops::{self, OpError};
use crate::experiments::record::TargetState;
use crate::fleet;
use crate::test_support::{document, identity, until, Agent, Rig};

fn applies(seen: &[CoordMsg]) -> usize {
    seen.iter()
        .filter(|m| matches!(m, CoordMsg::Apply(_)))
        .count()
}

fn reverts(seen: &[CoordMsg]) -> usize {
    seen.iter()
        .filter(|m| matches!(m, CoordMsg::Revert(_)))
        .count()
}

async fn audit_actions(rig: &Rig) -> Vec<(String, bool)> {
    rig.state
        .store
        .audit(100)
        .await
        .expect("audit log")
        .into_iter()
        .map(|e| (e.action, e.allowed))
        .collect()
}

fn assert_unaudited(err: &OpError, action: &str) {
    let status = err.status();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("the audit log could not be written")
            && status
                .message()
                .contains(&format!("so {action} was refused and nothing changed")),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn create_and_start_are_refused_when_their_audit_entry_cannot_be_written() {
    let rig = Rig::new().await;
    let agent = Agent::connect(&rig.state, "node-a");
    let operator = identity(Role::Operator);
    rig.faults.fail_audit(true);

    let err = ops::create(&rig.state, &operator, &document("x", "60s"), false, true)
        .await
        .expect_err("refused");
    assert_unaudited(&err, "Experiments.Create");
    assert_eq!(rig.state.store.experiment("x").await.expect("read"), None);
    assert_eq!(rig.state.experiments.phase("x"), None);

    // Created (pending) while the audit log works; started while it does not.
    rig.faults.fail_audit(false);
    let created = ops::create(&rig.state, &operator, &document("x", "60s"), false, false)
        .await
        .expect("created");
    assert_eq!(created.record.phase, Phase::Pending);
    rig.faults.fail_audit(true);
    let err = ops::start(&rig.state, &operator, "x")
        .await
        .expect_err("refused");
    assert_unaudited(&err, "Experiments.Start");
    let stored = rig.state.store.experiment("x").await.expect("read");
    assert_eq!(stored.map(|r| r.phase), Some(Phase::Pending));

    // Aborting a pending experiment reverts nothing: an ordinary mutation, refused too.
    let err = ops::abort(&rig.state, &operator, "x", "no")
        .await
        .expect_err("refused");
    assert_unaudited(&err, "Experiments.Abort");
    let stored = rig.state.store.experiment("x").await.expect("read");
    assert_eq!(stored.map(|r| r.phase), Some(Phase::Pending));

    let seen = agent.stop().await;
    assert_eq!(applies(&seen), 0, "no fault was sent: {seen:?}");
    assert_eq!(
        audit_actions(&rig).await,
        [("Experiments.Create".to_string(), true)],
        "only the create that went through is in the log"
    );
}

#[tokio::test]
async fn aborting_a_running_experiment_reverts_even_when_the_audit_log_fails() {
    let rig = Rig::new().await;
    let agent = Agent::connect(&rig.state, "node-a");
    let operator = identity(Role::Operator);
    ops::create(&rig.state, &operator, &document("x", "60s"), false, true)
        .await
        .expect("started");
    until("the fault applied", || {
        rig.state.experiments.snapshot("x").is_some_and(|s| {
            s.record
                .targets
                .iter()
                .all(|t| t.state == TargetState::Applied)
        })
    })
    .await;

    rig.faults.fail_audit(true);
    let err = ops::abort(&rig.state, &operator, "x", "stop it")
        .await
        .expect_err("not audited");
    let status = err.status();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().starts_with(
            "experiment \"x\" was aborted (RevertFault sent to its targets), but the audit log could not be written"
        ),
        "{}",
        status.message()
    );
    until("the run to finish", || {
        rig.state.experiments.snapshot("x").is_none()
    })
    .await;
    let rec = rig
        .state
        .store
        .experiment("x")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(rec.phase, Phase::Aborted);
    assert!(rec.targets.iter().all(|t| t.state == TargetState::Reverted));
    let seen = agent.stop().await;
    assert_eq!(reverts(&seen), 1, "{seen:?}");
    assert!(rig.state.vouches.is_empty());
}

#[tokio::test]
async fn a_halt_goes_ahead_without_the_audit_log_and_a_resume_does_not() {
    let rig = Rig::new().await;
    let agent = Agent::connect(&rig.state, "node-a");
    let admin = identity(Role::Admin);
    ops::create(&rig.state, &admin, &document("x", "60s"), false, true)
        .await
        .expect("started");
    until("the fault applied", || {
        rig.state.experiments.snapshot("x").is_some_and(|s| {
            s.record
                .targets
                .iter()
                .all(|t| t.state == TargetState::Applied)
        })
    })
    .await;

    rig.faults.fail_audit(true);
    let status = fleet::halt(&rig.state, &admin, "game day")
        .await
        .expect_err("not audited");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(
        status.message().split(": ").next(),
        Some(
            "the fleet is halted (1 agents signalled, 1 experiments aborted), but the audit log could not be written"
        ),
        "{}",
        status.message()
    );
    // Halted all the same: in memory, on disk, nothing vouched for, the fault reverted.
    assert!(rig.state.halted().is_some());
    let stored = rig.state.store.halt().await.expect("read");
    assert_eq!(stored.map(|h| h.reason), Some("game day".to_string()));
    assert!(rig.state.vouches.is_empty());
    until("the run to finish", || {
        rig.state.experiments.snapshot("x").is_none()
    })
    .await;
    let rec = rig
        .state
        .store
        .experiment("x")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(rec.phase, Phase::Aborted);

    // Resume needs its audit entry: refused, and the fleet stays halted.
    let status = fleet::resume(&rig.state, &admin)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("the audit log could not be written")
            && status
                .message()
                .contains("so Fleet.Resume was refused and nothing changed"),
        "{}",
        status.message()
    );
    assert!(rig.state.halted().is_some());
    assert!(rig.state.store.halt().await.expect("read").is_some());

    rig.faults.fail_audit(false);
    let resumed = fleet::resume(&rig.state, &admin).await.expect("resumed");
    assert!(resumed.was_halted);
    assert!(rig.state.halted().is_none());
    assert_eq!(rig.state.store.halt().await.expect("read"), None);
    let seen = agent.stop().await;
    assert_eq!(reverts(&seen), 1, "{seen:?}");
    let actions = audit_actions(&rig).await;
    assert_eq!(actions.first(), Some(&("Fleet.Resume".to_string(), true)));
    assert!(!actions.iter().any(|(a, _)| a == "Fleet.HaltAll"));
}
