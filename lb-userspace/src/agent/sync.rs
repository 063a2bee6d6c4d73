//! The agent's syncs: the mirror of the maps it plans against, the three ways of planning and
//! writing a sync (incremental, a fresh datapath in batches, full), the map writes, and the
//! metrics and log line of each sync.
use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use super::LOG;
use crate::{
    datapath::{Maps, WriteError},
    metrics::METRICS,
    model::{Changes, DesiredState, Incremental},
    reconcile::{self, service_of, MapState, Op, Planner, Touched},
};

/// The agent's mirror of the maps: a plain mirror, planned against in full, or the
/// incremental planner (after a full plan without errors whose writes all succeeded).
pub(super) enum Mirror {
    Full(MapState),
    Incremental(Box<Planner>),
}

impl Mirror {
    pub(super) fn state(&self) -> &MapState {
        match self {
            Mirror::Full(s) => s,
            Mirror::Incremental(p) => p.state(),
        }
    }

    pub(super) fn into_state(self) -> MapState {
        match self {
            Mirror::Full(s) => s,
            Mirror::Incremental(p) => p.into_state(),
        }
    }
}

#[derive(Clone, Copy)]
pub(super) struct SyncCtx<'a> {
    pub(super) start: Instant,
    pub(super) modelled: Instant,
    /// The arrival times of the changes this sync applies.
    pub(super) events: &'a [Instant],
    /// A sync only the resync timer asked for (a retry after errors).
    pub(super) resync: bool,
}

/// What a sync writes with: the maps, the model warnings and plan errors standing (see
/// [`Writer::report`]), and, while a resync's read is in flight, the record of what was
/// written.
pub(super) struct Writer<'a> {
    pub(super) maps: &'a mut Maps,
    pub(super) reported: &'a mut BTreeSet<String>,
    pub(super) touched: Option<&'a mut Touched>,
}

impl Writer<'_> {
    /// Logs the model warnings and plan errors that are new; each stands until its cause is
    /// fixed and is logged once, when it first appears (`reported` holds the ones still
    /// standing).
    fn report(&mut self, model: &Incremental, errors: &[String]) {
        let standing: BTreeSet<String> = model
            .warnings()
            .into_iter()
            .chain(errors.iter().cloned())
            .collect();
        for w in standing.difference(self.reported) {
            tracing::warn!(target: LOG, "{w}");
        }
        *self.reported = standing;
        METRICS.map_full_errors.add(errors.len() as u64);
    }

    /// [`write`]s `ops`, noting them while a resync's read is in flight.
    fn write(&mut self, ops: &[Op]) -> usize {
        write(self.maps, ops, self.touched.as_deref_mut())
    }

    /// The mirror after a failed write: the maps as they are, planned against in full next
    /// time. A resync's read in flight is void (the mirror changed without writes to match).
    fn reread(self) -> Mirror {
        tracing::info!(target: LOG, "re-reading the maps");
        if let Some(t) = self.touched {
            t.all = true;
        }
        Mirror::Full(self.maps.read_state().unwrap_or_default())
    }

    /// Writes the difference the model's changes make, planned for the changed frontends only.
    pub(super) fn incremental(
        mut self,
        mut planner: Box<Planner>,
        model: &Incremental,
        changes: &Changes,
        ctx: SyncCtx,
    ) -> Mirror {
        let (ops, errors) = planner.plan(model.state(), changes);
        let planned = Instant::now();
        self.report(model, &errors);
        if self.write(&ops) < ops.len() {
            return self.reread();
        }
        synced(ctx, planned, ops.len(), planner.state(), planner.services());
        match errors.is_empty() {
            true => Mirror::Incremental(planner),
            // Something was left out: the next sync plans in full, so it is retried.
            false => Mirror::Full(planner.into_state()),
        }
    }

    /// Programs an empty datapath (`state`: the maps as read, with nothing in them) with the
    /// incremental planner, `FRESH_BATCH` frontends at a time: the writes of a batch are
    /// planned and written before the next batch is planned, so a full sync of 10,000 Services
    /// holds a few thousand writes at a time instead of 190,000. Each batch keeps the update
    /// order; the ClusterIPs come with the last batch, after every frontend exists. `changes`
    /// must name every frontend of the model, as they do after its first computation; when
    /// they do not (a re-list while the maps are empty), the model is planned in full instead.
    pub(super) fn fresh(
        mut self,
        state: MapState,
        model: &Incremental,
        changes: Changes,
        ctx: SyncCtx,
    ) -> Mirror {
        let all_new = changes.frontends.values().all(Option::is_none);
        if !all_new || changes.frontends.len() != model.state().frontends.len() {
            return self.full(state, model, ctx);
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
            if self.write(&ops) < ops.len() {
                self.report(model, &errors);
                return self.reread();
            }
            writes += ops.len();
            if last {
                break;
            }
        }
        self.report(model, &errors);
        synced(
            ctx,
            ctx.modelled,
            writes,
            planner.state(),
            planner.services(),
        );
        match errors.is_empty() {
            true => Mirror::Incremental(Box::new(planner)),
            false => Mirror::Full(planner.into_state()),
        }
    }

    /// Plans the whole desired state against the mirror.
    pub(super) fn full(mut self, mirror: MapState, model: &Incremental, ctx: SyncCtx) -> Mirror {
        let desired = model.state();
        let plan = reconcile::plan(&mirror, desired);
        let planned = Instant::now();
        drop(mirror);
        self.report(model, &plan.errors);
        if self.write(&plan.ops) < plan.ops.len() {
            return self.reread();
        }
        let services: BTreeSet<&str> = plan
            .next
            .frontends
            .values()
            .map(|f| service_of(&f.name))
            .collect();
        synced(ctx, planned, plan.ops.len(), &plan.next, services.len());
        match plan.errors.is_empty() {
            true => Mirror::Incremental(Box::new(Planner::new(plan.next, desired))),
            false => Mirror::Full(plan.next),
        }
    }
}

/// Frontends planned and written per batch by [`Writer::fresh`].
const FRESH_BATCH: usize = 500;

/// Writes `ops` in order, noting them in `touched` (while a resync's read is in flight); on
/// the first failure counts and logs it. Returns the number of ops written.
pub(super) fn write(maps: &mut Maps, ops: &[Op], touched: Option<&mut Touched>) -> usize {
    if let Some(t) = touched {
        t.record(ops);
    }
    for (i, op) in ops.iter().enumerate() {
        if let Err(e) = maps.apply(op) {
            match e {
                WriteError::Full(..) => METRICS.map_full_errors.inc(),
                WriteError::Failed(..) | WriteError::Cpus(_) => METRICS.map_write_errors.inc(),
            }
            tracing::error!(target: LOG, "{:#}", anyhow::Error::from(e));
            return i;
        }
    }
    ops.len()
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
            target: LOG,
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
