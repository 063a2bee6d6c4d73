//! The agent: one loop that takes the source's changes through the model and the reconciler to
//! the maps, attaches the programs to the node's interfaces, and repairs the maps when they
//! drift from what it wrote.
//!
//! # Failure policy
//!
//! The datapath keeps forwarding with what the maps hold: nothing is torn down because
//! something failed, and what failed is retried.
//! - **Start.** The agent stops with the error when it lacks a capability it needs
//!   ([`caps`](crate::caps)), the datapath cannot be loaded or adopted,
//!   the maps cannot be opened or read, a slot or name left over by a crash (an orphan) cannot
//!   be deleted, the Kubernetes configuration cannot be loaded, or the signal handlers cannot
//!   be installed. When `all.accept_local` cannot be set (a read-only /proc/sys), it is set on
//!   each interface the programs are attached to, by netlink; when the health or metrics
//!   address cannot be bound, that is logged and the agent runs on (without that server).
//! - **The source is incomplete or unreachable.** Nothing is written (nor repaired) before the
//!   source was complete once (every watch listed, or the manifests read): until then the maps
//!   keep what they hold, so pins adopted from the last agent go on forwarding, and /healthz
//!   answers 503. After that, an unreachable API server means no updates: the watches retry
//!   (`podlb_watch_errors_total`), the maps keep the last state, and resyncs go on. A re-list
//!   hands over a whole state again: the model is rebuilt from it and planned in full. A
//!   manifests directory that cannot be read, or a manifest that is rejected, is logged (once
//!   per distinct error) and the source keeps the file's last good state.
//! - **A bad object.** What the model cannot use (a Service or EndpointSlice it cannot
//!   translate, a frontend two Services claim) is left out with a warning, logged once when it
//!   appears and standing until its cause is fixed; everything else is programmed.
//! - **A map or id space is full.** The plan leaves out the frontends or backends that do not
//!   fit, logged once while they stand and counted in `podlb_map_full_errors_total` by every
//!   sync that leaves them out; the rest is written. The next sync plans in full, and a resync
//!   retries even without changes, so they go in once there is room.
//! - **A write fails.** The sync stops at that write, counts it (`podlb_map_full_errors_total`
//!   for a full map, E2BIG or ENOSPC; `podlb_map_write_errors_total` for anything else), logs
//!   it, and re-reads the maps as they are (an empty mirror when that read fails too); the next
//!   sync plans in full against them, at the latest at the next resync. A resync's read in
//!   flight is void. The sync does not count, neither in `podlb_syncs_total` nor for /healthz.
//! - **A resync's read fails** (or its thread cannot be started): logged, nothing is repaired,
//!   /healthz is refreshed all the same (the resync does not count in `podlb_syncs_total`),
//!   and the next interval reads again. A repair write that fails is counted and logged as
//!   any write; the mirror stays, the resync counts as a sync but does not refresh /healthz,
//!   and the next resync repairs again.
//! - **An attach fails.** Logged once per interface and reason, and retried on every poll
//!   (200 ms) while the interface exists.
//!
//! The parts: this file holds the configuration, the `Agent` and its loop ([`run`]);
//! `sync` the three kinds of sync (incremental, a fresh datapath in batches, full) and the map
//! writes; `resync` the periodic read of the maps on a thread of its own and the repair.
use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::Notify;
use tokio::time::Interval;

use crate::{
    datapath::{accept_local, interface_addresses, local_addresses, Datapath, Failures, Maps},
    http,
    metrics::METRICS,
    model::{Changes, Incremental, NodeInfo},
    reconcile::{MapState, ReadBack},
    source::{KubeSource, ManifestSource, Source, Update},
    types::NodePortAddresses,
};

mod resync;
mod sync;

use resync::{read_done, Reading};
use sync::{Mirror, SyncCtx, Writer};

/// The target of every log line of the agent, from whichever of its files: `podlb::agent`, as
/// operators filter them (e.g. `PODLB_LOG=info,podlb::agent=debug`).
const LOG: &str = "podlb::agent";

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
    /// The pods' address ranges (`--cluster-cidr`, at most one per family): traffic to a
    /// ClusterIP from a source outside them is masqueraded, as kube-proxy does. Empty: none is.
    pub cluster_cidrs: Vec<crate::types::Cidr>,
    /// The node addresses NodePorts are served on (`--nodeport-addresses`).
    pub nodeport_addresses: NodePortAddresses,
}

/// How often the manifests directory and the interface list are polled.
const POLL: Duration = Duration::from_millis(200);

/// Runs the agent until SIGTERM or SIGINT; the datapath stays pinned and keeps forwarding.
pub async fn run(cfg: AgentConfig) -> Result<()> {
    let mut agent = Agent::open(cfg)?;
    loop {
        let (mut resync_due, mut addresses_changed) = (false, false);
        match agent.wait().await {
            Wake::Stop => break,
            Wake::ReadDone(read) => agent.finish_resync(read),
            Wake::Resync => {
                resync_due = true;
                agent.start_resync();
            }
            Wake::Poll => addresses_changed = agent.poll_interfaces(),
            Wake::Changed => {}
        }
        agent.sync(resync_due, addresses_changed);
    }
    tracing::info!("stopping; the datapath stays pinned and keeps forwarding");
    Ok(())
}

/// What the loop wakes up for.
enum Wake {
    /// SIGTERM or SIGINT.
    Stop,
    /// The poll tick: interfaces, their addresses and the source are polled.
    Poll,
    /// The source has something (or may have).
    Changed,
    /// The resync timer: a read of the maps starts, and a sync that had errors is retried.
    Resync,
    /// The resync's read of the maps is done.
    ReadDone(Result<ReadBack>),
}

/// The agent between two turns of its loop.
struct Agent {
    cfg: AgentConfig,
    dp: Datapath,
    maps: Maps,
    src: Box<dyn Source>,
    notify: Option<Arc<Notify>>,
    term: Signal,
    int: Signal,
    tick: Interval,
    resync: Interval,
    /// The source was complete once: from then on the maps are written (and repaired).
    source_ready: bool,
    /// The mirror of the maps; at start, the maps as read, which the first sync plans against
    /// in full.
    mirror: Mirror,
    /// The model; None before the first sync and after a re-list.
    model: Option<Incremental>,
    /// The external interfaces' addresses: where NodePorts are served without a Node object.
    fallback_addresses: Vec<IpAddr>,
    /// Every address of the node's network namespace; read only with `--nodeport-addresses`
    /// CIDRs (they select among these).
    local_addresses: Vec<IpAddr>,
    /// The model warnings and plan errors standing, each logged when it first appeared.
    reported: BTreeSet<String>,
    /// The attachments failing, each logged when it first failed.
    failed_attach: Failures,
    /// A resync's read of the maps, in flight on a thread of its own.
    reading: Option<Reading>,
}

impl Agent {
    /// Opens (or adopts) the datapath and its maps, deletes the orphans a crash left, starts
    /// the health and metrics servers and the source, and sets up the signals and timers.
    fn open(cfg: AgentConfig) -> Result<Agent> {
        crate::caps::require()?;
        let dp = Datapath::open(&cfg.bpf_root)?;
        if let Err(e) = accept_local() {
            // Read-only /proc/sys (a container): each attached interface gets it instead.
            tracing::warn!("{e:#}: setting accept_local on each attached interface instead");
        }
        let mut maps = Maps::open(&cfg.bpf_root)?;
        let pinned = maps.read_state()?;
        tracing::info!(
            root = %cfg.bpf_root.display(),
            adopted = dp.adopted,
            frontends = pinned.frontends.len(),
            backends = pinned.backends.len(),
            "datapath ready"
        );
        let orphans = maps.orphans(&pinned)?;
        for op in &orphans {
            maps.apply(op)?;
        }
        // Healthy while syncs keep coming: a resync at least every interval (and some slack for
        // a loaded machine).
        METRICS.set_health_timeout((cfg.resync_interval * 2).max(Duration::from_secs(10)));
        if let Some(addr) = cfg.healthz_addr {
            http::serve_health(addr).unwrap_or_else(|e| tracing::error!("{e:#}"));
        }
        if let Some(addr) = cfg.metrics_addr {
            http::serve_metrics(addr, cfg.bpf_root.clone())
                .unwrap_or_else(|e| tracing::error!("{e:#}"));
        }
        let src: Box<dyn Source> = match &cfg.source {
            SourceConfig::Manifests(dir) => Box::new(ManifestSource::new(dir)),
            SourceConfig::Kubernetes(kubeconfig) => {
                Box::new(KubeSource::start(kubeconfig.as_deref(), &cfg.node_name)?)
            }
        };
        let notify = src.notify();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let tick = tokio::time::interval(POLL);
        let mut resync = tokio::time::interval_at(
            tokio::time::Instant::now() + cfg.resync_interval,
            cfg.resync_interval,
        );
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut agent = Agent {
            cfg,
            dp,
            maps,
            src,
            notify,
            term,
            int,
            tick,
            resync,
            source_ready: false,
            mirror: Mirror::Full(pinned),
            model: None,
            fallback_addresses: Vec::new(),
            local_addresses: Vec::new(),
            reported: BTreeSet::new(),
            failed_attach: Vec::new(),
            reading: None,
        };
        // Before the first sync: it then has the SNAT and NodePort addresses, and /healthz
        // turns ready only with the programs attached to the interfaces there are.
        agent.poll_interfaces();
        Ok(agent)
    }

    /// Waits for the next thing to do.
    async fn wait(&mut self) -> Wake {
        tokio::select! {
            _ = self.term.recv() => Wake::Stop,
            _ = self.int.recv() => Wake::Stop,
            _ = self.tick.tick() => Wake::Poll,
            _ = notified(&self.notify) => Wake::Changed,
            _ = self.resync.tick() => Wake::Resync,
            r = read_done(&mut self.reading) => Wake::ReadDone(r),
        }
    }

    /// Attaches to the interfaces that need it and reads the external interfaces' addresses;
    /// true when those changed. Interfaces and their addresses are polled on the tick only: a
    /// wake-up for a change goes straight to the sync (listing a node's interfaces and
    /// addresses takes milliseconds on a node with many pods).
    fn poll_interfaces(&mut self) -> bool {
        let is_external = |name: &str| self.cfg.external_interfaces.iter().any(|e| e == name);
        let is_pod = |name: &str| self.cfg.pod_interfaces.iter().any(|g| g.matches(name));
        let (new, failed) = self.dp.sync_interfaces(is_pod, is_external);
        for (interface, hook) in new {
            tracing::info!(%interface, hook = hook.name(), "attached");
        }
        // Failures are retried every poll but logged once per interface and reason.
        self.failed_attach.retain(|f| failed.contains(f));
        for f in failed {
            if !self.failed_attach.contains(&f) {
                tracing::error!(interface = %f.0, "cannot attach: {}", f.1);
                self.failed_attach.push(f);
            }
        }
        // The external interfaces' addresses are where NodePorts are served without a
        // Node object; they may change while the agent runs.
        let addresses = interface_addresses(&self.cfg.external_interfaces);
        let mut changed = addresses != self.fallback_addresses;
        if changed && self.source_ready {
            tracing::info!(?addresses, "external interface addresses changed");
        }
        self.fallback_addresses = addresses;
        // With `--nodeport-addresses` CIDRs, NodePorts are served on the node's addresses
        // within them, on any interface.
        if matches!(self.cfg.nodeport_addresses, NodePortAddresses::Cidrs(_)) {
            let local = local_addresses();
            if local != self.local_addresses {
                if self.source_ready {
                    tracing::info!(addresses = ?local, "node addresses changed");
                }
                self.local_addresses = local;
                changed = true;
            }
        }
        changed
    }

    /// Starts a resync's read of the maps, unless one is in flight. Nothing is repaired before
    /// the source was complete once.
    fn start_resync(&mut self) {
        if self.source_ready && self.reading.is_none() {
            self.reading = Some(Reading::start(&self.cfg.bpf_root));
        }
    }

    /// Ends the resync whose read is done: repairs what drifted.
    fn finish_resync(&mut self, read: Result<ReadBack>) {
        let r = self.reading.take().expect("a read was in flight");
        resync::finish(&mut self.maps, self.mirror.state(), r, read);
    }

    /// Takes what the source has and, when there is something to write (a change, new
    /// interface addresses, or a resync's retry of a sync that had errors), brings the model
    /// up to date and writes the difference.
    fn sync(&mut self, resync_due: bool, addresses_changed: bool) {
        let update = self.src.poll();
        self.source_ready |= update.is_some();
        // A resync also retries a sync that had errors (in full).
        let retry = resync_due && matches!(self.mirror, Mirror::Full(_));
        // Nothing is written before the source was complete once.
        if !self.source_ready || !(update.is_some() || addresses_changed || retry) {
            return;
        }
        let resync_only = update.is_none() && !addresses_changed;
        let start = Instant::now();
        let events = self.apply_update(update);
        let (full, changes) = self.recompute();
        let ctx = SyncCtx {
            start,
            modelled: Instant::now(),
            events: &events,
            resync: resync_only,
        };
        self.write(full, changes, ctx);
    }

    /// Applies the source's update to the model: its delta, or (the first state, or a
    /// re-list) nothing, and the model is computed again from scratch. Returns the arrival
    /// times of the changes.
    fn apply_update(&mut self, update: Option<Update>) -> Vec<Instant> {
        match update {
            Some(Update {
                events,
                delta: Some(delta),
            }) if self.model.is_some() => {
                let m = self.model.as_mut().unwrap();
                for (key, objs) in delta.services {
                    m.set_services(&key, objs);
                }
                for (key, objs) in delta.slices {
                    m.set_slices(&key, &objs);
                }
                if let Some(nodes) = delta.nodes {
                    m.set_nodes(nodes);
                }
                events
            }
            Some(u) => {
                self.model = None;
                u.events
            }
            None => Vec::new(),
        }
    }

    /// Brings the model up to date (building it from the source's objects when there is none)
    /// and returns its changes, and whether the sync must plan in full (a new model, or a
    /// mirror the incremental planner cannot take on).
    fn recompute(&mut self) -> (bool, Changes) {
        let mut full = !matches!(self.mirror, Mirror::Incremental(_));
        let m = match &mut self.model {
            Some(m) => m,
            None => {
                full = true;
                let objs = self.src.objects();
                let node = NodeInfo {
                    name: self.cfg.node_name.clone(),
                    fallback_addresses: self.fallback_addresses.clone(),
                    nodeport_addresses: self.cfg.nodeport_addresses.clone(),
                    local_addresses: self.local_addresses.clone(),
                    cluster_cidrs: self.cfg.cluster_cidrs.clone(),
                };
                self.model.insert(Incremental::from_objects(
                    &objs.services,
                    &objs.slices,
                    &objs.nodes,
                    node,
                ))
            }
        };
        m.set_fallback_addresses(self.fallback_addresses.clone());
        m.set_local_addresses(self.local_addresses.clone());
        m.recompute();
        (full, m.take_changes())
    }

    /// Plans and writes the model's changes against the mirror, which it replaces.
    fn write(&mut self, full: bool, changes: Changes, ctx: SyncCtx) {
        let model = self.model.as_ref().expect("the model was computed");
        let out = Writer {
            maps: &mut self.maps,
            reported: &mut self.reported,
            touched: self.reading.as_mut().map(|r| &mut r.touched),
        };
        let mirror = std::mem::replace(&mut self.mirror, Mirror::Full(MapState::default()));
        self.mirror = match (full, mirror) {
            (false, Mirror::Incremental(planner)) => out.incremental(planner, model, &changes, ctx),
            // An empty datapath (a fresh node): planned in batches, so that the first sync
            // of a big cluster never holds all its writes at once.
            (_, Mirror::Full(state)) if state.is_empty() => out.fresh(state, model, changes, ctx),
            (_, mirror) => out.full(mirror.into_state(), model, ctx),
        };
    }
}

async fn notified(notify: &Option<Arc<Notify>>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}
