//! Drift repair: the maps as a resync reads them back ([`ReadBack`]), what the agent wrote
//! while the read was in flight ([`Touched`]), and the writes that bring the maps back to the
//! mirror ([`repair`]).
use std::{borrow::Cow, cmp::Ordering, collections::BTreeSet};

use lb_common::{Config, Frontend, FrontendKey, VipKey, SVC_NAME_LEN};

use super::{BackendKey, FrontendState, MapState, Op, UpdateOrder};

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
    UpdateOrder {
        config,
        backends: set_backends,
        names: meta,
        slots,
        frontends: fronts,
        add_vips,
        del_vips,
        removals: del_fronts
            .into_iter()
            .chain(del_slots)
            .chain(del_meta)
            .collect(),
        del_backends,
    }
    .into_ops()
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
