//! The CA bundle agents trust for the coordinator, published in a ConfigMap
//! (`--publish-ca-bundle NAMESPACE/NAME`, key `ca.pem`) so that agent pods mount public data
//! only: no Secret, no key. It is the file the coordinator verifies clients against
//! (`--client-ca`), the same bundle every enrollment answer carries.
//!
//! # Guarantees
//! - Only a file that parses as one or more PEM certificates is published; a half-written or
//!   broken file leaves the ConfigMap as it was (and is logged).
//! - [`run`] applies the bundle at start, again whenever the file changes, and every
//!   [`REFRESH`] in any case (a ConfigMap deleted or edited by hand comes back); a failed apply
//!   is retried with backoff from 1 s to 30 s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Cluster, KubeError, NamespacedName};

/// The key of the bundle in the ConfigMap.
pub const KEY: &str = "ca.pem";
/// How often the file is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often the bundle is applied even when the file did not change.
pub const REFRESH: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file is unreadable or holds no certificate; the message names it.
    #[error("--publish-ca-bundle: {0}")]
    File(String),
    #[error("--publish-ca-bundle {target}: {source}")]
    Api {
        target: NamespacedName,
        source: KubeError,
    },
}

/// The bundle in `ca_file`, checked to be PEM certificates.
pub fn read_bundle(ca_file: &Path) -> Result<String, BundleError> {
    faultline_identity::tls::load_certs(ca_file).map_err(|e| BundleError::File(e.to_string()))?;
    std::fs::read_to_string(ca_file)
        .map_err(|e| BundleError::File(format!("{}: {e}", ca_file.display())))
}

/// Applies `bundle` as ConfigMap `target` (data `ca.pem`).
pub async fn publish(
    cluster: &dyn Cluster,
    target: &NamespacedName,
    bundle: &str,
) -> Result<(), BundleError> {
    let data = BTreeMap::from([(KEY.to_string(), bundle.to_string())]);
    cluster
        .apply_config_map(&target.namespace, &target.name, &data)
        .await
        .map_err(|source| BundleError::Api {
            target: target.clone(),
            source,
        })
}

/// Keeps ConfigMap `target` equal to `ca_file` until `stop` (see the module docs).
pub async fn run(
    cluster: Arc<dyn Cluster>,
    target: NamespacedName,
    ca_file: PathBuf,
    stop: CancellationToken,
) {
    let mut published: Option<String> = None;
    let mut since_refresh = Duration::ZERO;
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match read_bundle(&ca_file) {
            Err(e) => {
                tracing::warn!("{e}; the CA bundle ConfigMap {target} is left as it was");
                CHECK_EVERY
            }
            Ok(bundle)
                if published.as_deref() == Some(bundle.as_str()) && since_refresh < REFRESH =>
            {
                since_refresh += CHECK_EVERY;
                CHECK_EVERY
            }
            Ok(bundle) => match publish(cluster.as_ref(), &target, &bundle).await {
                Ok(()) => {
                    if published.as_deref() != Some(bundle.as_str()) {
                        tracing::info!(
                            "published the CA bundle agents trust ({}) as ConfigMap {target}",
                            ca_file.display()
                        );
                    }
                    published = Some(bundle);
                    since_refresh = Duration::ZERO;
                    backoff = Duration::from_secs(1);
                    CHECK_EVERY
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {}s", backoff.as_secs());
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            },
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
