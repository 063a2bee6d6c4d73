//! The pinned maps: typed handles on them, reading them into a mirror or back as they are,
//! applying planned writes, the counters, and the formats of their entries.
use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use lb_common::{ip::from_addr, *};

use super::batch::{dump, dump_values};
use super::pins::check_layout;
use crate::reconcile::{BackendKey, FrontendState, MapState, Op, ReadBack};

/// A frontend's entry, name and counters (summed over CPUs), as /metrics serves them.
pub struct FrontendCounters {
    pub key: FrontendKey,
    pub frontend: Frontend,
    pub name: String,
    pub stats: SvcStats,
}

/// Every frontend with its name and counters, from batched reads of the frontend, name and
/// per-CPU stats maps under `root` (a few dozen system calls at 10,000 Services).
pub fn frontend_counters(root: &Path) -> Result<Vec<FrontendCounters>> {
    check_layout(root)?;
    let pin = |name: &str| pinned(root, name);
    let mut fes = Vec::new();
    dump(&pin(MAP_FRONTENDS)?, |k: FrontendKey, f: Frontend| {
        fes.push((k, f))
    })?;
    let ids: std::collections::HashSet<u32> = fes.iter().map(|(_, f)| f.svc_id).collect();
    let mut names = std::collections::HashMap::new();
    dump(&pin(MAP_SVC_META)?, |id: u32, m: SvcMeta| {
        if ids.contains(&id) {
            names.insert(id, meta_name(&m));
        }
    })?;
    let mut stats = std::collections::HashMap::new();
    let cpus = nr_cpus().map_err(|(_, e)| e)?;
    dump_values(&pin(MAP_SVC_STATS)?, cpus, |id: u32, v: &[SvcStats]| {
        if ids.contains(&id) {
            let sum = sum_stats(v);
            stats.insert(id, sum);
        }
    })?;
    let out = fes
        .into_iter()
        .map(|(key, frontend)| FrontendCounters {
            key,
            frontend,
            name: names.get(&frontend.svc_id).cloned().unwrap_or_default(),
            stats: stats.get(&frontend.svc_id).copied().unwrap_or_default(),
        })
        .collect();
    Ok(out)
}

/// A pinned map under `root`, untyped (for the batched reads).
fn pinned(root: &Path, name: &str) -> Result<MapData> {
    MapData::from_pin(root.join(name))
        .with_context(|| format!("cannot open pinned map {}", root.join(name).display()))
}

/// The per-CPU counters of one Service, summed.
fn sum_stats<'a>(per_cpu: impl IntoIterator<Item = &'a SvcStats>) -> SvcStats {
    per_cpu
        .into_iter()
        .fold(SvcStats::default(), |a, s| SvcStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
        })
}

fn open_map(root: &Path, name: &str) -> Result<Map> {
    let path = root.join(name);
    let data = MapData::from_pin(&path).with_context(|| {
        format!(
            "cannot open pinned map {} (is the agent's bpf root right? has it run?)",
            path.display()
        )
    })?;
    Ok(Map::from_map_data(data)?)
}

/// Typed handles on the pinned maps.
pub struct Maps {
    pub frontends: HashMap<MapData, FrontendKey, Frontend>,
    pub slots: HashMap<MapData, SlotKey, Slot>,
    pub backends: Array<MapData, Backend>,
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub stats: PerCpuArray<MapData, SvcStats>,
    pub meta: HashMap<MapData, u32, SvcMeta>,
    pub vips: HashMap<MapData, VipKey, Vip>,
    pub config: Array<MapData, Config>,
    pub counters: PerCpuArray<MapData, u64>,
}

impl Maps {
    /// Opens the pinned maps; refuses pins of another layout version (see [`check_layout`]).
    pub fn open(root: &Path) -> Result<Self> {
        check_layout(root)?;
        Ok(Self {
            frontends: open_map(root, MAP_FRONTENDS)?.try_into()?,
            slots: open_map(root, MAP_SLOTS)?.try_into()?,
            backends: open_map(root, MAP_BACKENDS)?.try_into()?,
            conntrack: open_map(root, MAP_CONNTRACK)?.try_into()?,
            stats: open_map(root, MAP_SVC_STATS)?.try_into()?,
            meta: open_map(root, MAP_SVC_META)?.try_into()?,
            vips: open_map(root, MAP_VIPS)?.try_into()?,
            config: open_map(root, MAP_CONFIG)?.try_into()?,
            counters: open_map(root, MAP_COUNTERS)?.try_into()?,
        })
    }

    /// Reads the service maps into a mirror. Slots beyond a frontend's count and backends no
    /// slot refers to are left out, so the next plan removes them.
    pub fn read_state(&self) -> Result<MapState> {
        let mut st = MapState::default();
        for item in self.frontends.iter() {
            let (key, fe) = item?;
            let mut slots = Vec::with_capacity(fe.count as usize);
            for slot in 0..fe.count {
                match self.slots.get(
                    &SlotKey {
                        svc_id: fe.svc_id,
                        slot,
                    },
                    0,
                ) {
                    Ok(s) => slots.push(s.backend_id),
                    Err(_) => break,
                }
            }
            let name = self
                .meta
                .get(&fe.svc_id, 0)
                .map(|m| meta_name(&m))
                .unwrap_or_default();
            st.frontends.insert(
                key,
                FrontendState {
                    svc_id: fe.svc_id,
                    name,
                    flags: fe.flags,
                    kind: fe.kind,
                    slots,
                },
            );
        }
        for k in self.vips.keys() {
            st.vips.insert(k?);
        }
        st.config = self.config.get(&0, 0)?;
        for (i, b) in self.backends.iter().enumerate() {
            let b = b?;
            if b != Backend::default() {
                st.backends.insert(i as u32, BackendKey::from_map(&b));
            }
        }
        Ok(st)
    }

    /// Reads the service maps under `root` back as they are, for a resync
    /// ([`crate::reconcile::repair`]), with handles of its own and batched lookups (a few
    /// hundred system calls at 10,000 Services); a resync runs it on a thread of its own.
    pub fn read_back(root: &Path) -> Result<ReadBack> {
        check_layout(root)?;
        let pin = |name: &str| pinned(root, name);
        let mut rb = ReadBack::default();
        dump(&pin(MAP_FRONTENDS)?, |k: FrontendKey, f: Frontend| {
            rb.frontends.push((k, f))
        })?;
        dump(&pin(MAP_SLOTS)?, |k: SlotKey, s: Slot| {
            rb.slots.push(((k.svc_id, k.slot), s.backend_id))
        })?;
        dump(&pin(MAP_SVC_META)?, |id: u32, m: SvcMeta| {
            rb.names.push((id, meta_name(&m)))
        })?;
        dump(&pin(MAP_VIPS)?, |k: VipKey, _: Vip| rb.vips.push(k))?;
        dump(&pin(MAP_CONFIG)?, |_: u32, c: Config| rb.config = c)?;
        dump(&pin(MAP_BACKENDS)?, |id: u32, b: Backend| {
            if b != Backend::default() {
                rb.backends.push((id, BackendKey::from_map(&b)));
            }
        })?;
        Ok(rb.sorted())
    }

    /// Slots and names that no frontend owns (left by a crash mid-update): to delete.
    pub fn orphans(&self, st: &MapState) -> Result<Vec<Op>> {
        let owned: BTreeMap<u32, usize> = st
            .frontends
            .values()
            .map(|f| (f.svc_id, f.slots.len()))
            .collect();
        let mut ops = Vec::new();
        for k in self.slots.keys() {
            let k = k?;
            if owned.get(&k.svc_id).is_none_or(|n| k.slot as usize >= *n) {
                ops.push(Op::DelSlot {
                    svc_id: k.svc_id,
                    slot: k.slot,
                });
            }
        }
        for k in self.meta.keys() {
            let k = k?;
            if !owned.contains_key(&k) {
                ops.push(Op::DelMeta(k));
            }
        }
        Ok(ops)
    }

    /// Applies one planned write. Deleting what is already gone is not an error.
    pub fn apply(&mut self, op: &Op) -> Result<(), WriteError> {
        let r = match op {
            Op::SetBackend(id, k) => self.backends.set(*id, k.to_map(), 0),
            Op::SetMeta(id, name) => self.meta.insert(id, make_meta(name), 0),
            Op::ResetStats(id) => {
                let zero = PerCpuValues::try_from(vec![
                    SvcStats::default();
                    nr_cpus().map_err(|(_, e)| e)?
                ])?;
                self.stats.set(*id, zero, 0)
            }
            Op::SetSlot {
                svc_id,
                slot,
                backend_id,
            } => self.slots.insert(
                SlotKey {
                    svc_id: *svc_id,
                    slot: *slot,
                },
                Slot {
                    backend_id: *backend_id,
                },
                0,
            ),
            Op::SetFrontend(k, f) => self.frontends.insert(k, f, 0),
            Op::DelSlot { svc_id, slot } => ignore_missing(self.slots.remove(&SlotKey {
                svc_id: *svc_id,
                slot: *slot,
            })),
            Op::DelFrontend(k) => ignore_missing(self.frontends.remove(k)),
            Op::DelMeta(id) => ignore_missing(self.meta.remove(id)),
            Op::DelBackend(id) => self.backends.set(*id, Backend::default(), 0),
            Op::SetVip(k) => self.vips.insert(k, Vip::default(), 0),
            Op::DelVip(k) => ignore_missing(self.vips.remove(k)),
            Op::SetConfig(c) => self.config.set(0, c, 0),
        };
        r.map_err(|e| WriteError::new(op, e))
    }

    /// The `CNT_*` event counters, summed over CPUs, with their names.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        COUNTER_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = self
                    .counters
                    .get(&(i as u32), 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                (*name, v)
            })
            .collect()
    }

    /// Sum of the per-CPU counters of one service.
    pub fn stats_of(&self, svc_id: u32) -> SvcStats {
        self.stats
            .get(&svc_id, 0)
            .map(|v| sum_stats(v.iter()))
            .unwrap_or_default()
    }
}

/// A planned write that failed ([`Maps::apply`]): the agent counts a full map apart from other
/// failures. The write is boxed: an `Op` with the whole config entry is large.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The map has no room for the entry (`E2BIG` or `ENOSPC` from the kernel).
    #[error("map write {0:?}")]
    Full(Box<Op>, #[source] MapError),
    /// Any other failure of the write.
    #[error("map write {0:?}")]
    Failed(Box<Op>, #[source] MapError),
    /// The zeroed per-CPU counters could not be made: the number of possible CPUs is unknown.
    #[error(transparent)]
    Cpus(#[from] std::io::Error),
}

impl WriteError {
    fn new(op: &Op, e: MapError) -> Self {
        let full = match &e {
            MapError::SyscallError(e) => {
                matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC))
            }
            _ => false,
        };
        match full {
            true => WriteError::Full(Box::new(op.clone()), e),
            false => WriteError::Failed(Box::new(op.clone()), e),
        }
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

pub fn make_meta(name: &str) -> SvcMeta {
    let mut m = SvcMeta {
        name_len: 0,
        pad: 0,
        name: [0; SVC_NAME_LEN],
    };
    let bytes = name.as_bytes();
    let n = bytes.len().min(SVC_NAME_LEN);
    m.name[..n].copy_from_slice(&bytes[..n]);
    m.name_len = n as u32;
    m
}

pub fn meta_name(m: &SvcMeta) -> String {
    String::from_utf8_lossy(&m.name[..(m.name_len as usize).min(SVC_NAME_LEN)]).into_owned()
}

/// `10.96.0.10:80`, `[fd00::10]:80`.
pub fn fmt_addr(addr: &Addr, family: u8, port: u16) -> String {
    SocketAddr::new(from_addr(addr, family), port).to_string()
}
