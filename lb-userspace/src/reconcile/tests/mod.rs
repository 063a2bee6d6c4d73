//! The reconciler's unit tests, by part: the conversions, the id allocator, the full plan, the
//! incremental planner and the drift repair. This file holds what they share: the fixtures and
//! a model of the maps entry by entry ([`Pic`]), on which ops are applied with the datapath's
//! invariants checked after each one.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_common::{Config, Frontend, FrontendKey, VipKey};

use super::plan::plan;
use super::{stored_name, BackendKey, FrontendState, MapState, Op, ReadBack};
use crate::model::{DesiredState, FrontendSpec};
use crate::types::{BackendAddr, FrontendAddr, FrontendKind, Proto};

mod conversions;
mod ids;
mod plan;
mod planner;
mod repair;

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
                        masq_off_cluster: false,
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
        cluster_cidrs: Vec::new(),
    }
}
/// Applies ops to a mirror the way the maps would, checking the datapath invariant after
/// Applies ops to a mirror the way the maps would, checking the datapath invariant after
/// every single op: each frontend's `count` slots name existing backends of its family. Names
/// are kept as the maps store them (cut to `SVC_NAME_LEN` bytes; the tests' names are shorter).
fn apply_checked(cur: &MapState, ops: &[Op]) -> MapState {
    let mut r = read_of(cur);
    for op in ops {
        apply_read(&mut r, op);
        // A ClusterIP is never marked (rejecting unknown ports) without its frontends.
        for vip in &r.vips {
            assert!(
                r.frontends
                    .keys()
                    .any(|k| k.addr == vip.addr && k.family == vip.family),
                "VIP {vip:?} without frontends after {op:?}"
            );
        }
        for (k, f) in &r.frontends {
            for s in 0..f.count {
                let id = r
                    .slots
                    .get(&(f.svc_id, s))
                    .unwrap_or_else(|| panic!("{k:?} slot {s} missing after {op:?}"));
                let b = r
                    .backends
                    .get(id)
                    .unwrap_or_else(|| panic!("{k:?} slot {s} -> dead backend {id} after {op:?}"));
                assert_eq!(
                    b.to_map().family,
                    k.family,
                    "{k:?} slot {s} -> backend {b:?} of the other family"
                );
            }
        }
    }
    state_of(&r)
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
/// The mirror the maps `r` stand for (every frontend's `count` slots and its name present).
fn state_of(r: &Pic) -> MapState {
    let mut out = MapState {
        backends: r.backends.clone(),
        vips: r.vips.clone(),
        config: r.config,
        ..Default::default()
    };
    for (k, f) in &r.frontends {
        let s = (0..f.count).map(|i| r.slots[&(f.svc_id, i)]).collect();
        out.frontends.insert(
            *k,
            FrontendState {
                svc_id: f.svc_id,
                name: r.names[&f.svc_id].clone(),
                flags: f.flags,
                kind: f.kind,
                slots: s,
            },
        );
    }
    out
}
