//! `AgentSession.Connect`: checks the Hello against the agent's certificate, registers the
//! agent, renews its lease (each renewal answers its telemetry; a timer renews when none came,
//! so renewals are at most 1.5 renew intervals apart), takes its telemetry and fault status,
//! answers its certificate renewals, and ends the session when the agent leaves, falls silent
//! for a lease, is replaced, is revoked, or we shut down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use faultline_core::{Identity, Labels, NodeName};
use faultline_identity::tls::PeerInfo;
use faultline_proto::pb::agent_message::Msg as AgentMsg;
use faultline_proto::pb::coordinator_message::Msg as CoordMsg;
use faultline_proto::pb::{self, agent_session_server::AgentSession};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::Method;
use crate::enroll::{Pki, Revocations};
use crate::metrics::{self, CloseReason, RefusalReason};
use crate::outbox::{OutMsg, Outbox, Renewal};
use crate::registry::{Arrival, RevertAllOrder, SessionHandle};
use crate::renew_pace::RenewPace;
use crate::state::{now_ms, State, TELEMETRY_INTERVAL_MS};

/// How long a new session may take to say Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The session's outbound queue, as the response stream tonic polls.
pub struct Outgoing(mpsc::Receiver<Box<OutMsg>>);

impl tokio_stream::Stream for Outgoing {
    type Item = OutMsg;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<OutMsg>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| *b))
    }
}

pub struct SessionService {
    pub state: Arc<State>,
    pub pki: Arc<Pki>,
}

#[tonic::async_trait]
impl AgentSession for SessionService {
    type ConnectStream = Outgoing;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let identity = self.state.authorize(&req, Method::Connect)?;
        let remote = req
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote.to_string())
            .unwrap_or_default();
        let guard = self
            .state
            .session_guard()
            .ok_or_else(|| Status::unavailable("the coordinator is shutting down"))?;
        let (outbox, rx) = Outbox::new(64);
        let session = Session {
            state: self.state.clone(),
            pki: self.pki.clone(),
            identity,
            remote,
            outbox,
            opened_ms: now_ms(),
        };
        let inbound = req.into_inner();
        tokio::spawn(Session::run(Box::new((session, inbound)), guard));
        Ok(Response::new(Outgoing(rx)))
    }
}

struct Session {
    state: Arc<State>,
    pki: Arc<Pki>,
    identity: Identity,
    remote: String,
    outbox: Arc<Outbox>,
    /// When the stream opened (a revocation after it covers this session's certificate).
    opened_ms: i64,
}

/// A session refused before Welcome.
struct Refused {
    status: Status,
    /// Counted as an authorization refusal too.
    auth: Option<RefusalReason>,
    /// Written to the audit log (an agent that merely hung up is not).
    audit: bool,
}

impl Refused {
    fn invalid(message: String) -> Self {
        Refused {
            status: Status::invalid_argument(message),
            auth: None,
            audit: true,
        }
    }
}

fn kind_of(msg: &Option<AgentMsg>) -> &'static str {
    match msg {
        Some(AgentMsg::Hello(_)) => "Hello",
        Some(AgentMsg::Telemetry(_)) => "Telemetry",
        Some(AgentMsg::FaultStatus(_)) => "FaultStatus",
        Some(AgentMsg::RenewCertificate(_)) => "RenewCertificate",
        None => "an empty message",
    }
}

impl Session {
    /// The session task. It owns the session, the inbound stream (boxed together: an async
    /// fn's arguments are stored twice in its future) and the shutdown guard, dropped after
    /// them; what it calls borrows them.
    async fn run(
        mut parts: Box<(Session, Streaming<pb::AgentMessage>)>,
        shutdown_guard: mpsc::Sender<()>,
    ) {
        let (session, inbound) = &mut *parts;
        let hello = match session.accept_hello(inbound).await {
            Ok(hello) => hello,
            Err(refused) => {
                Box::pin(session.refuse(refused)).await;
                drop(parts);
                return drop(shutdown_guard);
            }
        };
        let opened = session.open(hello);
        session.serve(opened, inbound).await;
        drop(parts);
        drop(shutdown_guard);
    }

    /// Sends `msg` unless the agent stopped reading for a whole lease or we shut down.
    async fn send(&self, msg: OutMsg) -> bool {
        self.outbox
            .send(msg, self.state.lease, &self.state.shutdown)
            .await
    }

    /// Sends the next lease renewal, unless `idle` says it may be left out; false when it
    /// could not be sent. Its vouched list is read as it is queued, under the outbox's order
    /// lock (see [`Outbox`]), and it names the latest telemetry heard (the agent counts the
    /// lease from when it sent that).
    async fn renew_lease(&self, node: &str, sequence: &mut u64, idle: &mut Idle) -> bool {
        let make = |ordered: bool| {
            let vouched = self.state.vouched_for(node);
            if idle.skips(ordered, &vouched) {
                return None;
            }
            idle.vouched_nothing = vouched.is_empty();
            *sequence += 1;
            Some(CoordMsg::Lease(pb::LeaseRenewal {
                lease_ms: self.state.lease_ms(),
                sequence: *sequence,
                vouched_fault_ids: vouched,
                telemetry_sequence: self.outbox.last_heard(),
            }))
        };
        match self
            .outbox
            .renewal(make, self.state.lease, &self.state.shutdown)
            .await
        {
            Renewal::Sent => {
                metrics::lease_renewed(node, *sequence);
                true
            }
            Renewal::Skipped => true,
            Renewal::Failed => false,
        }
    }

    async fn send_msg(&self, msg: CoordMsg) -> bool {
        self.send(Ok(pb::CoordinatorMessage { msg: Some(msg) }))
            .await
    }

    async fn accept_hello(
        &self,
        inbound: &mut Streaming<pb::AgentMessage>,
    ) -> Result<ValidHello, Refused> {
        let first = tokio::select! {
            first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => first,
            _ = self.state.shutdown.cancelled() => {
                return Err(Refused {
                    status: Status::unavailable("the coordinator is shutting down"),
                    auth: None,
                    audit: false,
                });
            }
        };
        let hung_up = |why: String| Refused {
            status: Status::cancelled(why),
            auth: None,
            audit: false,
        };
        let msg = match first {
            Err(_) => {
                return Err(Refused {
                    status: Status::deadline_exceeded(format!(
                        "no Hello within {} s: the first message of an AgentSession must be Hello",
                        HELLO_TIMEOUT.as_secs()
                    )),
                    auth: None,
                    audit: true,
                })
            }
            Ok(Ok(Some(msg))) => msg,
            Ok(Ok(None)) => return Err(hung_up("stream ended before Hello".into())),
            Ok(Err(status)) => {
                return Err(hung_up(format!(
                    "stream failed before Hello: {}",
                    status.message()
                )))
            }
        };
        let hello = match msg.msg {
            Some(AgentMsg::Hello(hello)) => hello,
            other => {
                return Err(Refused::invalid(format!(
                    "the first message of an AgentSession must be Hello, got {}",
                    kind_of(&other)
                )))
            }
        };
        let node: NodeName = hello
            .node_name
            .parse()
            .map_err(|e| Refused::invalid(format!("hello.node_name: {e}")))?;
        if node.as_str() != self.identity.name {
            return Err(Refused {
                status: Status::permission_denied(format!(
                    "identity {} may only open a session for node {:?}, not {:?}",
                    self.identity,
                    self.identity.name,
                    node.as_str()
                )),
                auth: Some(RefusalReason::NodeName),
                audit: true,
            });
        }
        let mut labels = Labels::from_map(hello.labels.into_iter().collect())
            .map_err(|e| Refused::invalid(format!("hello.labels: {e}")))?;
        // The labels the node enrolled with (its join token's) win over what it says.
        if let Some(enrolled) = self.pki.enrolled_labels(node.as_str()) {
            labels.0.extend(enrolled);
        }
        Ok(ValidHello {
            node,
            labels: labels.0,
            capabilities: hello.capabilities,
            version: hello.version,
            held_faults: hello.held_faults,
            lease_while_holding: hello.lease_while_holding,
            sequence: hello.sequence,
        })
    }

    async fn refuse(&self, refused: Refused) {
        let message = refused.status.message().to_string();
        if let Some(reason) = refused.auth {
            metrics::auth_refused(reason, &message);
        }
        if refused.audit {
            let _ = self.state.audit(
                &self.identity,
                Method::Connect.name(),
                format!("refused from {}: {message}", self.remote),
                false,
            );
        }
        metrics::session_closed(
            &self.identity.name,
            "",
            CloseReason::Refused,
            &message,
            self.state.registry.connected_count(),
        );
        let _ = self.send(Err(refused.status)).await;
    }

    /// Registers the session and reconciles what the agent holds; returns what serving it
    /// keeps. Synchronous on purpose: the setup's records, strings and lists are gone before
    /// the session task first waits, so they take no room in it (with 10,000 sessions every
    /// byte of the task counts, docs/benchmarks.md).
    fn open(&self, hello: ValidHello) -> Opened {
        let state = &self.state;
        // Until telemetry comes, renewals and orders name the Hello (the agent's anchor rule);
        // set before runs can find the session and push into it.
        self.outbox.heard(hello.sequence);
        let node = hello.node.to_string();
        let session_id = state.new_session_id();
        let end = CancellationToken::new();
        let arrival = Arrival {
            node_name: node.clone(),
            labels: hello.labels,
            capabilities: hello.capabilities,
            version: hello.version,
            held_faults: hello.held_faults.clone(),
            remote_address: self.remote.clone(),
            now_unix_ms: now_ms(),
        };
        let detail = format!(
            "session {session_id} for {node} from {}: version {:?}, labels {}, {} held faults",
            self.remote,
            arrival.version,
            Labels(arrival.labels.clone()),
            arrival.held_faults.len()
        );
        let orders = Arc::new(RevertAllOrder::default());
        let handle = SessionHandle {
            session_id: session_id.clone(),
            outbox: self.outbox.clone(),
            end: end.clone(),
            revert_all: orders.clone(),
        };
        let (record, replaced) = state.registry.connect(arrival, handle);
        let guard = EndGuard {
            outbox: self.outbox.clone(),
            state: state.clone(),
            node,
            session_id,
        };
        let (node, session_id) = (guard.node.as_str(), guard.session_id.as_str());
        let detail = match &replaced {
            Some(old) => {
                old.end.cancel();
                format!("{detail}; replaces session {}", old.session_id)
            }
            None => detail,
        };
        if let Err(e) = state.store.put_agent(&record) {
            tracing::error!(node, "could not store the agent record: {e}");
        }
        let _ = state.audit(&self.identity, "AgentSession.Connect", detail, true);
        metrics::session_opened(
            node,
            session_id,
            &self.remote,
            state.registry.connected_count(),
        );

        // Reconcile what the agent holds with what we vouch for: running experiments adopt
        // the faults they own, and the Welcome below omits every other one, so the agent
        // reverts those at once.
        let hello_at = now_ms();
        let held: Vec<(String, String)> = hello
            .held_faults
            .iter()
            .map(|h| (h.fault_id.clone(), h.experiment_id.clone()))
            .collect();
        let unvouched = reconcile(state, node, &held, hello_at);
        if !unvouched.is_empty() {
            let _ = state.audit(
                &self.identity,
                "AgentSession.Reconcile",
                format!(
                    "{node} holds {} fault(s) no running experiment vouches for; the Welcome omits them, so it reverts them: {}",
                    unvouched.len(),
                    unvouched.join(", ")
                ),
                true,
            );
        }
        let vouched = state.vouched_for(node);
        let idle = Idle {
            allowed: hello.lease_while_holding,
            vouched_nothing: vouched.is_empty(),
            holding: !hello.held_faults.is_empty(),
        };
        let welcome = CoordMsg::Welcome(pb::Welcome {
            session_id: session_id.to_string(),
            lease_ms: state.lease_ms(),
            telemetry_interval_ms: TELEMETRY_INTERVAL_MS,
            vouched_fault_ids: vouched,
        });
        let halt = state.halted().map(|halt| {
            Box::new(revert_all(&format!(
                "fleet halted by {}: {}",
                halt.by, halt.reason
            )))
        });
        Opened {
            guard,
            end,
            orders,
            welcome: Box::new(welcome),
            halt,
            idle,
        }
    }

    async fn serve(&self, opened: Opened, inbound: &mut Streaming<pb::AgentMessage>) {
        let state = &self.state;
        let (node, session_id) = (opened.guard.node.as_str(), opened.guard.session_id.as_str());
        let orders = &opened.orders;
        // The rare sends are boxed: unboxed, the largest of them sizes every session's task.
        let mut ended = if Box::pin(self.send_msg(*opened.welcome)).await {
            None
        } else {
            Some((
                CloseReason::Disconnect,
                "could not send Welcome".to_string(),
            ))
        };
        if let (None, Some(revert)) = (&ended, opened.halt) {
            if !Box::pin(self.send_msg(*revert)).await {
                ended = Some((CloseReason::Disconnect, "could not send RevertAll".into()));
            }
        }
        // Orders pushed since the registry listed this session have waited for this.
        self.outbox.welcomed();

        // Renewals answer telemetry; the timer renews only when none came in time
        // (renew_pace.rs).
        let pace = RenewPace::new(state.lease, state.renew_interval);
        let mut renewed_at = Instant::now();
        let mut sequence = 0u64;
        let mut idle = opened.idle;
        let renew_due = sleep_until(renewed_at + pace.at_most);
        // The futures the loop waits on live across iterations: made once, not once per
        // message. The silence timer is moved only when it fires early (at most once per
        // lease), not re-armed on every message.
        let mut heard_at = Instant::now();
        let silent = sleep_until(heard_at + state.lease);
        let shutdown = state.shutdown.cancelled();
        let replaced = opened.end.cancelled();
        let ordered = orders.ordered();
        tokio::pin!(silent, renew_due, shutdown, replaced, ordered);
        let (reason, why) = loop {
            if let Some(e) = ended.take() {
                if state.shutdown.is_cancelled() {
                    break (
                        CloseReason::Shutdown,
                        "the coordinator is shutting down".into(),
                    );
                }
                break e;
            }
            // The select only decides; what it decided is awaited after it, so neither the
            // select's futures nor the message it took are kept while a send waits.
            let next = tokio::select! {
                _ = &mut shutdown => {
                    self.outbox.close(Status::unavailable(
                        "the coordinator is shutting down; reconnect later",
                    ));
                    Next::End(CloseReason::Shutdown, "the coordinator is shutting down".into())
                }
                _ = &mut replaced => {
                    if let Some(revoked) = self.revoked(node) {
                        self.outbox.close(Status::permission_denied(revoked.clone()));
                        Next::End(CloseReason::Revoked, revoked)
                    } else {
                        let why = format!("session {session_id} for {node} was replaced by a newer session");
                        self.outbox.close(Status::aborted(why.clone()));
                        Next::End(CloseReason::Replaced, why)
                    }
                }
                _ = &mut silent => {
                    let due = heard_at + state.lease;
                    if Instant::now() < due {
                        silent.as_mut().reset(due);
                        Next::Wait
                    } else {
                        let why = format!(
                            "nothing received from {node} for a whole lease ({} ms)",
                            state.lease_ms()
                        );
                        self.outbox.close(Status::deadline_exceeded(why.clone()));
                        Next::End(CloseReason::Silent, why)
                    }
                }
                _ = &mut ordered => {
                    ordered.set(orders.ordered());
                    orders.take().map_or(Next::Wait, Next::RevertAll)
                }
                _ = &mut renew_due => Next::Renew(Instant::now()),
                msg = inbound.message() => match msg {
                    Ok(Some(msg)) => {
                        heard_at = Instant::now();
                        let telemetry = match &msg.msg {
                            Some(AgentMsg::Telemetry(t)) => {
                                self.outbox.heard(t.sequence);
                                idle.holding = t.active_faults > 0;
                                true
                            }
                            _ => false,
                        };
                        self.received(node, session_id, msg.msg);
                        if telemetry && pace.answers(heard_at - renewed_at) {
                            Next::Renew(heard_at)
                        } else {
                            Next::Wait
                        }
                    }
                    Ok(None) => Next::End(CloseReason::Disconnect, "the agent closed the stream".into()),
                    Err(status) => Next::End(CloseReason::Disconnect, format!("stream failed: {}", status.message())),
                },
            };
            match next {
                Next::Wait => {}
                Next::End(reason, why) => break (reason, why),
                Next::Renew(at) => {
                    if !self.renew_lease(node, &mut sequence, &mut idle).await {
                        ended = Some((
                            CloseReason::Disconnect,
                            "could not send a lease renewal".into(),
                        ));
                        continue;
                    }
                    renewed_at = at;
                    renew_due.as_mut().reset(renewed_at + pace.at_most);
                }
                Next::RevertAll(message) => {
                    if !Box::pin(self.send_msg(revert_all(&message))).await {
                        ended = Some((CloseReason::Disconnect, "could not send RevertAll".into()));
                    }
                }
            }
        };

        // Orders pushed from now on fail (those queued before the end still go out).
        self.outbox.end();
        // A silent agent was last seen when it last spoke; otherwise now.
        let seen_at = if reason == CloseReason::Silent {
            0
        } else {
            now_ms()
        };
        if let Some(record) = state.registry.disconnect(node, session_id, seen_at) {
            if let Err(e) = state.store.put_agent(&record) {
                tracing::error!(node, "could not store the agent record: {e}");
            }
        }
        let _ = state.audit(
            &self.identity,
            "AgentSession.Disconnect",
            format!(
                "session {session_id} for {node} ended ({}): {why}",
                reason.as_str()
            ),
            true,
        );
        metrics::session_closed(
            node,
            session_id,
            reason,
            &why,
            state.registry.connected_count(),
        );
    }

    fn received(&self, node: &str, session_id: &str, msg: Option<AgentMsg>) {
        let registry = &self.state.registry;
        let now = now_ms();
        match msg {
            Some(AgentMsg::Telemetry(t)) => registry.telemetry(node, session_id, t, now),
            Some(AgentMsg::FaultStatus(s)) => {
                metrics::fault_status(node, &s);
                self.state
                    .experiments
                    .route(self.state.store.as_ref(), node, s.clone());
                registry.fault_status(node, session_id, s, now);
            }
            Some(AgentMsg::Hello(_)) => {
                tracing::warn!(node, session_id, "ignoring a second Hello in one session");
                registry.seen(node, session_id, now);
            }
            Some(AgentMsg::RenewCertificate(renew)) => {
                registry.seen(node, session_id, now);
                self.renew(node, renew.csr_der);
            }
            None => registry.seen(node, session_id, now),
        }
    }
}

impl Session {
    /// Why this session's node is revoked, when it was revoked after the session opened.
    fn revoked(&self, node: &str) -> Option<String> {
        let rec = self.pki.revocations.of_node(node)?;
        (rec.revoked.at_unix_ms >= self.opened_ms).then(|| Revocations::describe(&rec))
    }

    /// Signs the agent's CSR off the async threads and answers with CertificateIssued; the
    /// session goes on meanwhile. A refusal is an answer too (`error` set).
    fn renew(&self, node: &str, csr_der: Vec<u8>) {
        let pki = self.pki.clone();
        let outbox = self.outbox.clone();
        let opened_ms = self.opened_ms;
        let node = node.to_string();
        tokio::spawn(async move {
            let name = node.clone();
            let issued = tokio::task::spawn_blocking(move || {
                let node: NodeName = name
                    .parse()
                    .map_err(|e| crate::enroll::Refusal::Invalid(format!("node: {e}")))?;
                pki.renew(&node, &csr_der, opened_ms)
                    .map(|issued| (issued, pki.ca_bundle_pem.clone()))
            })
            .await;
            let answer = match issued {
                Ok(Ok((issued, ca_bundle_pem))) => {
                    metrics::renewal(&node, Ok(&Pki::not_after(&issued)));
                    pb::CertificateIssued {
                        error: String::new(),
                        chain_pem: issued.chain_pem,
                        not_after_unix_ms: issued.not_after_unix_ms,
                        ca_bundle_pem,
                    }
                }
                Ok(Err(refusal)) => {
                    metrics::renewal(&node, Err(&refusal.to_string()));
                    pb::CertificateIssued {
                        error: refusal.to_string(),
                        ..Default::default()
                    }
                }
                Err(e) => pb::CertificateIssued {
                    error: format!("renewal task failed: {e}"),
                    ..Default::default()
                },
            };
            let msg = pb::CoordinatorMessage {
                msg: Some(CoordMsg::Certificate(answer)),
            };
            let _ = outbox.sender().send(Box::new(Ok(msg))).await;
        });
    }
}

/// Ends the outbox when the session task is done, and if it unwinds (a bug), takes the
/// session out of the registry as well: its handle holds the outbound queue open, so the agent
/// would otherwise keep a stream that never renews and orders would still be queued into it.
struct EndGuard {
    outbox: Arc<Outbox>,
    state: Arc<State>,
    node: String,
    session_id: String,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.outbox.end();
        if std::thread::panicking() {
            let _ = self
                .state
                .registry
                .disconnect(&self.node, &self.session_id, now_ms());
        }
    }
}

/// What [`Session::open`] hands to the serving loop.
struct Opened {
    /// Holds the node and session id.
    guard: EndGuard,
    end: CancellationToken,
    orders: Arc<RevertAllOrder>,
    /// The Welcome, and the RevertAll of a halted fleet (boxed: each is sent once, and a
    /// message is 440 bytes).
    welcome: Box<CoordMsg>,
    halt: Option<Box<CoordMsg>>,
    /// Whether renewals may be left out, as of the Welcome.
    idle: Idle,
}

/// Whether a session's renewals may be left out ([`Session::renew_lease`]). An agent that
/// keeps its lease only while it holds a fault (Hello's `lease_while_holding`) is not renewed
/// when the renewal would vouch for nothing, the last Welcome or renewal it was sent vouched
/// for nothing, its last telemetry (or its Hello) reported no fault held, and no order went out
/// since: it holds nothing and has nothing to hold, so at 10,000 idle agents the coordinator
/// answers none of their telemetry (docs/benchmarks.md). Every order is followed by a renewal,
/// and so is every withdrawal of a vouch; an agent still holding something (a revert that
/// failed, say) keeps being renewed, so its lease never lapses under a live coordinator.
#[derive(Debug, Clone, Copy)]
struct Idle {
    allowed: bool,
    vouched_nothing: bool,
    holding: bool,
}

impl Idle {
    fn skips(&self, ordered: bool, vouched: &[String]) -> bool {
        self.allowed && self.vouched_nothing && !self.holding && !ordered && vouched.is_empty()
    }
}

/// What the serving loop does after a wake-up.
enum Next {
    Wait,
    /// Renew the lease; the renewal answers what was heard at this instant (or the timer's).
    Renew(Instant),
    RevertAll(String),
    End(CloseReason, String),
}

struct ValidHello {
    node: NodeName,
    labels: BTreeMap<String, String>,
    capabilities: Vec<String>,
    version: String,
    held_faults: Vec<pb::HeldFault>,
    lease_while_holding: bool,
    sequence: u64,
}

/// Hands the faults `node` says it holds to the running experiments that vouch for them
/// (they adopt them); returns the ones nobody vouches for, as `fault (experiment)`, counted and
/// logged: the Welcome omits them and the agent reverts them.
fn reconcile(state: &State, node: &str, held: &[(String, String)], hello_at: i64) -> Vec<String> {
    state.experiments.agent_back(node, held, hello_at);
    let unvouched: Vec<String> = held
        .iter()
        .filter(|(fault, _)| state.vouches.owner(node, fault).is_none())
        .map(|(fault, exp)| match exp.as_str() {
            "" => fault.clone(),
            e => format!("{fault} ({e})"),
        })
        .collect();
    metrics::unvouched_on_hello(node, &unvouched);
    unvouched
}

/// The RevertAll sent to every agent while the fleet is halted.
pub fn revert_all(message: &str) -> CoordMsg {
    CoordMsg::RevertAll(pb::RevertAll {
        reason: pb::RevertReason::Abort as i32,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::ENDED;
    use crate::test_support::{arrival, Rig};

    /// Registers a session for `node` the way `open` does, with its end guard; the receiver is
    /// the stream tonic would hold open.
    fn registered(rig: &Rig, node: &str) -> (Arc<Outbox>, EndGuard, mpsc::Receiver<Box<OutMsg>>) {
        let (outbox, rx) = Outbox::new(4);
        outbox.welcomed();
        let handle = SessionHandle {
            session_id: format!("{node}-s"),
            outbox: outbox.clone(),
            end: CancellationToken::new(),
            revert_all: Arc::default(),
        };
        rig.state.registry.connect(arrival(node), handle);
        let guard = EndGuard {
            outbox: outbox.clone(),
            state: rig.state.clone(),
            node: node.into(),
            session_id: format!("{node}-s"),
        };
        (outbox, guard, rx)
    }

    fn revert(fault: &str) -> CoordMsg {
        CoordMsg::Revert(pb::RevertFault {
            fault_id: fault.into(),
            ..Default::default()
        })
    }

    /// A session task that unwinds (a bug) must not leave a session that looks alive: the
    /// registry would keep handing it to experiment runs, whose orders would queue into a
    /// stream nobody renews. The guard takes it out of the registry and ends its outbox, so a
    /// revert pushed to it fails at once (and is resent on the agent's next session).
    #[tokio::test]
    async fn an_unwinding_session_leaves_the_registry_and_refuses_orders() {
        let rig = Rig::new().await;
        let (outbox, guard, _stream) = registered(&rig, "n1");
        assert!(rig.state.registry.is_connected("n1"));
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("a bug in the session task (this panic is the test)");
        });
        assert!(task.await.expect_err("the task panicked").is_panic());
        assert!(!rig.state.registry.is_connected("n1"));
        assert!(rig.state.registry.session("n1").is_none());
        assert!(rig.state.registry.sessions().is_empty());
        assert_eq!(
            outbox.push(revert("f1"), Duration::from_secs(1)).await,
            Err(ENDED.to_string())
        );
    }

    /// A session that returns records its own end (with its reason) after the guard ends the
    /// outbox; the guard alone does not disconnect it.
    #[tokio::test]
    async fn a_returning_session_ends_its_outbox_only() {
        let rig = Rig::new().await;
        let (outbox, guard, _stream) = registered(&rig, "n2");
        drop(guard);
        assert!(outbox.is_ended());
        assert!(rig.state.registry.is_connected("n2"));
        assert_eq!(
            outbox.push(revert("f1"), Duration::from_secs(1)).await,
            Err(ENDED.to_string())
        );
    }
}
