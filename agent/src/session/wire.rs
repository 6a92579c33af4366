//! The session's wire steps: the Hello/Welcome handshake and message helpers.

use std::sync::Arc;

use faultline_proto::pb;
use faultline_proto::pb::agent_message::Msg as Out;
use faultline_proto::pb::coordinator_message::Msg as In;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{SessionError, WELCOME_TIMEOUT};
use crate::faults::RevertReason;
use crate::transport::{Inbound, Transport};

pub(crate) type Opened = (mpsc::Sender<pb::AgentMessage>, Inbound, pb::Welcome);

/// Connects, sends Hello and waits for Welcome.
pub(crate) async fn open(
    transport: Arc<dyn Transport>,
    hello: pb::Hello,
) -> Result<Opened, SessionError> {
    let (tx, rx) = mpsc::channel(64);
    tx.try_send(agent_msg(Out::Hello(hello)))
        .map_err(|_| SessionError::Protocol("cannot queue Hello".into()))?;
    let handshake = async {
        let mut inbound = transport.open(rx).await?;
        match inbound.next().await {
            Some(Ok(pb::CoordinatorMessage {
                msg: Some(In::Welcome(w)),
            })) => Ok((inbound, w)),
            Some(Ok(other)) => Err(SessionError::Protocol(format!(
                "expected Welcome as the first message, got {}",
                describe(&other)
            ))),
            Some(Err(status)) => Err(SessionError::from_status(status)),
            None => Err(SessionError::Closed),
        }
    };
    let (inbound, welcome) = tokio::time::timeout(WELCOME_TIMEOUT, handshake)
        .await
        .map_err(|_| SessionError::WelcomeTimeout(WELCOME_TIMEOUT))??;
    if welcome.lease_ms == 0 {
        return Err(SessionError::Protocol(
            "Welcome carries lease_ms 0; the lease must be at least 1 ms".into(),
        ));
    }
    Ok((tx, inbound, welcome))
}

pub(crate) fn agent_msg(msg: Out) -> pb::AgentMessage {
    pb::AgentMessage { msg: Some(msg) }
}

pub(crate) async fn send(
    tx: &mpsc::Sender<pb::AgentMessage>,
    msg: Out,
) -> Result<(), SessionError> {
    tx.send(agent_msg(msg))
        .await
        .map_err(|_| SessionError::Closed)
}

/// A revert reason from the coordinator; unknown or unspecified means an abort.
pub(crate) fn coordinator_reason(raw: i32) -> RevertReason {
    match RevertReason::try_from(raw) {
        Ok(RevertReason::Unspecified) | Err(_) => RevertReason::Abort,
        Ok(r) => r,
    }
}

pub(crate) fn describe(m: &pb::CoordinatorMessage) -> &'static str {
    match m.msg {
        Some(In::Welcome(_)) => "Welcome",
        Some(In::Lease(_)) => "LeaseRenewal",
        Some(In::Apply(_)) => "ApplyFault",
        Some(In::Revert(_)) => "RevertFault",
        Some(In::RevertAll(_)) => "RevertAll",
        Some(In::Certificate(_)) => "CertificateIssued",
        None => "an empty message",
    }
}
