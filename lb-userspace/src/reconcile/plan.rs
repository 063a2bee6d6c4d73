//! The full plan: every wanted frontend and backend against the mirror of the maps, in the
//! update order of the module doc; and the parts of it the incremental planner shares (one
//! frontend's writes, a removal, the slot layout).
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use lb_common::{Frontend, FrontendKey, MAX_BACKENDS, MAX_BACKENDS_PER_SERVICE, MAX_SERVICES};

use super::ids::IdPool;
use super::{
    config_for, flags_and_kind, frontend_key, same_family, vip_key, BackendKey, FrontendState,
    MapState, Op, Plan, UpdateOrder,
};
use crate::model::{DesiredState, FrontendSpec};
use crate::types::FrontendAddr;

/// Plans the writes that turn the maps as the mirror `cur` holds them into `desired`, in the
/// update order of the module doc, with the state they leave.
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
    let mut backend_ids = IdPool::new(cur.backends.keys().copied(), MAX_BACKENDS);
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
    let mut svc_ids = IdPool::new(cur.frontends.values().map(|f| f.svc_id), MAX_SERVICES);
    let mut fo = UpdateOrder::default();
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

    // Slots beyond a shrunk count go first, then the removed frontends.
    fo.removals.extend(removals);
    let ops = UpdateOrder {
        config,
        backends: set_backends,
        add_vips: add_vips.collect(),
        del_vips: del_vips.collect(),
        del_backends: del_backends.collect(),
        ..fo
    }
    .into_ops();
    Plan { ops, next, errors }
}

/// Plans one wanted frontend against what the maps hold for it (`old`), given the ids of the
/// backends. Returns its new state, or None when it is left out (service map full).
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_frontend(
    key: &FrontendKey,
    fe: &FrontendAddr,
    spec: &FrontendSpec,
    old: Option<&FrontendState>,
    id_of: impl Fn(&BackendKey) -> Option<u32>,
    alloc_svc: &mut dyn FnMut() -> Option<u32>,
    errors: &mut Vec<String>,
    out: &mut UpdateOrder,
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
                out.names.push(Op::ResetStats(id));
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
        out.names.push(Op::SetMeta(svc_id, spec.name.clone()));
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
        out.frontends.push(Op::SetFrontend(
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
        out.removals.push(Op::DelSlot {
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
pub(super) fn removal_ops(key: &FrontendKey, old: &FrontendState, ops: &mut Vec<Op>) {
    ops.push(Op::DelFrontend(*key));
    ops.extend((0..old.slots.len() as u32).map(|slot| Op::DelSlot {
        svc_id: old.svc_id,
        slot,
    }));
    ops.push(Op::DelMeta(old.svc_id));
}

/// New slot layout: backends that stay keep their slot, new ones fill the holes, and when the
/// set shrinks the last entries move into the holes so the slots stay dense.
pub(super) fn place(old: &[u32], ids: &[u32]) -> Vec<u32> {
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
