//! The agent loop: source -> model -> reconciler -> maps, plus interface attachment.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, Notify};

use crate::{
    datapath::{accept_local, interface_addresses, Datapath, Maps, WriteError},
    http,
    metrics::METRICS,
    model::{Changes, DesiredState, Incremental, NodeInfo},
    reconcile::{self, MapState, Op, Planner, ReadBack, Touched},
    source::{KubeSource, ManifestSource, Source, Update},
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
    // The maps as read at start: the first sync plans against them in full.
    let mut mirror = Mirror::Full(pinned);
    let mut model: Option<Incremental> = None;
    let mut fallback_addresses = Vec::new();
    let mut reported = BTreeSet::new();
    let mut failed_attach: Vec<(String, String)> = Vec::new();
    // A resync's read of the maps, in flight on a thread of its own.
    let mut reading: Option<Reading> = None;
    loop {
        let (mut resync_due, mut poll_due) = (false, false);
        let mut read_back = None;
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => poll_due = true,
            _ = notified(&notify) => {}
            _ = resync.tick() => resync_due = true,
            r = read_done(&mut reading) => read_back = Some(r),
        }
        if let Some(read) = read_back {
            let r = reading.take().expect("a read was in flight");
            finish_resync(&mut maps, mirror.state(), r, read);
        }
        // Nothing is written (or repaired) before the source was complete once.
        if resync_due && source_ready && reading.is_none() {
            reading = Some(Reading::start(&cfg.bpf_root));
        }
        // Interfaces and their addresses are polled on the tick only: a wake-up for a change
        // goes straight to the sync (listing a node's interfaces and addresses takes
        // milliseconds on a node with many pods).
        let mut addresses_changed = false;
        if poll_due {
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
            // The external interfaces' addresses are where NodePorts are served without a
            // Node object; they may change while the agent runs.
            let addresses = interface_addresses(&cfg.external_interfaces);
            addresses_changed = addresses != fallback_addresses;
            if addresses_changed && source_ready {
                tracing::info!(?addresses, "external interface addresses changed");
            }
            fallback_addresses = addresses;
        }
        let update = src.poll();
        source_ready |= update.is_some();
        // A resync also retries a sync that had errors (in full).
        let retry = resync_due && matches!(mirror, Mirror::Full(_));
        // Nothing is written before the source was complete once.
        if !source_ready || !(update.is_some() || addresses_changed || retry) {
            continue;
        }
        let resync_only = update.is_none() && !addresses_changed;
        let start = Instant::now();
        let mut events = Vec::new();
        match update {
            Some(Update {
                events: e,
                delta: Some(delta),
            }) if model.is_some() => {
                events = e;
                let m = model.as_mut().unwrap();
                for (key, objs) in delta.services {
                    m.set_services(&key, objs);
                }
                for (key, objs) in delta.slices {
                    m.set_slices(&key, &objs);
                }
                if let Some(nodes) = delta.nodes {
                    m.set_nodes(nodes);
                }
            }
            Some(u) => {
                // The first state or a re-list: the model is computed again from scratch.
                events = u.events;
                model = None;
            }
            None => {}
        }
        let mut full = !matches!(mirror, Mirror::Incremental(_));
        let m = match &mut model {
            Some(m) => m,
            None => {
                full = true;
                let objs = src.objects();
                let node = NodeInfo {
                    name: node_name.clone(),
                    fallback_addresses: fallback_addresses.clone(),
                };
                model.insert(Incremental::from_objects(
                    &objs.services,
                    &objs.slices,
                    &objs.nodes,
                    node,
                ))
            }
        };
        m.set_fallback_addresses(fallback_addresses.clone());
        m.recompute();
        let changes = m.take_changes();
        let ctx = SyncCtx {
            start,
            modelled: Instant::now(),
            events: &events,
            resync: resync_only,
        };
        let touched = reading.as_mut().map(|r| &mut r.touched);
        mirror = match (full, mirror) {
            (false, Mirror::Incremental(planner)) => {
                sync_incremental(&mut maps, planner, m, &changes, &mut reported, ctx, touched)
            }
            // An empty datapath (a fresh node): planned in batches, so that the first sync
            // of a big cluster never holds all its writes at once.
            (_, Mirror::Full(state)) if state.is_empty() => {
                sync_fresh(&mut maps, state, m, changes, &mut reported, ctx, touched)
            }
            (_, mirror) => sync_full(
                &mut maps,
                mirror.into_state(),
                m,
                &mut reported,
                ctx,
                touched,
            ),
        };
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

/// A resync's read of the maps ([`Maps::read_back`]), on a thread of its own with handles of
/// its own, so that the loop keeps serving events meanwhile.
struct Reading {
    started: Instant,
    result: oneshot::Receiver<Result<ReadBack>>,
    /// What the loop wrote since the read started: [`reconcile::repair`] leaves it out.
    touched: Touched,
}

impl Reading {
    fn start(bpf_root: &Path) -> Reading {
        let (tx, result) = oneshot::channel();
        let root = bpf_root.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("podlb-resync".into())
            .spawn(move || {
                // Background work: the loop (and the sources) come first for the CPU.
                // SAFETY: setpriority on this thread's own id, no pointers.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                let _ = tx.send(Maps::read_back(&root));
            });
        // Without a thread the sender is gone and the read ends at once, with an error.
        if let Err(e) = spawned {
            tracing::error!("resync: cannot start the read: {e}");
        }
        Reading {
            started: Instant::now(),
            result,
            touched: Touched::default(),
        }
    }
}

/// The end of the read in flight (never, if there is none).
async fn read_done(reading: &mut Option<Reading>) -> Result<ReadBack> {
    match reading {
        Some(r) => (&mut r.result)
            .await
            .unwrap_or_else(|_| Err(anyhow!("the read ended without a result"))),
        None => std::future::pending().await,
    }
}

/// Ends a resync: compares the maps as read with the mirror and writes back what differs
/// (entries changed behind the agent's back), leaving out what the loop wrote meanwhile.
fn finish_resync(maps: &mut Maps, mirror: &MapState, r: Reading, read: Result<ReadBack>) {
    let start = Instant::now();
    let read_us = (start - r.started).as_micros() as u64;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::error!("resync: cannot read the maps: {e:#}");
            METRICS.synced();
            return;
        }
    };
    let ops = reconcile::repair(mirror, &read, &r.touched);
    drop(read);
    let compared = Instant::now();
    let written = write(maps, &ops, None);
    let done = Instant::now();
    METRICS.drift_repairs.add(written as u64);
    METRICS.map_writes.add(written as u64);
    METRICS.sync_duration.observe(done - start);
    METRICS.syncs.inc();
    if written == ops.len() {
        METRICS.synced();
    }
    // The time the loop spent: comparing (with freeing the read-back) and writing.
    let compare_us = (compared - start).as_micros() as u64;
    let write_us = (done - compared).as_micros() as u64;
    if written > 0 {
        tracing::warn!(
            repairs = written,
            read_us,
            compare_us,
            write_us,
            "repaired map entries changed behind the agent's back"
        );
    } else {
        tracing::debug!(read_us, compare_us, "resync: the maps match the mirror");
    }
}

/// The agent's mirror of the maps: a plain mirror, planned against in full, or the
/// incremental planner (after a full plan without errors whose writes all succeeded).
enum Mirror {
    Full(MapState),
    Incremental(Planner),
}

impl Mirror {
    fn state(&self) -> &MapState {
        match self {
            Mirror::Full(s) => s,
            Mirror::Incremental(p) => p.state(),
        }
    }

    fn into_state(self) -> MapState {
        match self {
            Mirror::Full(s) => s,
            Mirror::Incremental(p) => p.into_state(),
        }
    }
}

#[derive(Clone, Copy)]
struct SyncCtx<'a> {
    start: Instant,
    modelled: Instant,
    /// The arrival times of the changes this sync applies.
    events: &'a [Instant],
    /// A sync only the resync timer asked for (a retry after errors).
    resync: bool,
}

/// Logs the model warnings and plan errors that are new; each stands until its cause is
/// fixed and is logged once, when it first appears (`reported` holds the ones still standing).
fn report(model: &Incremental, errors: &[String], reported: &mut BTreeSet<String>) {
    let standing: BTreeSet<String> = model
        .warnings()
        .into_iter()
        .chain(errors.iter().cloned())
        .collect();
    for w in standing.difference(reported) {
        tracing::warn!("{w}");
    }
    *reported = standing;
    METRICS.map_full_errors.add(errors.len() as u64);
}

/// Writes `ops` in order, noting them in `touched` (while a resync's read is in flight); on
/// the first failure counts and logs it. Returns the number of ops written.
fn write(maps: &mut Maps, ops: &[Op], touched: Option<&mut Touched>) -> usize {
    if let Some(t) = touched {
        t.record(ops);
    }
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = maps.apply(op) {
            match e {
                WriteError::Full(..) => METRICS.map_full_errors.inc(),
                WriteError::Failed(..) | WriteError::Cpus(_) => METRICS.map_write_errors.inc(),
            }
            tracing::error!("{:#}", anyhow::Error::from(e));
            return i;
        }
    }
    ops.len()
}

/// The mirror after a failed write: the maps as they are, planned against in full next time.
/// A resync's read in flight is void (the mirror changed without writes to match).
fn reread(maps: &Maps, touched: Option<&mut Touched>) -> Mirror {
    tracing::info!("re-reading the maps");
    if let Some(t) = touched {
        t.all = true;
    }
    Mirror::Full(maps.read_state().unwrap_or_default())
}

/// Metrics and the log line of a sync whose writes all succeeded.
fn synced(ctx: SyncCtx, planned: Instant, writes: usize, state: &MapState, services: usize) {
    let done = Instant::now();
    METRICS.sync_duration.observe(done - ctx.start);
    METRICS.event_latency.observe_many(
        ctx.events
            .iter()
            .map(|t| done.saturating_duration_since(*t)),
    );
    METRICS.syncs.inc();
    METRICS.map_writes.add(writes as u64);
    METRICS.services.set(services as u64);
    METRICS.frontends.set(state.frontends.len() as u64);
    METRICS.backends.set(state.backends.len() as u64);
    METRICS.synced();
    // A periodic resync that found nothing to do is not worth a line.
    if !(ctx.resync && writes == 0) {
        tracing::info!(
            writes,
            frontends = state.frontends.len(),
            backends = state.backends.len(),
            events = ctx.events.len(),
            duration_us = (done - ctx.start).as_micros() as u64,
            model_us = (ctx.modelled - ctx.start).as_micros() as u64,
            plan_us = (planned - ctx.modelled).as_micros() as u64,
            "synced"
        );
    }
}

/// Writes the difference the model's changes make, planned for the changed frontends only.
fn sync_incremental(
    maps: &mut Maps,
    mut planner: Planner,
    model: &Incremental,
    changes: &Changes,
    reported: &mut BTreeSet<String>,
    ctx: SyncCtx,
    mut touched: Option<&mut Touched>,
) -> Mirror {
    let (ops, errors) = planner.plan(model.state(), changes);
    let planned = Instant::now();
    report(model, &errors, reported);
    if write(maps, &ops, touched.as_deref_mut()) < ops.len() {
        return reread(maps, touched);
    }
    synced(ctx, planned, ops.len(), planner.state(), planner.services());
    match errors.is_empty() {
        true => Mirror::Incremental(planner),
        // Something was left out: the next sync plans in full, so it is retried.
        false => Mirror::Full(planner.into_state()),
    }
}

/// Frontends planned and written per batch by [`sync_fresh`].
const FRESH_BATCH: usize = 500;

/// Programs an empty datapath (`state`: the maps as read, with nothing in them) with the
/// incremental planner, `FRESH_BATCH` frontends at a time: the writes of a batch are planned
/// and written before the next batch is planned, so a full sync of 10,000 Services holds a
/// few thousand writes at a time instead of 190,000. Each batch keeps the update order; the
/// ClusterIPs come with the last batch, after every frontend exists. `changes` must name every
/// frontend of the model, as they do after its first computation; when they do not (a
/// re-list while the maps are empty), the model is planned in full instead.
fn sync_fresh(
    maps: &mut Maps,
    state: MapState,
    model: &Incremental,
    changes: Changes,
    reported: &mut BTreeSet<String>,
    ctx: SyncCtx,
    mut touched: Option<&mut Touched>,
) -> Mirror {
    let all_new = changes.frontends.values().all(Option::is_none);
    if !all_new || changes.frontends.len() != model.state().frontends.len() {
        return sync_full(maps, state, model, reported, ctx, touched);
    }
    let mut planner = Planner::new(state, &DesiredState::default());
    let Changes {
        frontends,
        cluster_ips,
        ..
    } = changes;
    let mut frontends = frontends.into_iter().peekable();
    let (mut writes, mut errors, mut first) = (0, Vec::new(), true);
    let mut cluster_ips = Some(cluster_ips);
    loop {
        let batch: BTreeMap<_, _> = frontends.by_ref().take(FRESH_BATCH).collect();
        let last = frontends.peek().is_none();
        let batch = Changes {
            frontends: batch,
            cluster_ips: match last {
                true => cluster_ips.take().unwrap_or_default(),
                false => BTreeSet::new(),
            },
            node_addresses: std::mem::replace(&mut first, false),
        };
        let (ops, e) = planner.plan(model.state(), &batch);
        errors.extend(e);
        if write(maps, &ops, touched.as_deref_mut()) < ops.len() {
            report(model, &errors, reported);
            return reread(maps, touched);
        }
        writes += ops.len();
        if last {
            break;
        }
    }
    report(model, &errors, reported);
    synced(
        ctx,
        ctx.modelled,
        writes,
        planner.state(),
        planner.services(),
    );
    match errors.is_empty() {
        true => Mirror::Incremental(planner),
        false => Mirror::Full(planner.into_state()),
    }
}

/// Plans the whole desired state against the mirror.
fn sync_full(
    maps: &mut Maps,
    mirror: MapState,
    model: &Incremental,
    reported: &mut BTreeSet<String>,
    ctx: SyncCtx,
    mut touched: Option<&mut Touched>,
) -> Mirror {
    let desired = model.state();
    let plan = reconcile::plan(&mirror, desired);
    let planned = Instant::now();
    drop(mirror);
    report(model, &plan.errors, reported);
    if write(maps, &plan.ops, touched.as_deref_mut()) < plan.ops.len() {
        return reread(maps, touched);
    }
    let services: BTreeSet<&str> = plan
        .next
        .frontends
        .values()
        .map(|f| f.name.split(':').next().unwrap_or(""))
        .collect();
    synced(ctx, planned, plan.ops.len(), &plan.next, services.len());
    match plan.errors.is_empty() {
        true => Mirror::Incremental(Planner::new(plan.next, desired)),
        false => Mirror::Full(plan.next),
    }
}
