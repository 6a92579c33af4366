//! The kubelet's container log links: `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`,
//! one per container the kubelet creates (a restart makes a new one with the new ID; the
//! previous one stays while its logs are kept), never one for a pod's sandbox (pause)
//! container. They are how the agent learns which runtime container IDs a pod's container
//! name has, without an API server or a container runtime socket. Only the names are read,
//! never the targets.

use std::path::Path;

/// Where the kubelet keeps its container log links.
pub const DEFAULT_CONTAINER_LOGS_DIR: &str = "/var/log/containers";

/// One link, as its file name spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLink {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    /// The runtime's container ID, lowercased.
    pub id: String,
}

/// Parses `<pod>_<namespace>_<container>-<id>.log`. Pod, namespace and container names hold
/// no `_` (DNS subdomains and labels), and the ID is the last `-` field (hexadecimal).
pub fn parse_link(file: &str) -> Option<ContainerLink> {
    let stem = file.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.splitn(3, '_');
    let (pod, namespace, container) = (it.next()?, it.next()?, it.next()?);
    if pod.is_empty() || namespace.is_empty() || container.is_empty() || container.contains('_') {
        return None;
    }
    Some(ContainerLink {
        pod: pod.to_string(),
        namespace: namespace.to_string(),
        container: container.to_string(),
        id: id.to_ascii_lowercase(),
    })
}

/// Every link in `dir` that parses; an error says why the directory cannot be read.
pub fn read_links(dir: &Path) -> Result<Vec<ContainerLink>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the kubelet's container log links in {} ({e}; set limits.container_logs_dir)",
            dir.display()
        )
    })?;
    let mut links: Vec<ContainerLink> = entries
        .flatten()
        .filter_map(|e| parse_link(&e.file_name().to_string_lossy()))
        .collect();
    links.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container, &a.id).cmp(&(
            &b.namespace,
            &b.pod,
            &b.container,
            &b.id,
        ))
    });
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_as_the_kubelet_writes_them() {
        let id = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
        assert_eq!(
            parse_link(&format!(
                "checkout-7d4f9b6c5-abcde_shop_istio-proxy-{id}.log"
            )),
            Some(ContainerLink {
                pod: "checkout-7d4f9b6c5-abcde".into(),
                namespace: "shop".into(),
                container: "istio-proxy".into(),
                id: id.into(),
            })
        );
        // StatefulSet and dotted pod names.
        let l = parse_link(&format!("web-0.v2_shop_app-{}.log", &id[..16])).expect("dotted");
        assert_eq!((l.pod.as_str(), l.container.as_str()), ("web-0.v2", "app"));
        for bad in [
            "checkout_shop_app.log".to_string(),
            format!("checkout_shop_app-{id}.txt"),
            format!("checkout_shop_app-zz{}.log", &id[2..]),
            format!("checkout_shop-{id}.log"),
            format!("_shop_app-{id}.log"),
            "checkout_shop_app-abc.log".to_string(),
        ] {
            assert_eq!(parse_link(&bad), None, "{bad}");
        }
    }
}
