//! The agent loop: source -> model -> reconciler -> maps, plus interface attachment.
use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    datapath::{accept_local, interface_addresses, Datapath, Maps},
    manifests::ManifestDir,
    model::{self, NodeInfo},
    reconcile::{self, MapState},
};

pub struct AgentConfig {
    pub manifests: PathBuf,
    pub node_name: String,
    pub external_interfaces: Vec<String>,
    pub pod_interfaces: Vec<glob::Pattern>,
    pub bpf_root: PathBuf,
}

/// How often the manifests directory and the interface list are polled.
const POLL: Duration = Duration::from_millis(200);

pub async fn run(cfg: AgentConfig) -> Result<()> {
    let mut dp = Datapath::open(&cfg.bpf_root)?;
    if let Err(e) = accept_local() {
        tracing::error!(
            "{e:#}: masqueraded traffic (NodePort, hairpin) will be dropped by the kernel"
        );
    }
    let mut maps = Maps::open(&cfg.bpf_root)?;
    let mut mirror = maps.read_state()?;
    tracing::info!(
        root = %cfg.bpf_root.display(),
        adopted = dp.adopted,
        frontends = mirror.frontends.len(),
        backends = mirror.backends.len(),
        "datapath ready"
    );
    let orphans = maps.orphans(&mirror)?;
    for op in &orphans {
        maps.apply(op)?;
    }
    let mut src = ManifestDir::new(&cfg.manifests);
    let node_name = cfg.node_name.clone();
    let is_external = |name: &str| cfg.external_interfaces.iter().any(|e| e == name);
    let is_pod = |name: &str| cfg.pod_interfaces.iter().any(|g| g.matches(name));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(POLL);
    let mut first = true;
    let mut reported = BTreeSet::new();
    let mut failed_attach: Vec<(String, String)> = Vec::new();
    let mut dir_error: Option<String> = None;
    let mut fallback_addresses = Vec::new();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        let (new, failed) = dp.sync_interfaces(is_pod, is_external);
        for (interface, hook) in new {
            tracing::info!(%interface, hook = hook.name(), "attached");
        }
        // Failures are retried every poll but logged once per interface and reason.
        failed_attach.retain(|f| failed.contains(f));
        for f in failed {
            if !failed_attach.contains(&f) {
                tracing::error!(interface = %f.0, "cannot attach: {}", f.1);
                failed_attach.push(f);
            }
        }
        let report = match src.rescan() {
            Ok(r) => {
                dir_error = None;
                r
            }
            Err(e) => {
                let e = e.to_string();
                if dir_error.as_ref() != Some(&e) {
                    tracing::error!(dir = %cfg.manifests.display(), "cannot read manifests directory: {e}");
                    dir_error = Some(e);
                }
                continue;
            }
        };
        for e in &report.errors {
            tracing::error!("rejected manifest, keeping its last good state: {e}");
        }
        // The external interfaces' addresses are where NodePorts are served without a Node
        // object; an IPv6 address may well appear after the agent started.
        let addresses = interface_addresses(&cfg.external_interfaces);
        let addresses_changed = addresses != fallback_addresses;
        if addresses_changed && !first {
            tracing::info!(?addresses, "external interface addresses changed");
        }
        fallback_addresses = addresses;
        if report.changed || addresses_changed || first {
            first = false;
            let node = NodeInfo {
                name: node_name.clone(),
                fallback_addresses: fallback_addresses.clone(),
            };
            mirror = sync(&mut maps, &mirror, &src, &node, &mut reported);
        }
    }
    tracing::info!("stopping; the datapath stays pinned and keeps forwarding");
    Ok(())
}

/// Computes the desired state and writes the difference. Returns the new mirror.
/// Model warnings and plan errors stand until their cause is fixed; each is logged once, when
/// it first appears (`reported` holds the ones still standing).
fn sync(
    maps: &mut Maps,
    mirror: &MapState,
    src: &ManifestDir,
    node: &NodeInfo,
    reported: &mut BTreeSet<String>,
) -> MapState {
    let objs = src.objects();
    let built = model::build(&objs.services, &objs.slices, &objs.nodes, node);
    let plan = reconcile::plan(mirror, &built.state);
    let standing: BTreeSet<String> = built.warnings.iter().chain(&plan.errors).cloned().collect();
    for w in standing.difference(reported) {
        tracing::warn!("{w}");
    }
    *reported = standing;
    for op in &plan.ops {
        if let Err(e) = maps.apply(op) {
            tracing::error!("{e:#}; re-reading the maps");
            return maps.read_state().unwrap_or_default();
        }
    }
    tracing::info!(
        writes = plan.ops.len(),
        frontends = plan.next.frontends.len(),
        backends = plan.next.backends.len(),
        "synced"
    );
    plan.next
}
