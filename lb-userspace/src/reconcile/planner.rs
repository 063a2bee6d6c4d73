//! The incremental planner: between two syncs, only the frontends the model says changed are
//! planned, with the ops the full plan would give.
use std::collections::{BTreeSet, HashMap};

use lb_common::{FrontendKey, MAX_BACKENDS, MAX_SERVICES};

use super::ids::IdPool;
use super::plan::{plan_frontend, removal_ops};
use super::{
    config_for, frontend_key, same_family, vip_key, BackendKey, MapState, Op, UpdateOrder,
};
use crate::model::{Changes, DesiredState, FrontendSpec};
use crate::types::FrontendAddr;

/// The same-family backends a frontend wants, each once.
fn wanted_keys(fe: &FrontendAddr, spec: Option<&FrontendSpec>) -> Vec<BackendKey> {
    let mut keys: Vec<BackendKey> = spec
        .into_iter()
        .flat_map(|s| &s.backends)
        .filter(|b| same_family(fe, b))
        .map(|b| BackendKey::new(*b, fe.proto))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The Service part of a frontend name ("namespace/name:port" -> "namespace/name").
pub(crate) fn service_of(name: &str) -> &str {
    name.split(':').next().unwrap_or("")
}

/// The reconciler between syncs: the mirror of the maps as the full plan ([`plan`]) left them
/// for a desired state, with what an incremental plan needs to touch only the frontends that
/// changed: the id of every backend, how many desired frontends want it (backends are shared
/// between frontends), and the free ids.
///
/// [`Planner::plan`] gives exactly the ops [`plan`] would give for the new desired state (the
/// unchanged frontends need none), in the same update order. It holds only as long as the
/// mirror is what the last plan left: after a plan with errors (a full map) or a failed write,
/// start again from a full [`plan`] and [`Planner::new`]. A resync's [`repair`] brings the
/// maps back to the mirror and leaves the planner valid.
///
/// [`plan`]: super::plan()
/// [`repair`]: super::repair()
#[derive(Debug)]
pub struct Planner {
    state: MapState,
    backend_ids: HashMap<BackendKey, u32>,
    refs: HashMap<BackendKey, u32>,
    backend_pool: IdPool,
    svc_pool: IdPool,
    /// Frontends per Service ("namespace/name").
    services: HashMap<String, u32>,
}

impl Planner {
    /// `state` must be the `next` of a full plan for `desired` that had no errors.
    pub fn new(state: MapState, desired: &DesiredState) -> Self {
        let mut refs: HashMap<BackendKey, u32> = HashMap::new();
        for (fe, spec) in &desired.frontends {
            for k in wanted_keys(fe, Some(spec)) {
                *refs.entry(k).or_default() += 1;
            }
        }
        let mut services: HashMap<String, u32> = HashMap::new();
        for f in state.frontends.values() {
            *services.entry(service_of(&f.name).to_string()).or_default() += 1;
        }
        Planner {
            backend_ids: state.backends.iter().map(|(id, k)| (*k, *id)).collect(),
            refs,
            backend_pool: IdPool::new(state.backends.keys().copied(), MAX_BACKENDS),
            svc_pool: IdPool::new(state.frontends.values().map(|f| f.svc_id), MAX_SERVICES),
            services,
            state,
        }
    }

    /// What the maps hold once the last plan is applied.
    pub fn state(&self) -> &MapState {
        &self.state
    }

    pub fn into_state(self) -> MapState {
        self.state
    }

    /// Services with at least one frontend in the maps.
    pub fn services(&self) -> usize {
        self.services.len()
    }

    fn count_service(&mut self, name: &str, add: bool) {
        let s = service_of(name);
        if add {
            *self.services.entry(s.to_string()).or_default() += 1;
        } else if let Some(n) = self.services.get_mut(s) {
            *n -= 1;
            if *n == 0 {
                self.services.remove(s);
            }
        }
    }

    /// Plans the writes for `desired`, which differs from the last desired state only as
    /// `changes` says, and updates the mirror. The ops are those the full plan
    /// would give.
    pub fn plan(&mut self, desired: &DesiredState, changes: &Changes) -> (Vec<Op>, Vec<String>) {
        let mut errors = Vec::new();
        // Backends: count the new references before dropping the old ones, so a backend that
        // moves from one frontend to another is never dropped.
        let mut new_keys = BTreeSet::new();
        for fe in changes.frontends.keys() {
            for k in wanted_keys(fe, desired.frontends.get(fe)) {
                let n = self.refs.entry(k).or_default();
                *n += 1;
                if *n == 1 && !self.backend_ids.contains_key(&k) {
                    new_keys.insert(k);
                }
            }
        }
        let mut gone = Vec::new();
        for (fe, old) in &changes.frontends {
            for k in wanted_keys(fe, old.as_ref()) {
                if let Some(n) = self.refs.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.refs.remove(&k);
                        if let Some(id) = self.backend_ids.remove(&k) {
                            gone.push(id);
                        }
                    }
                }
            }
        }
        let mut set_backends = Vec::new();
        for k in new_keys {
            match self.backend_pool.alloc() {
                Some(id) => {
                    set_backends.push(Op::SetBackend(id, k));
                    self.backend_ids.insert(k, id);
                    self.state.backends.insert(id, k);
                }
                None => errors.push(format!(
                    "backend {} left out: backend map full",
                    k.socket_addr()
                )),
            }
        }
        gone.sort_unstable();
        for id in &gone {
            self.state.backends.remove(id);
        }

        // Frontends, in key order like the full plan.
        let mut fes: Vec<(FrontendKey, &FrontendAddr)> = changes
            .frontends
            .keys()
            .map(|fe| (frontend_key(fe), fe))
            .collect();
        fes.sort_unstable_by_key(|a| a.0);
        let mut fo = UpdateOrder::default();
        let mut removals = Vec::new();
        let mut freed_svcs = Vec::new();
        for (key, fe) in fes {
            match desired.frontends.get(fe) {
                Some(spec) => {
                    let old = self.state.frontends.get(&key);
                    let old_name = old.map(|o| o.name.clone());
                    let backend_ids = &self.backend_ids;
                    let svc_pool = &mut self.svc_pool;
                    let new = plan_frontend(
                        &key,
                        fe,
                        spec,
                        old,
                        |k| backend_ids.get(k).copied(),
                        &mut || svc_pool.alloc(),
                        &mut errors,
                        &mut fo,
                    );
                    if let Some(new) = new {
                        if old_name.as_ref() != Some(&new.name) {
                            if let Some(n) = &old_name {
                                self.count_service(n, false);
                            }
                            self.count_service(&new.name, true);
                        }
                        self.state.frontends.insert(key, new);
                    }
                }
                None => {
                    if let Some(old) = self.state.frontends.remove(&key) {
                        removal_ops(&key, &old, &mut removals);
                        freed_svcs.push(old.svc_id);
                        self.count_service(&old.name, false);
                    }
                }
            }
        }

        // ClusterIPs, after their frontends exist and before they go.
        let (mut add_vips, mut del_vips) = (Vec::new(), Vec::new());
        for ip in &changes.cluster_ips {
            let vk = vip_key(*ip);
            match (
                desired.cluster_ips.contains(ip),
                self.state.vips.contains(&vk),
            ) {
                (true, false) => add_vips.push(vk),
                (false, true) => del_vips.push(vk),
                _ => {}
            }
        }
        add_vips.sort_unstable();
        del_vips.sort_unstable();
        for vk in &add_vips {
            self.state.vips.insert(*vk);
        }
        for vk in &del_vips {
            self.state.vips.remove(vk);
        }
        let mut config = None;
        if changes.node_addresses {
            let c = config_for(desired);
            if c != self.state.config {
                self.state.config = c;
                config = Some(Op::SetConfig(c));
            }
        }

        // Ids freed by this plan are reused only by a later one.
        for id in &gone {
            self.backend_pool.release(*id);
        }
        for id in freed_svcs {
            self.svc_pool.release(id);
        }
        // Slots beyond a shrunk count go first, then the removed frontends.
        fo.removals.extend(removals);
        let ops = UpdateOrder {
            config,
            backends: set_backends,
            add_vips: add_vips.into_iter().map(Op::SetVip).collect(),
            del_vips: del_vips.into_iter().map(Op::DelVip).collect(),
            del_backends: gone.into_iter().map(Op::DelBackend).collect(),
            ..fo
        }
        .into_ops();
        (ops, errors)
    }
}
