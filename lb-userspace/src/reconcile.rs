//! The reconciler's pure half: given what the maps hold (`MapState`) and what the model wants
//! (`DesiredState`), plan the map writes (`Op`) that turn one into the other.
//!
//! Only differences are written, and in an order that never shows the datapath a half-written
//! backend set:
//! 1. new backends are written (nothing refers to them yet);
//! 2. names and zeroed counters of new frontends;
//! 3. the slots of each changed frontend (slot `i` always names a live backend, old or new);
//! 4. the frontend entry with its slot count: the switch that makes the new set visible;
//! 5. slots beyond the new count, removed frontends and their slots and names;
//! 6. backends that no slot refers to any more.
//!
//! IDs are stable: a frontend keeps its `svc_id` and a backend its `backend_id` as long as they
//! exist, so a restarted agent that re-reads the maps plans zero writes when nothing changed.
//! Both families share one id space for services and one for backends (one set of maps).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    ip::{from_addr, to_addr},
    Backend, Config, Frontend, FrontendKey, VipKey, FE_DROP_EMPTY, FE_SNAT, KIND_CLUSTER_IP,
    KIND_EXTERNAL_IP, KIND_LOAD_BALANCER, KIND_NODE_PORT, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE,
    MAX_SERVICES, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::model::{
    BackendAddr, Changes, DesiredState, FrontendAddr, FrontendKind, FrontendSpec, Proto,
};

/// A backend as the datapath sees it: address (either family), port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: u8,
}

impl BackendKey {
    pub fn new(b: BackendAddr, proto: Proto) -> Self {
        Self {
            ip: b.ip,
            port: b.port,
            proto: proto.number(),
        }
    }
    pub fn to_map(self) -> Backend {
        let (addr, family) = to_addr(self.ip);
        Backend {
            addr,
            port: self.port,
            proto: self.proto,
            family,
        }
    }
    pub fn from_map(b: &Backend) -> Self {
        Self {
            ip: from_addr(&b.addr, b.family),
            port: b.port,
            proto: b.proto,
        }
    }
    /// `10.244.0.5:8080`, `[fd00::5]:8080`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// One frontend as held in the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendState {
    pub svc_id: u32,
    pub name: String,
    /// `FE_*` flags and `KIND_*` as in the frontend entry.
    pub flags: u16,
    pub kind: u16,
    /// `slots[i]` is the backend id in slot `i`; its length is the frontend's count.
    pub slots: Vec<u32>,
}

/// A mirror of the service maps (frontends, slots, backends, names, ClusterIPs, config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    pub frontends: BTreeMap<FrontendKey, FrontendState>,
    pub backends: BTreeMap<u32, BackendKey>,
    pub vips: BTreeSet<VipKey>,
    pub config: Config,
}

impl MapState {
    /// No frontend, backend or ClusterIP (the config may be set).
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.backends.is_empty() && self.vips.is_empty()
    }
}

/// One map write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    SetBackend(u32, BackendKey),
    SetMeta(u32, String),
    ResetStats(u32),
    SetSlot {
        svc_id: u32,
        slot: u32,
        backend_id: u32,
    },
    SetFrontend(FrontendKey, Frontend),
    DelSlot {
        svc_id: u32,
        slot: u32,
    },
    DelFrontend(FrontendKey),
    DelMeta(u32),
    DelBackend(u32),
    SetVip(VipKey),
    DelVip(VipKey),
    SetConfig(Config),
}

/// The plan, and the state the maps hold once it is applied.
#[derive(Debug)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub next: MapState,
    /// Frontends or backends that did not fit (map or id space full). They are left out.
    pub errors: Vec<String>,
}

/// The datapath's view of a frontend's policy: `FE_*` flags and `KIND_*`.
pub fn flags_and_kind(spec: &FrontendSpec) -> (u16, u16) {
    let mut flags = 0;
    if spec.snat {
        flags |= FE_SNAT;
    }
    if spec.drop_when_empty {
        flags |= FE_DROP_EMPTY;
    }
    let kind = match spec.kind {
        FrontendKind::ClusterIp => KIND_CLUSTER_IP,
        FrontendKind::NodePort => KIND_NODE_PORT,
        FrontendKind::ExternalIp => KIND_EXTERNAL_IP,
        FrontendKind::LoadBalancer => KIND_LOAD_BALANCER,
    };
    (flags, kind)
}

/// SNAT sources: the first IPv4 and the first IPv6 node address (0.0.0.0 and ::, i.e. no SNAT
/// in that family, when there is none).
pub fn config_for(desired: &DesiredState) -> Config {
    let mut config = Config {
        snat_addr: [0; 4],
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
        snat_addr6: [0; 16],
    };
    if let Some(v4) = desired.node_addresses.iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }) {
        config.snat_addr = v4.octets();
    }
    if let Some(v6) = desired.node_addresses.iter().find_map(|a| match a {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }) {
        config.snat_addr6 = v6.octets();
    }
    config
}

pub fn frontend_key(f: &FrontendAddr) -> FrontendKey {
    let (addr, family) = to_addr(f.ip);
    FrontendKey {
        addr,
        port: f.port,
        proto: f.proto.number(),
        family,
    }
}

/// The `lb_frontends` key as an address: `10.96.0.10:80`, `[fd00::10]:80`.
pub fn frontend_socket_addr(k: &FrontendKey) -> SocketAddr {
    SocketAddr::new(from_addr(&k.addr, k.family), k.port)
}

pub fn vip_key(ip: IpAddr) -> VipKey {
    let (addr, family) = to_addr(ip);
    VipKey {
        addr,
        family,
        pad: [0; 3],
    }
}

pub fn vip_ip(k: &VipKey) -> IpAddr {
    from_addr(&k.addr, k.family)
}

fn same_family(fe: &FrontendAddr, b: &BackendAddr) -> bool {
    fe.ip.is_ipv4() == b.ip.is_ipv4()
}

/// Lowest ids not in `used`, starting at 1 (0 means "none" in the datapath).
struct IdAlloc {
    used: BTreeSet<u32>,
    next: u32,
    max: u32,
}

impl IdAlloc {
    fn new(used: impl IntoIterator<Item = u32>, max: u32) -> Self {
        Self {
            used: used.into_iter().collect(),
            next: 1,
            max,
        }
    }
    fn alloc(&mut self) -> Option<u32> {
        while self.next < self.max {
            let id = self.next;
            self.next += 1;
            if self.used.insert(id) {
                return Some(id);
            }
        }
        None
    }
}

pub fn plan(cur: &MapState, desired: &DesiredState) -> Plan {
    let mut errors = Vec::new();
    let mut next = MapState::default();

    // Backends: keep ids of those still wanted, allocate ids for new ones.
    let by_key: BTreeMap<BackendKey, u32> = cur.backends.iter().map(|(id, k)| (*k, *id)).collect();
    let mut wanted: BTreeSet<BackendKey> = BTreeSet::new();
    for (fe, spec) in &desired.frontends {
        wanted.extend(
            spec.backends
                .iter()
                .filter(|b| same_family(fe, b))
                .map(|b| BackendKey::new(*b, fe.proto)),
        );
    }
    // Ids freed by this plan are not reused before the next one: the old owner may still be
    // visible to the datapath until the end of this plan.
    let mut backend_ids = IdAlloc::new(cur.backends.keys().copied(), MAX_BACKENDS);
    let mut id_of: BTreeMap<BackendKey, u32> = BTreeMap::new();
    let mut set_backends = Vec::new();
    for k in &wanted {
        let id = match by_key.get(k) {
            Some(id) => *id,
            None => match backend_ids.alloc() {
                Some(id) => {
                    set_backends.push(Op::SetBackend(id, *k));
                    id
                }
                None => {
                    errors.push(format!(
                        "backend {} left out: backend map full",
                        k.socket_addr()
                    ));
                    continue;
                }
            },
        };
        id_of.insert(*k, id);
        next.backends.insert(id, *k);
    }

    // Frontends.
    let wanted_fes: BTreeMap<FrontendKey, _> = desired
        .frontends
        .iter()
        .map(|(f, s)| (frontend_key(f), (f, s)))
        .collect();
    let mut svc_ids = IdAlloc::new(cur.frontends.values().map(|f| f.svc_id), MAX_SERVICES);
    let mut fo = FrontendOps::default();
    for (key, (fe, spec)) in &wanted_fes {
        let state = plan_frontend(
            key,
            fe,
            spec,
            cur.frontends.get(key),
            |k| id_of.get(k).copied(),
            &mut || svc_ids.alloc(),
            &mut errors,
            &mut fo,
        );
        if let Some(state) = state {
            next.frontends.insert(*key, state);
        }
    }
    let FrontendOps {
        meta,
        slots,
        fronts,
        shrink,
    } = fo;

    let mut removals = Vec::new();
    for (key, old) in &cur.frontends {
        if next.frontends.contains_key(key) {
            continue;
        }
        removal_ops(key, old, &mut removals);
    }
    let del_backends = cur
        .backends
        .keys()
        .filter(|id| !next.backends.contains_key(id))
        .map(|id| Op::DelBackend(*id));

    // ClusterIPs are added once their frontends exist and removed before their frontends go,
    // so that a Service's own ports are never rejected while it changes.
    next.vips = desired.cluster_ips.iter().map(|ip| vip_key(*ip)).collect();
    let add_vips = next.vips.difference(&cur.vips).map(|ip| Op::SetVip(*ip));
    let del_vips = cur.vips.difference(&next.vips).map(|ip| Op::DelVip(*ip));
    next.config = config_for(desired);
    let config = (next.config != cur.config).then_some(Op::SetConfig(next.config));

    let ops = config
        .into_iter()
        .chain(set_backends)
        .chain(meta)
        .chain(slots)
        .chain(fronts)
        .chain(add_vips)
        .chain(del_vips)
        .chain(shrink)
        .chain(removals)
        .chain(del_backends)
        .collect();
    Plan { ops, next, errors }
}

/// The writes of one frontend, by step of the update order.
#[derive(Default)]
struct FrontendOps {
    meta: Vec<Op>,
    slots: Vec<Op>,
    fronts: Vec<Op>,
    shrink: Vec<Op>,
}

/// Plans one wanted frontend against what the maps hold for it (`old`), given the ids of the
/// backends. Returns its new state, or None when it is left out (service map full).
#[allow(clippy::too_many_arguments)]
fn plan_frontend(
    key: &FrontendKey,
    fe: &FrontendAddr,
    spec: &FrontendSpec,
    old: Option<&FrontendState>,
    id_of: impl Fn(&BackendKey) -> Option<u32>,
    alloc_svc: &mut dyn FnMut() -> Option<u32>,
    errors: &mut Vec<String>,
    out: &mut FrontendOps,
) -> Option<FrontendState> {
    if let Some(b) = spec.backends.iter().find(|b| !same_family(fe, b)) {
        // The model never does this; the datapath cannot translate between families.
        errors.push(format!(
            "frontend {fe} ({}): backend {} of the other family left out",
            spec.name,
            SocketAddr::new(b.ip, b.port)
        ));
    }
    let ids: Vec<u32> = spec
        .backends
        .iter()
        .filter(|b| same_family(fe, b))
        .filter_map(|b| id_of(&BackendKey::new(*b, fe.proto)))
        .take(MAX_BACKENDS_PER_SERVICE as usize)
        .collect();
    let svc_id = match old {
        Some(o) => o.svc_id,
        None => match alloc_svc() {
            Some(id) => {
                out.meta.push(Op::ResetStats(id));
                id
            }
            None => {
                errors.push(format!(
                    "frontend {fe} ({}) left out: service map full",
                    spec.name
                ));
                return None;
            }
        },
    };
    if old.map(|o| &o.name) != Some(&spec.name) {
        out.meta.push(Op::SetMeta(svc_id, spec.name.clone()));
    }
    let old_slots = old.map(|o| o.slots.as_slice()).unwrap_or(&[]);
    let new_slots = place(old_slots, &ids);
    for (i, id) in new_slots.iter().enumerate() {
        if old_slots.get(i) != Some(id) {
            out.slots.push(Op::SetSlot {
                svc_id,
                slot: i as u32,
                backend_id: *id,
            });
        }
    }
    let (flags, kind) = flags_and_kind(spec);
    if old.map(|o| (o.slots.len(), o.flags, o.kind)) != Some((new_slots.len(), flags, kind)) {
        let count = new_slots.len() as u32;
        out.fronts.push(Op::SetFrontend(
            *key,
            Frontend {
                svc_id,
                count,
                flags,
                kind,
                pad: 0,
            },
        ));
    }
    for i in new_slots.len()..old_slots.len() {
        out.shrink.push(Op::DelSlot {
            svc_id,
            slot: i as u32,
        });
    }
    Some(FrontendState {
        svc_id,
        name: spec.name.clone(),
        flags,
        kind,
        slots: new_slots,
    })
}

/// The removal of a frontend the maps hold: its entry, then its slots and name.
fn removal_ops(key: &FrontendKey, old: &FrontendState, ops: &mut Vec<Op>) {
    ops.push(Op::DelFrontend(*key));
    ops.extend((0..old.slots.len() as u32).map(|slot| Op::DelSlot {
        svc_id: old.svc_id,
        slot,
    }));
    ops.push(Op::DelMeta(old.svc_id));
}

/// Free ids below `high` and every id from `high` up to `max` (exclusive): the lowest comes
/// first, as with [`IdAlloc`], without scanning the ids in use.
#[derive(Debug)]
struct IdPool {
    free: BTreeSet<u32>,
    high: u32,
    max: u32,
}

impl IdPool {
    fn new(used: impl IntoIterator<Item = u32>, max: u32) -> Self {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let high = used.last().map_or(1, |h| h + 1);
        IdPool {
            free: (1..high).filter(|id| !used.contains(id)).collect(),
            high,
            max,
        }
    }
    fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        (self.high < self.max).then(|| {
            self.high += 1;
            self.high - 1
        })
    }
    fn release(&mut self, id: u32) {
        self.free.insert(id);
    }
}

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
fn service_of(name: &str) -> &str {
    name.split(':').next().unwrap_or("")
}

/// The reconciler between syncs: the mirror of the maps as [`plan`] left them for a desired
/// state, with what an incremental plan needs to touch only the frontends that changed: the
/// id of every backend, how many desired frontends want it (backends are shared between
/// frontends), and the free ids.
///
/// [`Planner::plan`] gives exactly the ops [`plan`] would give for the new desired state (the
/// unchanged frontends need none), in the same update order. It holds only as long as the
/// mirror is what the last plan left: after a plan with errors (a full map), a failed write or
/// a resync, start again from a full [`plan`] and [`Planner::new`].
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
    /// `state` must be the `next` of a [`plan`] for `desired` that had no errors.
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
    /// `changes` says, and updates the mirror. The ops are those [`plan`] would give.
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
        fes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut fo = FrontendOps::default();
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
        let ops = config
            .into_iter()
            .chain(set_backends)
            .chain(fo.meta)
            .chain(fo.slots)
            .chain(fo.fronts)
            .chain(add_vips.into_iter().map(Op::SetVip))
            .chain(del_vips.into_iter().map(Op::DelVip))
            .chain(fo.shrink)
            .chain(removals)
            .chain(gone.into_iter().map(Op::DelBackend))
            .collect();
        (ops, errors)
    }
}

/// New slot layout: backends that stay keep their slot, new ones fill the holes, and when the
/// set shrinks the last entries move into the holes so the slots stay dense.
fn place(old: &[u32], ids: &[u32]) -> Vec<u32> {
    let want: BTreeSet<u32> = ids.iter().copied().collect();
    let mut slots: Vec<Option<u32>> = old
        .iter()
        .map(|id| want.contains(id).then_some(*id))
        .collect();
    let kept: BTreeSet<u32> = slots.iter().flatten().copied().collect();
    let mut added = ids.iter().copied().filter(|id| !kept.contains(id));
    for s in slots.iter_mut().filter(|s| s.is_none()) {
        *s = added.next();
    }
    slots.extend(added.map(Some));
    // Compact: fill remaining holes with entries taken from the end.
    let mut out: Vec<Option<u32>> = slots;
    let mut i = 0;
    while i < out.len() {
        if out[i].is_none() {
            let last = out.pop().flatten();
            if i < out.len() {
                out[i] = last;
            }
            continue;
        }
        i += 1;
    }
    out.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrontendSpec;

    fn fe(ip: [u8; 4], port: u16, proto: Proto) -> FrontendAddr {
        FrontendAddr {
            ip: IpAddr::from(ip),
            port,
            proto,
        }
    }
    fn fe6(ip: &str, port: u16, proto: Proto) -> FrontendAddr {
        FrontendAddr {
            ip: ip.parse().unwrap(),
            port,
            proto,
        }
    }
    fn be(last: u8, port: u16) -> BackendAddr {
        BackendAddr {
            ip: IpAddr::from([10, 244, 0, last]),
            port,
        }
    }
    /// fd00:244::<last>
    fn be6(last: u8, port: u16) -> BackendAddr {
        BackendAddr {
            ip: IpAddr::from([0xfd00, 0x244, 0, 0, 0, 0, 0, last as u16]),
            port,
        }
    }
    fn desired(fes: &[(FrontendAddr, &str, Vec<BackendAddr>)]) -> DesiredState {
        DesiredState {
            frontends: fes
                .iter()
                .map(|(f, n, b)| {
                    (
                        *f,
                        FrontendSpec {
                            name: n.to_string(),
                            kind: FrontendKind::ClusterIp,
                            snat: false,
                            drop_when_empty: false,
                            backends: b.clone(),
                        },
                    )
                })
                .collect(),
            cluster_ips: fes.iter().map(|(f, _, _)| f.ip).collect(),
            node_addresses: vec![
                "192.168.77.1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
        }
    }
    /// Applies ops to a mirror the way the maps would, checking the datapath invariant after
    /// every single op: each frontend's `count` slots name existing backends of its family.
    fn apply_checked(cur: &MapState, ops: &[Op]) -> MapState {
        let mut fronts: BTreeMap<FrontendKey, Frontend> = cur
            .frontends
            .iter()
            .map(|(k, f)| {
                (
                    *k,
                    Frontend {
                        svc_id: f.svc_id,
                        count: f.slots.len() as u32,
                        flags: f.flags,
                        kind: f.kind,
                        pad: 0,
                    },
                )
            })
            .collect();
        let mut slots: BTreeMap<(u32, u32), u32> = BTreeMap::new();
        let mut names = BTreeMap::new();
        for f in cur.frontends.values() {
            for (i, id) in f.slots.iter().enumerate() {
                slots.insert((f.svc_id, i as u32), *id);
            }
            names.insert(f.svc_id, f.name.clone());
        }
        let mut backends = cur.backends.clone();
        let (mut vips, mut config) = (cur.vips.clone(), cur.config);
        for op in ops {
            match op {
                Op::SetBackend(id, k) => {
                    backends.insert(*id, *k);
                }
                Op::SetMeta(id, n) => {
                    names.insert(*id, n.clone());
                }
                Op::ResetStats(_) => {}
                Op::SetSlot {
                    svc_id,
                    slot,
                    backend_id,
                } => {
                    slots.insert((*svc_id, *slot), *backend_id);
                }
                Op::SetFrontend(k, f) => {
                    fronts.insert(*k, *f);
                }
                Op::DelSlot { svc_id, slot } => {
                    slots.remove(&(*svc_id, *slot));
                }
                Op::DelFrontend(k) => {
                    fronts.remove(k);
                }
                Op::DelMeta(id) => {
                    names.remove(id);
                }
                Op::DelBackend(id) => {
                    backends.remove(id);
                }
                Op::SetVip(ip) => {
                    vips.insert(*ip);
                }
                Op::DelVip(ip) => {
                    vips.remove(ip);
                }
                Op::SetConfig(c) => config = *c,
            }
            // A ClusterIP is never marked (rejecting unknown ports) without its frontends.
            for vip in &vips {
                assert!(
                    fronts
                        .keys()
                        .any(|k| k.addr == vip.addr && k.family == vip.family),
                    "VIP {vip:?} without frontends after {op:?}"
                );
            }
            for (k, f) in &fronts {
                for s in 0..f.count {
                    let id = slots
                        .get(&(f.svc_id, s))
                        .unwrap_or_else(|| panic!("{k:?} slot {s} missing after {op:?}"));
                    let b = backends.get(id).unwrap_or_else(|| {
                        panic!("{k:?} slot {s} -> dead backend {id} after {op:?}")
                    });
                    assert_eq!(
                        b.to_map().family,
                        k.family,
                        "{k:?} slot {s} -> backend {b:?} of the other family"
                    );
                }
            }
        }
        let mut out = MapState {
            backends,
            vips,
            config,
            ..Default::default()
        };
        for (k, f) in fronts {
            let s = (0..f.count).map(|i| slots[&(f.svc_id, i)]).collect();
            out.frontends.insert(
                k,
                FrontendState {
                    svc_id: f.svc_id,
                    name: names[&f.svc_id].clone(),
                    flags: f.flags,
                    kind: f.kind,
                    slots: s,
                },
            );
        }
        out
    }

    fn step(cur: &MapState, d: &DesiredState) -> (MapState, Vec<Op>) {
        let p = plan(cur, d);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let applied = apply_checked(cur, &p.ops);
        assert_eq!(
            applied, p.next,
            "applying the ops must give the planned state"
        );
        (p.next, p.ops)
    }

    #[test]
    fn empty_to_services_and_back() {
        let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let dns = fe([10, 96, 0, 53], 53, Proto::Udp);
        let d = desired(&[
            (web, "default/web:http", vec![be(10, 8080), be(11, 8080)]),
            (dns, "kube-system/dns", vec![be(10, 53)]),
        ]);
        let (s1, ops) = step(&MapState::default(), &d);
        assert_eq!(s1.frontends.len(), 2);
        assert_eq!(
            s1.backends.len(),
            3,
            "same IP on two ports/protocols = two backends"
        );
        assert!(ops.iter().any(|o| matches!(o, Op::ResetStats(_))));
        // Unchanged desired state: nothing to write.
        let (s2, ops) = step(&s1, &d);
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(s1, s2);
        // Remove everything.
        let (s3, ops) = step(&s2, &DesiredState::default());
        assert!(s3.frontends.is_empty() && s3.backends.is_empty() && s3.vips.is_empty());
        assert!(matches!(ops.last(), Some(Op::DelBackend(_))));
    }

    #[test]
    fn one_endpoint_change_writes_a_handful() {
        let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let mut fes: Vec<_> = (0..50u8)
            .map(|i| {
                (
                    fe([10, 96, 1, i], 80, Proto::Tcp),
                    "x",
                    vec![be(i, 80), be(i + 100, 80)],
                )
            })
            .collect();
        fes.push((web, "web", vec![be(10, 8080), be(11, 8080), be(12, 8080)]));
        let (s1, _) = step(&MapState::default(), &desired(&fes));
        // Replace one backend of "web": one backend write, one slot write, one backend delete.
        fes.last_mut().unwrap().2 = vec![be(10, 8080), be(13, 8080), be(12, 8080)];
        let (s2, ops) = step(&s1, &desired(&fes));
        assert_eq!(ops.len(), 3, "{ops:?}");
        let f = &s2.frontends[&frontend_key(&web)];
        assert_eq!(
            f.svc_id,
            s1.frontends[&frontend_key(&web)].svc_id,
            "svc id is stable"
        );
        assert_eq!(
            f.slots[0],
            s1.frontends[&frontend_key(&web)].slots[0],
            "kept backend keeps its slot"
        );
    }

    #[test]
    fn shrink_grow_and_replace_never_expose_dead_slots() {
        let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let sets: Vec<Vec<BackendAddr>> = vec![
            vec![be(1, 80), be(2, 80), be(3, 80), be(4, 80)],
            vec![be(2, 80), be(4, 80)],
            vec![be(5, 80), be(6, 80), be(7, 80)],
            vec![],
            vec![be(1, 80)],
            vec![
                be(1, 80),
                be(2, 80),
                be(3, 80),
                be(4, 80),
                be(5, 80),
                be(6, 80),
            ],
            vec![be(6, 80)],
        ];
        let mut s = MapState::default();
        for set in &sets {
            let (n, _) = step(&s, &desired(&[(web, "web", set.clone())]));
            let got: BTreeSet<BackendKey> = n.frontends[&frontend_key(&web)]
                .slots
                .iter()
                .map(|id| n.backends[id])
                .collect();
            let want: BTreeSet<BackendKey> = set
                .iter()
                .map(|b| BackendKey::new(*b, Proto::Tcp))
                .collect();
            assert_eq!(got, want);
            s = n;
        }
    }

    #[test]
    fn frontend_without_backends_is_programmed_with_zero_count() {
        let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let (s, ops) = step(&MapState::default(), &desired(&[(web, "web", vec![])]));
        assert!(s.frontends[&frontend_key(&web)].slots.is_empty());
        assert!(ops
            .iter()
            .any(|o| matches!(o, Op::SetFrontend(_, f) if f.count == 0)));
    }

    #[test]
    fn ids_are_reused_lowest_first() {
        let a = fe([10, 96, 0, 1], 80, Proto::Tcp);
        let b = fe([10, 96, 0, 2], 80, Proto::Tcp);
        let (s1, _) = step(
            &MapState::default(),
            &desired(&[(a, "a", vec![be(1, 80)]), (b, "b", vec![be(2, 80)])]),
        );
        let (s2, _) = step(&s1, &desired(&[(b, "b", vec![be(2, 80)])]));
        let c = fe([10, 96, 0, 3], 80, Proto::Tcp);
        let (s3, _) = step(
            &s2,
            &desired(&[(b, "b", vec![be(2, 80)]), (c, "c", vec![be(3, 80)])]),
        );
        assert_eq!(
            s3.frontends[&frontend_key(&c)].svc_id,
            s1.frontends[&frontend_key(&a)].svc_id
        );
        assert_eq!(
            s3.frontends[&frontend_key(&b)].svc_id,
            s1.frontends[&frontend_key(&b)].svc_id
        );
    }

    #[test]
    fn place_keeps_and_compacts() {
        assert_eq!(place(&[1, 2, 3, 4], &[1, 2, 3, 4]), vec![1, 2, 3, 4]);
        assert_eq!(place(&[1, 2, 3, 4], &[1, 3, 4]), vec![1, 4, 3]);
        assert_eq!(place(&[1, 2, 3], &[1, 3, 5]), vec![1, 5, 3]);
        assert_eq!(place(&[], &[7, 8]), vec![7, 8]);
        assert_eq!(place(&[1, 2, 3, 4], &[4]), vec![4]);
        assert_eq!(place(&[1, 2], &[]), Vec::<u32>::new());
    }

    #[test]
    fn map_conversions_round_trip() {
        for ip in ["10.244.0.5", "fd00:244::5"] {
            let b = BackendKey {
                ip: ip.parse().unwrap(),
                port: 8080,
                proto: 6,
            };
            assert_eq!(BackendKey::from_map(&b.to_map()), b);
            let v = vip_key(b.ip);
            assert_eq!(vip_ip(&v), b.ip);
        }
        let k = frontend_key(&fe6("fd00::10", 80, Proto::Udp));
        assert_eq!(k.family, lb_common::FAMILY_V6);
        assert_eq!(frontend_socket_addr(&k).to_string(), "[fd00::10]:80");
        let k = frontend_key(&fe([10, 96, 0, 10], 80, Proto::Tcp));
        assert_eq!(k.addr[..4], [10, 96, 0, 10]);
        assert_eq!(k.addr[4..], [0; 12]);
        assert_eq!(k.family, lb_common::FAMILY_V4);
        assert_eq!(frontend_socket_addr(&k).to_string(), "10.96.0.10:80");
    }

    #[test]
    fn dual_stack_service_shares_id_spaces() {
        let v4 = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let v6 = fe6("fd00:96::10", 80, Proto::Tcp);
        let d = desired(&[
            (v4, "default/web:http", vec![be(1, 8080), be(2, 8080)]),
            (v6, "default/web:http", vec![be6(1, 8080), be6(2, 8080)]),
        ]);
        let (s1, _) = step(&MapState::default(), &d);
        // One id space: four distinct backend ids, two distinct svc ids.
        assert_eq!(s1.backends.len(), 4);
        assert_eq!(
            s1.backends.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let (f4, f6) = (
            &s1.frontends[&frontend_key(&v4)],
            &s1.frontends[&frontend_key(&v6)],
        );
        assert_ne!(f4.svc_id, f6.svc_id);
        assert!(f6.slots.iter().all(|id| s1.backends[id].ip.is_ipv6()));
        assert!(f4.slots.iter().all(|id| s1.backends[id].ip.is_ipv4()));
        assert_eq!(
            s1.vips,
            [vip_key(v4.ip), vip_key(v6.ip)].into_iter().collect()
        );
        // SNAT addresses of both families.
        assert_eq!(s1.config.snat_addr, [192, 168, 77, 1]);
        assert_eq!(
            s1.config.snat_addr6,
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        // Unchanged: nothing to write.
        assert!(step(&s1, &d).1.is_empty());
        // Dropping the IPv6 family leaves the IPv4 frontend untouched.
        let only4 = desired(&[(v4, "default/web:http", vec![be(1, 8080), be(2, 8080)])]);
        let (s2, ops) = step(&s1, &only4);
        assert!(
            ops.iter()
                .all(|o| !matches!(o, Op::SetFrontend(..) | Op::SetSlot { .. })),
            "{ops:?}"
        );
        assert_eq!(s2.frontends[&frontend_key(&v4)], *f4);
        assert_eq!(s2.backends.len(), 2);
        assert_eq!(s2.vips, [vip_key(v4.ip)].into_iter().collect());
        // And back to dual-stack.
        let (s3, _) = step(&s2, &d);
        assert_eq!(s3.backends.len(), 4);
        assert_eq!(s3.frontends.len(), 2);
    }

    #[test]
    fn same_address_bytes_in_two_families_are_two_frontends() {
        // 10.96.0.10 and the IPv6 address whose first bytes are 10.96.0.10 differ only in
        // the family field; neither may shadow the other.
        let v4 = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let v6 = fe6("a60:a::", 80, Proto::Tcp);
        assert_eq!(frontend_key(&v4).addr[..4], frontend_key(&v6).addr[..4]);
        let (s, _) = step(
            &MapState::default(),
            &desired(&[(v4, "a", vec![be(1, 80)]), (v6, "b", vec![be6(1, 80)])]),
        );
        assert_eq!(s.frontends.len(), 2);
        assert_eq!(s.vips.len(), 2);
    }

    #[test]
    fn snat_config_per_family() {
        let mut d = DesiredState::default();
        let c = config_for(&d);
        assert_eq!((c.snat_addr, c.snat_addr6), ([0; 4], [0; 16]));
        assert_eq!(
            (c.snat_port_min, c.snat_port_max),
            (SNAT_PORT_MIN, SNAT_PORT_MAX)
        );
        d.node_addresses = vec![
            "fd00::5".parse().unwrap(),
            "192.168.0.5".parse().unwrap(),
            "fd00::6".parse().unwrap(),
            "192.168.0.6".parse().unwrap(),
        ];
        let c = config_for(&d);
        assert_eq!(c.snat_addr, [192, 168, 0, 5]);
        assert_eq!(
            c.snat_addr6,
            "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        d.node_addresses = vec!["fd00::5".parse().unwrap()];
        assert_eq!(config_for(&d).snat_addr, [0; 4]);
    }

    #[test]
    fn backend_of_the_other_family_is_left_out() {
        let v6 = fe6("fd00:96::10", 80, Proto::Tcp);
        let p = plan(
            &MapState::default(),
            &desired(&[(v6, "web", vec![be6(1, 80), be(1, 80)])]),
        );
        assert_eq!(
            p.errors,
            vec!["frontend [fd00:96::10]:80/TCP (web): backend 10.244.0.1:80 of the other family left out"]
        );
        let f = &p.next.frontends[&frontend_key(&v6)];
        assert_eq!(f.slots.len(), 1);
        assert_eq!(p.next.backends.len(), 1);
    }

    #[test]
    fn shrink_grow_and_replace_ipv6() {
        let web = fe6("fd00:96::10", 443, Proto::Sctp);
        let mut s = MapState::default();
        for set in [
            vec![be6(1, 80), be6(2, 80), be6(3, 80)],
            vec![be6(3, 80)],
            vec![be6(4, 80), be6(3, 80), be6(5, 80)],
            vec![],
        ] {
            let (n, _) = step(&s, &desired(&[(web, "web", set.clone())]));
            let got: BTreeSet<BackendKey> = n.frontends[&frontend_key(&web)]
                .slots
                .iter()
                .map(|id| n.backends[id])
                .collect();
            let want: BTreeSet<BackendKey> = set
                .iter()
                .map(|b| BackendKey::new(*b, Proto::Sctp))
                .collect();
            assert_eq!(got, want);
            s = n;
        }
    }

    /// What changed between two desired states, as the incremental model reports it.
    fn diff(a: &DesiredState, b: &DesiredState) -> Changes {
        let mut c = Changes::default();
        for fe in a.frontends.keys().chain(b.frontends.keys()) {
            if a.frontends.get(fe) != b.frontends.get(fe) {
                c.frontends.insert(*fe, a.frontends.get(fe).cloned());
            }
        }
        c.cluster_ips = a
            .cluster_ips
            .symmetric_difference(&b.cluster_ips)
            .copied()
            .collect();
        c.node_addresses = a.node_addresses != b.node_addresses;
        c
    }

    /// Random desired states in a row (frontends of both families appearing, changing and
    /// going, backends shared between frontends, renames, policy changes, ClusterIPs and node
    /// addresses): the incremental plan gives exactly the full plan's ops and state, and
    /// every op keeps the invariants.
    #[test]
    fn incremental_plan_equals_full_plan() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = |n: u64| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let mut total_ops = 0;
        for _run in 0..30 {
            let mut desired_prev = DesiredState::default();
            let p = plan(&MapState::default(), &desired_prev);
            let mut planner = Planner::new(p.next, &desired_prev);
            for _step in 0..60 {
                let mut d = desired_prev.clone();
                for _ in 0..=rnd(4) {
                    let i = rnd(12) as u8;
                    let proto = [Proto::Tcp, Proto::Udp][rnd(2) as usize];
                    let v6 = rnd(3) == 0;
                    let addr = match v6 {
                        true => fe6(&format!("fd00:96::{i}"), 80, proto),
                        false => fe([10, 96, 0, i], 80, proto),
                    };
                    if rnd(4) == 0 {
                        d.frontends.remove(&addr);
                        continue;
                    }
                    let mut backends: Vec<BackendAddr> = (0..rnd(6))
                        .map(|_| {
                            let (last, port) = (rnd(10) as u8, 8080 + rnd(2) as u16);
                            match v6 {
                                true => be6(last, port),
                                false => be(last, port),
                            }
                        })
                        .collect();
                    backends.sort();
                    backends.dedup();
                    d.frontends.insert(
                        addr,
                        FrontendSpec {
                            name: format!("default/s{}:p", rnd(4)),
                            kind: [FrontendKind::ClusterIp, FrontendKind::NodePort]
                                [rnd(2) as usize],
                            snat: rnd(2) == 0,
                            drop_when_empty: rnd(2) == 0,
                            backends,
                        },
                    );
                }
                d.cluster_ips = d.frontends.keys().map(|f| f.ip).collect();
                if rnd(5) == 0 {
                    d.node_addresses = match rnd(3) {
                        0 => vec![],
                        1 => vec!["192.168.0.1".parse().unwrap()],
                        _ => vec!["fd00::1".parse().unwrap(), "192.168.0.2".parse().unwrap()],
                    };
                }
                let before = planner.state().clone();
                let full = plan(&before, &d);
                assert!(full.errors.is_empty(), "{:?}", full.errors);
                let (ops, errors) = planner.plan(&d, &diff(&desired_prev, &d));
                assert!(errors.is_empty(), "{errors:?}");
                assert_eq!(ops, full.ops);
                assert_eq!(*planner.state(), full.next);
                assert_eq!(apply_checked(&before, &ops), full.next);
                let services: BTreeSet<&str> = full
                    .next
                    .frontends
                    .values()
                    .map(|f| service_of(&f.name))
                    .collect();
                assert_eq!(planner.services(), services.len());
                total_ops += ops.len();
                desired_prev = d;
            }
        }
        assert!(total_ops > 5_000, "{total_ops}");
    }

    #[test]
    fn incremental_plan_of_one_endpoint_change() {
        let fes: Vec<_> = (0..50u8)
            .map(|i| {
                (
                    fe([10, 96, 1, i], 80, Proto::Tcp),
                    "x",
                    vec![be(i, 80), be(i + 100, 80)],
                )
            })
            .collect();
        let d1 = desired(&fes);
        let p = plan(&MapState::default(), &d1);
        let mut planner = Planner::new(p.next, &d1);
        // Backend 10.244.0.3:80 moves from frontend 3 to frontend 4.
        let mut fes2 = fes.clone();
        fes2[3].2 = vec![be(103, 80)];
        fes2[4].2 = vec![be(4, 80), be(104, 80), be(3, 80)];
        let d2 = desired(&fes2);
        let (ops, _) = planner.plan(&d2, &diff(&d1, &d2));
        // No backend is written or deleted: the moved one is shared.
        assert!(
            ops.iter()
                .all(|o| !matches!(o, Op::SetBackend(..) | Op::DelBackend(_))),
            "{ops:?}"
        );
        assert_eq!(ops.len(), 5, "{ops:?}");
    }
}
