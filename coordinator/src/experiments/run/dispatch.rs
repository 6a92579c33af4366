//! Pushing ApplyFault and RevertFault into the standing agent sessions: every agent in
//! parallel, each agent's messages in order, straight into the session's outbound stream
//! (see [`crate::outbox`]).

use std::collections::BTreeMap;
use std::time::Duration;

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
                if let Err(e) = session.outbox.push(msg, SEND_TIMEOUT).await {
                    return (agent, Err(e));
                }
            }
            (agent, Ok(()))
        }
    });
    futures::future::join_all(sends).await.into_iter().collect()
}
