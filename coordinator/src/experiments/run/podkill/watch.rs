//! The pod-kill watch: each selected namespace's pods (the experiment's label selector),
//! re-opened from the last resource version, and how a Ready pod is credited as the
//! replacement of a deleted one.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use metrics::histogram;
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;

use super::task::Task;
use super::POD_KILL_RECOVER_SECONDS;
use crate::kube::podkill::{PodEvent, PodState};
use crate::kube::Cluster;
use crate::state::now_ms;

pub(super) enum Watched {
    Event(PodEvent),
    Failed(String),
}

/// Watches one namespace until `stop`, re-opening the watch from the last resource version.
pub(super) async fn watch(
    cluster: Arc<dyn Cluster>,
    namespace: String,
    labels: Option<String>,
    tx: mpsc::Sender<Watched>,
    stop: CancellationToken,
) {
    let mut version = "0".to_string();
    while !stop.is_cancelled() {
        let opened = Instant::now();
        match cluster
            .watch_pods(&namespace, labels.as_deref(), &version)
            .await
        {
            Ok(mut events) => loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => return,
                    ev = events.next() => ev,
                };
                match ev {
                    None => break,
                    Some(Ok(ev)) => {
                        match &ev {
                            PodEvent::Changed(p) | PodEvent::Deleted(p) => {
                                version = p.resource_version.clone()
                            }
                            PodEvent::Bookmark(v) => version = v.clone(),
                            PodEvent::Expired(_) => version = "0".to_string(),
                        }
                        if tx.send(Watched::Event(ev)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Watched::Failed(e.to_string())).await;
                        break;
                    }
                }
            },
            Err(e) => {
                let _ = tx.send(Watched::Failed(e.to_string())).await;
            }
        }
        // A watch that ended at once (an error, or nothing to say) is not re-opened in a loop.
        if opened.elapsed() < Duration::from_secs(1) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

impl Task {
    pub(super) async fn on_watched(&mut self, w: Watched) {
        match w {
            Watched::Failed(e) => self.log(format!("pod-kill: watch: {e}")).await,
            Watched::Event(PodEvent::Deleted(p)) => {
                let at = now_ms();
                let mut changed = false;
                for k in self
                    .kills
                    .iter_mut()
                    .filter(|k| k.uid == p.uid && k.gone_unix_ms == 0)
                {
                    k.gone_unix_ms = at;
                    changed = true;
                }
                if changed {
                    self.publish().await;
                }
            }
            Watched::Event(PodEvent::Changed(p)) => {
                if self.replaced(&p) {
                    self.publish().await;
                }
            }
            Watched::Event(_) => {}
        }
    }

    /// Credits `p` (Ready, of a controller whose pod was deleted, new since) to the oldest
    /// deletion still waiting for it.
    fn replaced(&mut self, p: &PodState) -> bool {
        if !p.ready || p.terminating || self.assigned.contains(&p.uid) {
            return false;
        }
        let Some(owner) = p.controller.as_ref() else {
            return false;
        };
        let mut waiting: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, w)| w.controller_uid == owner.uid && !w.known.contains(&p.uid))
            .map(|(i, _)| *i)
            .collect();
        waiting.sort_unstable();
        let Some(i) = waiting.first().copied() else {
            return false;
        };
        self.pending.remove(&i);
        self.assigned.insert(p.uid.clone());
        let k = &mut self.kills[i];
        k.replacement = p.key();
        k.replacement_uid = p.uid.clone();
        k.replacement_node = p.node.clone().unwrap_or_default();
        k.ready_unix_ms = now_ms();
        if let Some(ms) = k.recover_ms() {
            histogram!(POD_KILL_RECOVER_SECONDS).record(ms as f64 / 1000.0);
            tracing::info!(
                experiment = %self.spec.name,
                "pod-kill: {} replaced by {} on {}, Ready {} ms after the delete",
                k.pod, k.replacement, k.replacement_node, ms
            );
        }
        true
    }
}
