//! The agent loop: source -> model -> reconciler -> maps, plus interface attachment.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::{
    datapath::{accept_local, interface_addresses, Datapath, Maps},
    kube_source::KubeSource,
    manifests::Objects,
    metrics::{self, METRICS},
    model::{self, NodeInfo},
    reconcile::{self, MapState},
    source::{ManifestSource, Source},
};

/// Where the Kubernetes objects come from.
pub enum SourceConfig {
    Manifests(PathBuf),
    /// The API server, through this kubeconfig or (None) the in-cluster config.
    Kubernetes(Option<PathBuf>),
}

pub struct AgentConfig {
    pub source: SourceConfig,
    pub node_name: String,
    pub external_interfaces: Vec<String>,
    pub pod_interfaces: Vec<glob::Pattern>,
    pub bpf_root: PathBuf,
    pub healthz_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// How often the maps are re-read and repaired (and everything re-synced).
    pub resync_interval: Duration,
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
    // Healthy while syncs keep coming: a resync at least every interval (and some slack for
    // a loaded machine).
    METRICS.set_health_timeout((cfg.resync_interval * 2).max(Duration::from_secs(10)));
    if let Some(addr) = cfg.healthz_addr {
        metrics::serve_health(addr).unwrap_or_else(|e| tracing::error!("{e:#}"));
    }
    if let Some(addr) = cfg.metrics_addr {
        metrics::serve_metrics(addr, cfg.bpf_root.clone())
            .unwrap_or_else(|e| tracing::error!("{e:#}"));
    }
    let mut src: Box<dyn Source> = match &cfg.source {
        SourceConfig::Manifests(dir) => Box::new(ManifestSource::new(dir)),
        SourceConfig::Kubernetes(kubeconfig) => {
            Box::new(KubeSource::start(kubeconfig.as_deref(), &cfg.node_name)?)
        }
    };
    let notify = src.notify();
    let node_name = cfg.node_name.clone();
    let is_external = |name: &str| cfg.external_interfaces.iter().any(|e| e == name);
    let is_pod = |name: &str| cfg.pod_interfaces.iter().any(|g| g.matches(name));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(POLL);
    let mut resync = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.resync_interval,
        cfg.resync_interval,
    );
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut source_ready = false;
    let mut fallback_addresses = Vec::new();
    let mut reported = BTreeSet::new();
    let mut failed_attach: Vec<(String, String)> = Vec::new();
    loop {
        let mut check_drift = false;
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
            _ = notified(&notify) => {}
            _ = resync.tick() => check_drift = true,
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
        // The external interfaces' addresses are where NodePorts are served without a Node
        // object; they may change while the agent runs.
        let addresses = interface_addresses(&cfg.external_interfaces);
        let addresses_changed = addresses != fallback_addresses;
        if addresses_changed && source_ready {
            tracing::info!(?addresses, "external interface addresses changed");
        }
        fallback_addresses = addresses;
        let mut events = Vec::new();
        let mut changed = addresses_changed;
        if let Some(ev) = src.poll() {
            source_ready = true;
            changed = true;
            events = ev;
        }
        // Nothing is written before the source was complete once.
        if !source_ready || !(changed || check_drift) {
            continue;
        }
        // A resync plans against the maps as they are, which repairs what was changed
        // behind the agent's back.
        let actual = match check_drift {
            true => read_actual(&mut maps),
            false => None,
        };
        let node = NodeInfo {
            name: node_name.clone(),
            fallback_addresses: fallback_addresses.clone(),
        };
        mirror = sync(
            &mut maps,
            &mirror,
            actual.as_ref(),
            src.objects(),
            &node,
            &mut reported,
            &events,
        );
    }
    tracing::info!("stopping; the datapath stays pinned and keeps forwarding");
    Ok(())
}

async fn notified(notify: &Option<Arc<Notify>>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// The maps as they are, with orphaned slots and names deleted (counted as repairs).
fn read_actual(maps: &mut Maps) -> Option<MapState> {
    let actual = maps
        .read_state()
        .map_err(|e| tracing::error!("resync: cannot read the maps: {e:#}"))
        .ok()?;
    for op in maps.orphans(&actual).unwrap_or_default() {
        match maps.apply(&op) {
            Ok(()) => METRICS.drift_repairs.inc(),
            Err(e) => tracing::error!("resync: {e:#}"),
        }
    }
    Some(actual)
}

/// Computes the desired state and writes the difference. Returns the new mirror.
/// With `actual` (a resync), the plan starts from the maps as read, and the writes beyond
/// those the mirror needed are drift repairs. `events` are the arrival times of the changes
/// this sync applies. Model warnings and plan errors stand until their cause is fixed; each is
/// logged once, when it first appears (`reported` holds the ones still standing).
fn sync(
    maps: &mut Maps,
    mirror: &MapState,
    actual: Option<&MapState>,
    objs: &Objects,
    node: &NodeInfo,
    reported: &mut BTreeSet<String>,
    events: &[Instant],
) -> MapState {
    let start = Instant::now();
    let built = model::build(&objs.services, &objs.slices, &objs.nodes, node);
    let modelled = Instant::now();
    let plan = reconcile::plan(actual.unwrap_or(mirror), &built.state);
    let planned = Instant::now();
    let mut repairs = 0;
    if actual.is_some_and(|a| a != mirror) {
        repairs = plan
            .ops
            .len()
            .saturating_sub(reconcile::plan(mirror, &built.state).ops.len());
    }
    let standing: BTreeSet<String> = built.warnings.iter().chain(&plan.errors).cloned().collect();
    for w in standing.difference(reported) {
        tracing::warn!("{w}");
    }
    *reported = standing;
    METRICS.map_full_errors.add(plan.errors.len() as u64);
    for op in &plan.ops {
        if let Err(e) = maps.apply(op) {
            let full = e
                .chain()
                .any(|c| match c.downcast_ref::<aya::maps::MapError>() {
                    Some(aya::maps::MapError::SyscallError(e)) => {
                        matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
                    }
                    _ => false,
                });
            match full {
                true => METRICS.map_full_errors.inc(),
                false => METRICS.map_write_errors.inc(),
            }
            tracing::error!("{e:#}; re-reading the maps");
            return maps.read_state().unwrap_or_default();
        }
    }
    let done = Instant::now();
    METRICS.sync_duration.observe(done - start);
    METRICS
        .event_latency
        .observe_many(events.iter().map(|t| done.saturating_duration_since(*t)));
    METRICS.syncs.inc();
    METRICS.map_writes.add(plan.ops.len() as u64);
    METRICS.drift_repairs.add(repairs as u64);
    let services: BTreeSet<&str> = plan
        .next
        .frontends
        .values()
        .map(|f| f.name.split(':').next().unwrap_or(""))
        .collect();
    METRICS.services.set(services.len() as u64);
    METRICS.frontends.set(plan.next.frontends.len() as u64);
    METRICS.backends.set(plan.next.backends.len() as u64);
    METRICS.synced();
    if repairs > 0 {
        tracing::warn!(
            repairs,
            "repaired map entries changed behind the agent's back"
        );
    }
    // A periodic resync that found nothing to do is not worth a line.
    if !(actual.is_some() && plan.ops.is_empty()) {
        tracing::info!(
            writes = plan.ops.len(),
            frontends = plan.next.frontends.len(),
            backends = plan.next.backends.len(),
            events = events.len(),
            duration_us = (done - start).as_micros() as u64,
            model_us = (modelled - start).as_micros() as u64,
            plan_us = (planned - modelled).as_micros() as u64,
            "synced"
        );
    }
    plan.next
}
