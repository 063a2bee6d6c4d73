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
use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{
    Backend4, Config, Frontend, Frontend4Key, FE_DROP_EMPTY, FE_SNAT, KIND_CLUSTER_IP,
    KIND_EXTERNAL_IP, KIND_LOAD_BALANCER, KIND_NODE_PORT, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE,
    MAX_SERVICES, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::model::{BackendAddr, DesiredState, FrontendAddr, FrontendKind, FrontendSpec, Proto};

/// A backend as the datapath sees it: address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKey {
    pub ip: Ipv4Addr,
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
    pub fn to_map(self) -> Backend4 {
        Backend4 {
            addr: self.ip.octets(),
            port: self.port,
            proto: self.proto,
            flags: 0,
        }
    }
    pub fn from_map(b: &Backend4) -> Self {
        Self {
            ip: Ipv4Addr::from(b.addr),
            port: b.port,
            proto: b.proto,
        }
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
    pub frontends: BTreeMap<Frontend4Key, FrontendState>,
    pub backends: BTreeMap<u32, BackendKey>,
    pub vips: BTreeSet<Ipv4Addr>,
    pub config: Config,
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
    SetFrontend(Frontend4Key, Frontend),
    DelSlot {
        svc_id: u32,
        slot: u32,
    },
    DelFrontend(Frontend4Key),
    DelMeta(u32),
    DelBackend(u32),
    SetVip(Ipv4Addr),
    DelVip(Ipv4Addr),
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

/// SNAT source: the first node address (0.0.0.0, i.e. no SNAT, when none is known).
pub fn config_for(desired: &DesiredState) -> Config {
    Config {
        snat_addr: desired
            .node_addresses
            .first()
            .map(|a| a.octets())
            .unwrap_or_default(),
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
    }
}

pub fn frontend_key(f: &FrontendAddr) -> Frontend4Key {
    Frontend4Key {
        addr: f.ip.octets(),
        port: f.port,
        proto: f.proto.number(),
        pad: 0,
    }
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
        wanted.extend(spec.backends.iter().map(|b| BackendKey::new(*b, fe.proto)));
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
                        "backend {}:{} left out: backend map full",
                        k.ip, k.port
                    ));
                    continue;
                }
            },
        };
        id_of.insert(*k, id);
        next.backends.insert(id, *k);
    }

    // Frontends.
    let wanted_fes: BTreeMap<Frontend4Key, _> = desired
        .frontends
        .iter()
        .map(|(f, s)| (frontend_key(f), (f, s)))
        .collect();
    let mut svc_ids = IdAlloc::new(cur.frontends.values().map(|f| f.svc_id), MAX_SERVICES);
    let (mut meta, mut slots, mut fronts, mut shrink) = (vec![], vec![], vec![], vec![]);
    for (key, (fe, spec)) in &wanted_fes {
        let ids: Vec<u32> = spec
            .backends
            .iter()
            .filter_map(|b| id_of.get(&BackendKey::new(*b, fe.proto)).copied())
            .take(MAX_BACKENDS_PER_SERVICE as usize)
            .collect();
        let old = cur.frontends.get(key);
        let svc_id = match old {
            Some(o) => o.svc_id,
            None => match svc_ids.alloc() {
                Some(id) => {
                    meta.push(Op::ResetStats(id));
                    id
                }
                None => {
                    errors.push(format!(
                        "frontend {} ({}) left out: service map full",
                        fmt_fe(fe),
                        spec.name
                    ));
                    continue;
                }
            },
        };
        if old.map(|o| &o.name) != Some(&spec.name) {
            meta.push(Op::SetMeta(svc_id, spec.name.clone()));
        }
        let old_slots = old.map(|o| o.slots.as_slice()).unwrap_or(&[]);
        let new_slots = place(old_slots, &ids);
        for (i, id) in new_slots.iter().enumerate() {
            if old_slots.get(i) != Some(id) {
                slots.push(Op::SetSlot {
                    svc_id,
                    slot: i as u32,
                    backend_id: *id,
                });
            }
        }
        let (flags, kind) = flags_and_kind(spec);
        if old.map(|o| (o.slots.len(), o.flags, o.kind)) != Some((new_slots.len(), flags, kind)) {
            let count = new_slots.len() as u32;
            fronts.push(Op::SetFrontend(
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
            shrink.push(Op::DelSlot {
                svc_id,
                slot: i as u32,
            });
        }
        next.frontends.insert(
            *key,
            FrontendState {
                svc_id,
                name: spec.name.clone(),
                flags,
                kind,
                slots: new_slots,
            },
        );
    }

    let mut removals = Vec::new();
    for (key, old) in &cur.frontends {
        if next.frontends.contains_key(key) {
            continue;
        }
        removals.push(Op::DelFrontend(*key));
        removals.extend((0..old.slots.len() as u32).map(|slot| Op::DelSlot {
            svc_id: old.svc_id,
            slot,
        }));
        removals.push(Op::DelMeta(old.svc_id));
    }
    let del_backends = cur
        .backends
        .keys()
        .filter(|id| !next.backends.contains_key(id))
        .map(|id| Op::DelBackend(*id));

    // ClusterIPs are added once their frontends exist and removed before their frontends go,
    // so that a Service's own ports are never rejected while it changes.
    next.vips = desired.cluster_ips.clone();
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

fn fmt_fe(f: &FrontendAddr) -> String {
    format!("{}:{}/{:?}", f.ip, f.port, f.proto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrontendSpec;

    fn fe(ip: [u8; 4], port: u16, proto: Proto) -> FrontendAddr {
        FrontendAddr {
            ip: Ipv4Addr::from(ip),
            port,
            proto,
        }
    }
    fn be(last: u8, port: u16) -> BackendAddr {
        BackendAddr {
            ip: Ipv4Addr::new(10, 244, 0, last),
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
            node_addresses: vec![Ipv4Addr::new(192, 168, 77, 1)],
        }
    }
    /// Applies ops to a mirror the way the maps would, checking the datapath invariant after
    /// every single op: each frontend's `count` slots name existing backends.
    fn apply_checked(cur: &MapState, ops: &[Op]) -> MapState {
        let mut fronts: BTreeMap<Frontend4Key, Frontend> = cur
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
            for ip in &vips {
                assert!(
                    fronts.keys().any(|k| k.addr == ip.octets()),
                    "VIP {ip} without frontends after {op:?}"
                );
            }
            for (k, f) in &fronts {
                for s in 0..f.count {
                    let id = slots
                        .get(&(f.svc_id, s))
                        .unwrap_or_else(|| panic!("{k:?} slot {s} missing after {op:?}"));
                    assert!(
                        backends.contains_key(id),
                        "{k:?} slot {s} -> dead backend {id} after {op:?}"
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
}
