//! Pushing ApplyFault and RevertFault into the standing agent sessions: every agent in
//! parallel, each agent's messages in order.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_proto::pb;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;

use crate::state::State;

/// How long one session may take to accept a message before it counts as stalled.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends each agent its messages; the result per agent (an error when it has no session or
/// its session did not take the messages).
pub async fn send_all(
    state: &State,
    batches: BTreeMap<String, Vec<CoordMsg>>,
) -> BTreeMap<String, Result<(), String>> {
    let sends = batches.into_iter().map(|(agent, msgs)| {
        let session = state.registry.session(&agent);
        async move {
            let Some(session) = session else {
                return (agent, Err("the agent is not connected".to_string()));
            };
            for msg in msgs {
                let msg = Box::new(pb::CoordinatorMessage { msg: Some(msg) });
                match tokio::time::timeout(SEND_TIMEOUT, session.push.send(msg)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        return (agent, Err("the agent's session ended".to_string()));
                    }
                    Err(_) => {
                        return (
                            agent,
                            Err(format!(
                                "the agent's session did not take the message within {SEND_TIMEOUT:?}"
                            )),
                        );
                    }
                }
            }
            (agent, Ok(()))
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}
