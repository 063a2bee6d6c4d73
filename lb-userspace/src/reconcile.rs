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
//!
//! [`repair`] gives the writes that bring the maps, as a resync read them back, to the mirror
//! again (drift repair), in the same order.
use std::{
    borrow::Cow,
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    ip::{from_addr, to_addr},
    Backend, Config, Frontend, FrontendKey, VipKey, FE_DROP_EMPTY, FE_SNAT, MAX_BACKENDS,
    MAX_BACKENDS_PER_SERVICE, MAX_SERVICES, SNAT_PORT_MAX, SNAT_PORT_MIN, SVC_NAME_LEN,
};

use crate::model::{Changes, DesiredState, FrontendSpec};
use crate::types::{BackendAddr, FrontendAddr, Proto};

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
    (flags, spec.kind.code())
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
/// mirror is what the last plan left: after a plan with errors (a full map) or a failed write,
/// start again from a full [`plan`] and [`Planner::new`]. A resync's [`repair`] brings the maps
/// back to the mirror and leaves the planner valid.
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
        fes.sort_unstable_by_key(|a| a.0);
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

/// The service maps as a resync reads them back, entry by entry and uninterpreted, so that
/// [`repair`] sees every difference from the mirror: a slot beyond a frontend's count, a name
/// or slot no frontend owns, a frontend entry with another id. Every list is sorted by key,
/// each key once ([`ReadBack::sorted`]), so the comparison walks it along the mirror.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    pub frontends: Vec<(FrontendKey, Frontend)>,
    /// `lb_slots`: ((svc_id, slot), backend_id).
    pub slots: Vec<((u32, u32), u32)>,
    /// `lb_svc_meta`: (svc_id, the name as stored, see [`stored_name`]).
    pub names: Vec<(u32, String)>,
    /// The entries of `lb_backends` that are not all zero (all zero means free).
    pub backends: Vec<(u32, BackendKey)>,
    pub vips: Vec<VipKey>,
    pub config: Config,
}

impl ReadBack {
    /// Sorts every list by key and keeps one entry per key (iterating a hash map that changes
    /// meanwhile may return a key twice).
    pub fn sorted(mut self) -> Self {
        fn sort<K: Ord + Copy, V>(v: &mut Vec<(K, V)>) {
            v.sort_by_key(|e| e.0);
            v.dedup_by_key(|e| e.0);
        }
        sort(&mut self.frontends);
        sort(&mut self.slots);
        sort(&mut self.names);
        sort(&mut self.backends);
        self.vips.sort_unstable();
        self.vips.dedup();
        self
    }

    fn frontend(&self, k: &FrontendKey) -> Option<&Frontend> {
        let i = self.frontends.binary_search_by_key(k, |e| e.0).ok()?;
        Some(&self.frontends[i].1)
    }
}

/// A frontend name as `lb_svc_meta` gives it back: cut to `SVC_NAME_LEN` bytes.
pub fn stored_name(name: &str) -> Cow<'_, str> {
    match name.len() > SVC_NAME_LEN {
        true => String::from_utf8_lossy(&name.as_bytes()[..SVC_NAME_LEN]),
        false => Cow::Borrowed(name),
    }
}

/// What the agent wrote while a resync's read of the maps was in flight (from the start of the
/// read to the comparison). The read may have seen those entries before, after or (for a
/// frontend and its slots) in the middle of the writes, so [`repair`] leaves them alone; the
/// next resync checks them again.
#[derive(Clone, Debug, Default)]
pub struct Touched {
    pub frontends: BTreeSet<FrontendKey>,
    /// Service ids whose slots, name or counters were written, and those of written frontend
    /// entries.
    pub svcs: BTreeSet<u32>,
    pub backends: BTreeSet<u32>,
    pub vips: BTreeSet<VipKey>,
    pub config: bool,
    /// The mirror was replaced by a new read of the maps (after a failed write): the read in
    /// flight is not compared at all.
    pub all: bool,
}

impl Touched {
    /// Notes the entries `ops` write.
    pub fn record(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::SetBackend(id, _) | Op::DelBackend(id) => {
                    self.backends.insert(*id);
                }
                Op::SetMeta(id, _) | Op::ResetStats(id) | Op::DelMeta(id) => {
                    self.svcs.insert(*id);
                }
                Op::SetSlot { svc_id, .. } | Op::DelSlot { svc_id, .. } => {
                    self.svcs.insert(*svc_id);
                }
                Op::SetFrontend(k, f) => {
                    self.frontends.insert(*k);
                    self.svcs.insert(f.svc_id);
                }
                Op::DelFrontend(k) => {
                    self.frontends.insert(*k);
                }
                Op::SetVip(k) | Op::DelVip(k) => {
                    self.vips.insert(*k);
                }
                Op::SetConfig(_) => self.config = true,
            }
        }
    }
}

/// The writes that turn the maps as read back (`read`) into the mirror: the drift repairs of a
/// resync. Only the mirror's values are written, in the update order of the module doc:
/// config; backends; names; slots; frontend entries (the switch); ClusterIPs added, then
/// removed; then the deletions of frontends, slots and names no frontend of the mirror owns
/// (orphans, slots beyond a count) and backends the mirror does not hold.
///
/// Entries the agent wrote while the read was in flight (`touched`) are left out. A frontend
/// is one unit with the slots and the name of its svc_id (the mirror's, or for a frontend the
/// mirror does not hold, the one read): the unit is left out whole when its key or its svc_id
/// was written, and the svc_id of a written key (in the mirror and as read) counts as written.
pub fn repair(mirror: &MapState, read: &ReadBack, touched: &Touched) -> Vec<Op> {
    if touched.all {
        return Vec::new();
    }
    let mut svcs = touched.svcs.clone();
    for k in &touched.frontends {
        svcs.extend(mirror.frontends.get(k).map(|f| f.svc_id));
        svcs.extend(read.frontend(k).map(|f| f.svc_id));
    }
    let unit_touched =
        |k: &FrontendKey, svc_id: u32| touched.frontends.contains(k) || svcs.contains(&svc_id);

    let mut set_backends = Vec::new();
    let mut del_backends = Vec::new();
    let read_backends = read.backends.iter().map(|(id, b)| (id, b));
    for (id, m, r) in join(&mirror.backends, read_backends) {
        if touched.backends.contains(id) {
            continue;
        }
        match (m, r) {
            (Some(m), r) if r != Some(m) => set_backends.push(Op::SetBackend(*id, *m)),
            (None, Some(_)) => del_backends.push(Op::DelBackend(*id)),
            _ => {}
        }
    }

    // The mirror's frontends by svc_id, to walk along the slots and names (sorted by svc_id).
    let mut by_svc: Vec<(u32, (bool, &FrontendState))> = mirror
        .frontends
        .iter()
        .map(|(k, f)| (f.svc_id, (unit_touched(k, f.svc_id), f)))
        .collect();
    by_svc.sort_unstable_by_key(|e| e.0);

    let mut meta = Vec::new();
    let mut del_meta = Vec::new();
    let read_names = read.names.iter().map(|(id, n)| (id, n));
    for (id, m, r) in join(by_svc.iter().map(|(id, f)| (id, f)), read_names) {
        match (m, r) {
            (Some((false, f)), r) if r.map(String::as_str) != Some(&stored_name(&f.name)) => {
                meta.push(Op::SetMeta(*id, f.name.clone()))
            }
            (None, Some(_)) if !svcs.contains(id) => del_meta.push(Op::DelMeta(*id)),
            _ => {}
        }
    }

    let mut slots = Vec::new();
    let mut del_slots = Vec::new();
    let mirror_slots = by_svc.iter().flat_map(|(id, (t, f))| {
        (0u32..)
            .zip(&f.slots)
            .map(move |(slot, backend_id)| ((*id, slot), (*t, *backend_id)))
    });
    for ((svc_id, slot), m, r) in join(mirror_slots, read.slots.iter().copied()) {
        match (m, r) {
            (Some((false, backend_id)), r) if r != Some(backend_id) => slots.push(Op::SetSlot {
                svc_id,
                slot,
                backend_id,
            }),
            (None, Some(_)) if !svcs.contains(&svc_id) => {
                del_slots.push(Op::DelSlot { svc_id, slot })
            }
            _ => {}
        }
    }

    let mut fronts = Vec::new();
    let mut del_fronts = Vec::new();
    let read_frontends = read.frontends.iter().map(|(k, f)| (k, f));
    for (k, m, r) in join(&mirror.frontends, read_frontends) {
        match (m, r) {
            (Some(f), r) if !unit_touched(k, f.svc_id) => {
                let want = Frontend {
                    svc_id: f.svc_id,
                    count: f.slots.len() as u32,
                    flags: f.flags,
                    kind: f.kind,
                    pad: 0,
                };
                if r != Some(&want) {
                    fronts.push(Op::SetFrontend(*k, want));
                }
            }
            (None, Some(r)) if !unit_touched(k, r.svc_id) => del_fronts.push(Op::DelFrontend(*k)),
            _ => {}
        }
    }

    let (mut add_vips, mut del_vips) = (Vec::new(), Vec::new());
    let mirror_vips = mirror.vips.iter().map(|k| (*k, ()));
    for (k, m, r) in join(mirror_vips, read.vips.iter().map(|k| (*k, ()))) {
        match (m, r) {
            _ if touched.vips.contains(&k) => {}
            (Some(()), None) => add_vips.push(Op::SetVip(k)),
            (None, Some(())) => del_vips.push(Op::DelVip(k)),
            _ => {}
        }
    }

    let config =
        (!touched.config && read.config != mirror.config).then_some(Op::SetConfig(mirror.config));
    config
        .into_iter()
        .chain(set_backends)
        .chain(meta)
        .chain(slots)
        .chain(fronts)
        .chain(add_vips)
        .chain(del_vips)
        .chain(del_fronts)
        .chain(del_slots)
        .chain(del_meta)
        .chain(del_backends)
        .collect()
}

/// Two sequences sorted by key, side by side: every key once, with its value on either side.
fn join<K: Ord, A, B>(
    a: impl IntoIterator<Item = (K, A)>,
    b: impl IntoIterator<Item = (K, B)>,
) -> impl Iterator<Item = (K, Option<A>, Option<B>)> {
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    std::iter::from_fn(move || {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((x, _)), Some((y, _))) => x.cmp(y),
        };
        Some(match order {
            Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None))?,
            Ordering::Greater => b.next().map(|(k, v)| (k, None, Some(v)))?,
            Ordering::Equal => {
                let ((k, v), (_, w)) = (a.next()?, b.next()?);
                (k, Some(v), Some(w))
            }
        })
    })
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

    /// A seeded xorshift* generator: `rnd(n)` is in `0..n`.
    fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }
    use crate::model::FrontendSpec;
    use crate::types::FrontendKind;

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
        let mut rnd = xorshift(0x1234_5678_9abc_def1u64);
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

    /// A read-back that tests can change entry by entry.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    struct Pic {
        frontends: BTreeMap<FrontendKey, Frontend>,
        slots: BTreeMap<(u32, u32), u32>,
        names: BTreeMap<u32, String>,
        backends: BTreeMap<u32, BackendKey>,
        vips: BTreeSet<VipKey>,
        config: Config,
    }

    impl Pic {
        fn back(&self) -> ReadBack {
            // Reversed, so that sorting is needed.
            fn rev<K: Copy, V: Clone>(m: &BTreeMap<K, V>) -> Vec<(K, V)> {
                m.iter().rev().map(|(k, v)| (*k, v.clone())).collect()
            }
            ReadBack {
                frontends: rev(&self.frontends),
                slots: rev(&self.slots),
                names: rev(&self.names),
                backends: rev(&self.backends),
                vips: self.vips.iter().rev().copied().collect(),
                config: self.config,
            }
            .sorted()
        }
    }

    /// The maps a mirror stands for, entry by entry.
    fn read_of(s: &MapState) -> Pic {
        let mut r = Pic {
            backends: s.backends.clone(),
            vips: s.vips.clone(),
            config: s.config,
            ..Default::default()
        };
        for (k, f) in &s.frontends {
            r.frontends.insert(
                *k,
                Frontend {
                    svc_id: f.svc_id,
                    count: f.slots.len() as u32,
                    flags: f.flags,
                    kind: f.kind,
                    pad: 0,
                },
            );
            for (slot, id) in (0u32..).zip(&f.slots) {
                r.slots.insert((f.svc_id, slot), *id);
            }
            r.names.insert(f.svc_id, stored_name(&f.name).into_owned());
        }
        r
    }

    /// Frontends whose `count` slots do not all name a backend of their family.
    fn broken(r: &Pic) -> BTreeSet<FrontendKey> {
        r.frontends
            .iter()
            .filter(|(k, f)| {
                (0..f.count).any(|s| {
                    r.slots
                        .get(&(f.svc_id, s))
                        .and_then(|id| r.backends.get(id))
                        .is_none_or(|b| b.to_map().family != k.family)
                })
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// ClusterIPs marked without any frontend on their address.
    fn bare_vips(r: &Pic) -> BTreeSet<VipKey> {
        r.vips
            .iter()
            .filter(|v| {
                !r.frontends
                    .keys()
                    .any(|k| k.addr == v.addr && k.family == v.family)
            })
            .copied()
            .collect()
    }

    fn apply_read(r: &mut Pic, op: &Op) {
        match op {
            Op::SetBackend(id, k) => {
                r.backends.insert(*id, *k);
            }
            Op::SetMeta(id, n) => {
                r.names.insert(*id, stored_name(n).into_owned());
            }
            Op::ResetStats(_) => {}
            Op::SetSlot {
                svc_id,
                slot,
                backend_id,
            } => {
                r.slots.insert((*svc_id, *slot), *backend_id);
            }
            Op::SetFrontend(k, f) => {
                r.frontends.insert(*k, *f);
            }
            Op::DelSlot { svc_id, slot } => {
                r.slots.remove(&(*svc_id, *slot));
            }
            Op::DelFrontend(k) => {
                r.frontends.remove(k);
            }
            Op::DelMeta(id) => {
                r.names.remove(id);
            }
            Op::DelBackend(id) => {
                r.backends.remove(id);
            }
            Op::SetVip(k) => {
                r.vips.insert(*k);
            }
            Op::DelVip(k) => {
                r.vips.remove(k);
            }
            Op::SetConfig(c) => r.config = *c,
        }
    }

    /// The repair of `read` against `mirror` with nothing touched, applied op by op: no
    /// frontend breaks and no ClusterIP loses its frontends that was fine before, the result
    /// is exactly the mirror's maps, and repairing it again writes nothing.
    fn repair_checked(mirror: &MapState, read: &Pic) -> Vec<Op> {
        let ops = repair(mirror, &read.back(), &Touched::default());
        let (broken0, bare0) = (broken(read), bare_vips(read));
        let mut r = read.clone();
        for op in &ops {
            apply_read(&mut r, op);
            let b = broken(&r);
            assert!(b.is_subset(&broken0), "{b:?} broken after {op:?}");
            let v = bare_vips(&r);
            assert!(v.is_subset(&bare0), "{v:?} without frontends after {op:?}");
        }
        assert_eq!(r, read_of(mirror), "repaired maps differ from the mirror");
        assert!(repair(mirror, &r.back(), &Touched::default()).is_empty());
        ops
    }

    /// A mirror of both families: web (2 backends), dns (1, shared address), web6 (2).
    fn drift_mirror() -> (MapState, [FrontendKey; 3]) {
        let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
        let dns = fe([10, 96, 0, 53], 53, Proto::Udp);
        let web6 = fe6("fd00:96::10", 80, Proto::Tcp);
        let d = desired(&[
            (web, "default/web:http", vec![be(10, 8080), be(11, 8080)]),
            (dns, "kube-system/dns:dns", vec![be(10, 53)]),
            (web6, "default/web:http", vec![be6(10, 8080), be6(11, 8080)]),
        ]);
        let (s, _) = step(&MapState::default(), &d);
        (s, [web, dns, web6].map(|f| frontend_key(&f)))
    }

    #[test]
    fn repair_of_identical_maps_writes_nothing() {
        let (m, _) = drift_mirror();
        assert_eq!(repair(&m, &read_of(&m).back(), &Touched::default()), vec![]);
        assert_eq!(
            repair(
                &MapState::default(),
                &ReadBack::default(),
                &Touched::default()
            ),
            vec![]
        );
    }

    #[test]
    fn repair_of_a_deleted_frontend() {
        let (m, [web, ..]) = drift_mirror();
        let mut r = read_of(&m);
        let want = r.frontends.remove(&web).unwrap();
        assert_eq!(repair_checked(&m, &r), vec![Op::SetFrontend(web, want)]);
    }

    #[test]
    fn repair_of_an_altered_or_deleted_backend() {
        let (m, [web, ..]) = drift_mirror();
        let id = m.frontends[&web].slots[0];
        let mut r = read_of(&m);
        r.backends.get_mut(&id).unwrap().port = 1;
        assert_eq!(
            repair_checked(&m, &r),
            vec![Op::SetBackend(id, m.backends[&id])]
        );
        r.backends.remove(&id);
        assert_eq!(
            repair_checked(&m, &r),
            vec![Op::SetBackend(id, m.backends[&id])]
        );
    }

    #[test]
    fn repair_of_an_altered_or_deleted_slot() {
        let (m, [web, dns, _]) = drift_mirror();
        let f = &m.frontends[&web];
        let mut r = read_of(&m);
        // Slot 1 of web names dns's backend (another port), slot 0 is gone.
        r.slots.insert((f.svc_id, 1), m.frontends[&dns].slots[0]);
        r.slots.remove(&(f.svc_id, 0));
        assert_eq!(
            repair_checked(&m, &r),
            vec![
                Op::SetSlot {
                    svc_id: f.svc_id,
                    slot: 0,
                    backend_id: f.slots[0]
                },
                Op::SetSlot {
                    svc_id: f.svc_id,
                    slot: 1,
                    backend_id: f.slots[1]
                },
            ]
        );
    }

    #[test]
    fn repair_of_an_extra_frontend_with_its_slots_and_name() {
        let (m, [web, ..]) = drift_mirror();
        let mut r = read_of(&m);
        let extra = frontend_key(&fe([10, 96, 0, 99], 80, Proto::Tcp));
        let mut e = r.frontends[&web];
        e.svc_id = 77;
        r.frontends.insert(extra, e);
        for (slot, id) in (0u32..).zip(&m.frontends[&web].slots) {
            r.slots.insert((77, slot), *id);
        }
        r.names.insert(77, "default/gone:http".into());
        assert_eq!(
            repair_checked(&m, &r),
            vec![
                Op::DelFrontend(extra),
                Op::DelSlot {
                    svc_id: 77,
                    slot: 0
                },
                Op::DelSlot {
                    svc_id: 77,
                    slot: 1
                },
                Op::DelMeta(77),
            ]
        );
    }

    #[test]
    fn repair_of_orphans_and_a_slot_beyond_the_count() {
        let (m, [web, ..]) = drift_mirror();
        let f = &m.frontends[&web];
        let mut r = read_of(&m);
        r.slots.insert((f.svc_id, 2), f.slots[0]);
        r.slots.insert((500, 0), f.slots[0]);
        r.names.insert(501, "x".into());
        // A backend nothing refers to.
        r.backends
            .insert(999, BackendKey::new(be(200, 80), Proto::Tcp));
        assert_eq!(
            repair_checked(&m, &r),
            vec![
                Op::DelSlot {
                    svc_id: f.svc_id,
                    slot: 2
                },
                Op::DelSlot {
                    svc_id: 500,
                    slot: 0
                },
                Op::DelMeta(501),
                Op::DelBackend(999),
            ]
        );
    }

    #[test]
    fn repair_of_a_frontend_entry_with_another_count_or_id() {
        let (m, [web, dns, _]) = drift_mirror();
        let f = &m.frontends[&web];
        let mut r = read_of(&m);
        // Count raised over a slot that is not there: broken until the switch.
        r.frontends.get_mut(&web).unwrap().count = 3;
        let want = read_of(&m).frontends[&web];
        assert_eq!(repair_checked(&m, &r), vec![Op::SetFrontend(web, want)]);
        // Pointed at dns's svc_id, and web's own slots gone.
        let mut r = read_of(&m);
        r.frontends.get_mut(&web).unwrap().svc_id = m.frontends[&dns].svc_id;
        r.frontends.get_mut(&web).unwrap().flags = FE_SNAT;
        r.slots.retain(|(id, _), _| *id != f.svc_id);
        let ops = repair_checked(&m, &r);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(ops[2], Op::SetFrontend(web, want), "the switch comes last");
    }

    #[test]
    fn repair_of_names() {
        let (m, [web, ..]) = drift_mirror();
        let id = m.frontends[&web].svc_id;
        let mut r = read_of(&m);
        r.names.insert(id, "default/other:http".into());
        assert_eq!(
            repair_checked(&m, &r),
            vec![Op::SetMeta(id, "default/web:http".into())]
        );
        r.names.remove(&id);
        assert_eq!(
            repair_checked(&m, &r),
            vec![Op::SetMeta(id, "default/web:http".into())]
        );
        // A name longer than the map holds reads back cut, which is no drift.
        let mut long = m.clone();
        long.frontends.get_mut(&web).unwrap().name = format!("default/{}:http", "é".repeat(80));
        assert!(stored_name(&long.frontends[&web].name).len() <= SVC_NAME_LEN + 3);
        assert_eq!(repair_checked(&long, &read_of(&long)), vec![]);
    }

    #[test]
    fn repair_of_cluster_ips_and_config() {
        let (m, [web, ..]) = drift_mirror();
        let vip = m.vips.iter().next().copied().unwrap();
        let extra = vip_key("10.96.0.99".parse().unwrap());
        let mut r = read_of(&m);
        r.vips.remove(&vip);
        r.vips.insert(extra);
        r.config.snat_addr = [1, 2, 3, 4];
        r.frontends.remove(&web);
        let ops = repair_checked(&m, &r);
        assert_eq!(
            ops,
            vec![
                Op::SetConfig(m.config),
                Op::SetFrontend(web, read_of(&m).frontends[&web]),
                Op::SetVip(vip),
                Op::DelVip(extra),
            ]
        );
    }

    #[test]
    fn repair_leaves_out_what_was_written_during_the_read() {
        let (m, [web, dns, web6]) = drift_mirror();
        let (web_id, dns_id) = (m.frontends[&web].svc_id, m.frontends[&dns].svc_id);
        let mut r = read_of(&m);
        // Drift everywhere: web's entry gone and a slot beyond its count, dns's slot and name
        // altered, web6's backend altered, a ClusterIP gone, the config altered.
        r.frontends.remove(&web);
        r.slots.insert((web_id, 5), 1);
        r.slots.insert((dns_id, 0), m.frontends[&web].slots[0]);
        r.names.insert(dns_id, "x".into());
        let b6 = m.frontends[&web6].slots[0];
        r.backends.get_mut(&b6).unwrap().port = 1;
        let vip = vip_key("10.96.0.53".parse().unwrap());
        r.vips.remove(&vip);
        r.config.snat_port_min = 1;
        let all = repair_checked(&m, &r);
        assert_eq!(all.len(), 7, "{all:?}");
        let without = |t: Touched| -> Vec<Op> {
            let ops = repair(&m, &r.back(), &t);
            all.iter().filter(|o| !ops.contains(o)).cloned().collect()
        };
        let t = |f: &dyn Fn(&mut Touched)| {
            let mut t = Touched::default();
            f(&mut t);
            t
        };
        // web's key written: its entry and its slots by id are left out.
        assert_eq!(
            without(t(&|t| {
                t.frontends.insert(web);
            })),
            vec![
                Op::SetFrontend(web, read_of(&m).frontends[&web]),
                Op::DelSlot {
                    svc_id: web_id,
                    slot: 5
                }
            ]
        );
        // web's slots written (its id): the same unit.
        assert_eq!(
            without(t(&|t| t.record(&[Op::DelSlot {
                svc_id: web_id,
                slot: 0
            }]))),
            without(t(&|t| {
                t.frontends.insert(web);
            }))
        );
        // dns's name written: its slot and name are left out, its entry too.
        assert_eq!(
            without(t(&|t| t.record(&[Op::SetMeta(dns_id, "x".into())]))).len(),
            2
        );
        assert_eq!(
            without(t(&|t| t.record(&[Op::DelBackend(b6)]))),
            vec![Op::SetBackend(b6, m.backends[&b6])]
        );
        assert_eq!(
            without(t(&|t| t.record(&[Op::SetVip(vip)]))),
            vec![Op::SetVip(vip)]
        );
        assert_eq!(
            without(t(&|t| t.record(&[Op::SetConfig(m.config)]))),
            vec![Op::SetConfig(m.config)]
        );
        assert_eq!(without(t(&|t| t.all = true)), all);
        // Writes elsewhere leave everything in.
        assert_eq!(
            without(t(&|t| t.record(&[
                Op::SetBackend(4000, m.backends[&b6]),
                Op::SetMeta(4000, "y".into())
            ]))),
            vec![]
        );
    }

    /// Random mirrors with random drift on every kind of entry: the repair restores the
    /// mirror's maps exactly, breaks nothing that was whole on the way, and a second repair
    /// writes nothing.
    #[test]
    fn repair_restores_random_drift() {
        let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut total = 0;
        for _ in 0..300 {
            let fes: Vec<_> = (0..1 + rnd(8) as u8)
                .map(|i| {
                    let backends = (0..rnd(5)).map(|_| be(rnd(12) as u8, 80)).collect();
                    (fe([10, 96, 0, i], 80, Proto::Tcp), "default/s:p", backends)
                })
                .collect();
            let mut d = desired(&fes);
            for b in d.frontends.values_mut() {
                b.backends.sort();
                b.backends.dedup();
            }
            let (m, _) = step(&MapState::default(), &d);
            let mut r = read_of(&m);
            let keys: Vec<FrontendKey> = m.frontends.keys().copied().collect();
            let key = |n: u64| keys[n as usize % keys.len()];
            for _ in 0..=rnd(4) {
                let k = key(rnd(100));
                let id = m.frontends[&k].svc_id;
                match rnd(12) {
                    0 => {
                        r.frontends.remove(&k);
                    }
                    1 => {
                        if let Some(f) = r.frontends.get_mut(&k) {
                            f.count = rnd(4) as u32;
                        }
                    }
                    2 => {
                        if let Some(f) = r.frontends.get_mut(&k) {
                            f.svc_id = 1 + rnd(10) as u32;
                        }
                    }
                    3 => {
                        r.slots.insert((id, rnd(6) as u32), 1 + rnd(14) as u32);
                    }
                    4 => {
                        r.slots.remove(&(id, rnd(4) as u32));
                    }
                    5 => {
                        r.names.insert(1 + rnd(10) as u32, "n".into());
                    }
                    6 => {
                        r.names.remove(&id);
                    }
                    7 => {
                        let b = 1 + rnd(14) as u32;
                        r.backends
                            .insert(b, BackendKey::new(be(100 + rnd(3) as u8, 80), Proto::Tcp));
                    }
                    8 => {
                        r.backends.remove(&(1 + rnd(14) as u32));
                    }
                    9 => {
                        let f = read_of(&m).frontends[&key(0)];
                        r.frontends
                            .insert(frontend_key(&fe([10, 96, 1, 1], 80, Proto::Udp)), f);
                    }
                    10 => {
                        r.vips
                            .remove(&vip_key(IpAddr::from([10, 96, 0, rnd(8) as u8])));
                        r.vips
                            .insert(vip_key(IpAddr::from([10, 96, 2, rnd(2) as u8])));
                    }
                    _ => r.config.snat_port_max = rnd(3) as u16,
                }
            }
            total += repair_checked(&m, &r).len();
        }
        assert!(total > 300, "{total}");
    }

    /// 10,000 frontends of 10 backends each: the comparison (the part of a resync that runs
    /// on the agent loop) of the mirror with its own read-back, and with one drifted slot.
    #[test]
    fn repair_at_scale() {
        let mut d = DesiredState::default();
        for i in 0..10_000u32 {
            let f = FrontendAddr {
                ip: IpAddr::from([10, 100, (i / 250) as u8, (i % 250) as u8 + 1]),
                port: 80,
                proto: Proto::Tcp,
            };
            let backends = (0..10u32)
                .map(|j| {
                    let p = (i * 10 + j) % 50_000;
                    BackendAddr {
                        ip: IpAddr::from([10, 128, (p / 250) as u8, (p % 250) as u8 + 1]),
                        port: 8080,
                    }
                })
                .collect();
            d.cluster_ips.insert(f.ip);
            d.frontends.insert(
                f,
                FrontendSpec {
                    name: format!("default/svc-{i}:http"),
                    kind: FrontendKind::ClusterIp,
                    snat: false,
                    drop_when_empty: false,
                    backends,
                },
            );
        }
        let m = plan(&MapState::default(), &d).next;
        let mut r = read_of(&m).back();
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let ops = repair(&m, &r, &Touched::default());
            times.push(t.elapsed());
            assert!(ops.is_empty());
        }
        r.slots[12_345].1 = 1;
        let ops = repair(&m, &r, &Touched::default());
        assert_eq!(ops.len(), 1);
        let t = std::time::Instant::now();
        drop(r);
        let dropped = t.elapsed();
        let first = times[0];
        times.sort();
        eprintln!(
            "repair of 10,000 x 10 against its read-back: first {first:?}, median {:?}, max {:?}; \
             dropping the read-back: {dropped:?}",
            times[2], times[4]
        );
    }
}
