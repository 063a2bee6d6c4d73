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
//! [`repair`](repair()) gives the writes that bring the maps, as a resync read them back, to the mirror
//! again (drift repair), in the same order.
//!
//! The parts: `plan` (the full plan), `planner` (the incremental [`Planner`] between syncs),
//! `repair` (drift repair: [`ReadBack`], [`Touched`]) and `ids` (the one id allocator of both
//! planners). This file holds the mirror's types and their conversions to and from map entries.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    ip::{from_addr, to_addr},
    Backend, Config, Frontend, FrontendKey, VipKey, FE_DROP_EMPTY, FE_MASQ_OFF_CLUSTER, FE_SNAT,
    SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::model::{DesiredState, FrontendSpec};
use crate::types::{BackendAddr, FrontendAddr, Proto};

mod ids;
mod plan;
mod planner;
mod repair;
#[cfg(test)]
mod tests;

pub use plan::plan;
pub(crate) use planner::service_of;
pub use planner::Planner;
pub use repair::{repair, stored_name, ReadBack, Touched};

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

/// A plan's writes by their step of the update order (DESIGN.md, "Reconciler: update order"),
/// gathered in any order and written in this one by [`UpdateOrder::into_ops`]. The full plan,
/// the incremental planner and the drift repair all write through it.
#[derive(Default)]
pub(crate) struct UpdateOrder {
    pub(crate) config: Option<Op>,
    /// Step 1: new and changed backends (no slot refers to them yet).
    pub(crate) backends: Vec<Op>,
    /// Step 2: names and zeroed counters of frontends.
    pub(crate) names: Vec<Op>,
    /// Step 3: slots: every slot below a live count names a live backend.
    pub(crate) slots: Vec<Op>,
    /// Step 4: frontend entries, the switch.
    pub(crate) frontends: Vec<Op>,
    /// ClusterIPs: added once their frontends exist, removed before their frontends go.
    pub(crate) add_vips: Vec<Op>,
    pub(crate) del_vips: Vec<Op>,
    /// Step 5: what no frontend needs any more (slots beyond a count, frontends, their slots
    /// and names), in the order given.
    pub(crate) removals: Vec<Op>,
    /// Step 6: backends no slot refers to.
    pub(crate) del_backends: Vec<Op>,
}

impl UpdateOrder {
    pub(crate) fn into_ops(self) -> Vec<Op> {
        let UpdateOrder {
            config,
            backends,
            names,
            slots,
            frontends,
            add_vips,
            del_vips,
            removals,
            del_backends,
        } = self;
        config
            .into_iter()
            .chain(backends)
            .chain(names)
            .chain(slots)
            .chain(frontends)
            .chain(add_vips)
            .chain(del_vips)
            .chain(removals)
            .chain(del_backends)
            .collect()
    }
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
    if spec.masq_off_cluster {
        flags |= FE_MASQ_OFF_CLUSTER;
    }
    (flags, spec.kind.code())
}

/// SNAT sources: the first IPv4 and the first IPv6 node address (0.0.0.0 and ::, i.e. no SNAT
/// in that family, when there is none); the cluster CIDR of each family as network and mask
/// (all zeros without one: only `FE_MASQ_OFF_CLUSTER` frontends read it, and the model sets
/// that flag only in a family with a CIDR).
pub fn config_for(desired: &DesiredState) -> Config {
    let mut config = Config {
        snat_addr: [0; 4],
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
        snat_addr6: [0; 16],
        ..Config::default()
    };
    for cidr in &desired.cluster_cidrs {
        match (cidr.network(), cidr.netmask()) {
            (IpAddr::V4(net), IpAddr::V4(mask)) => {
                config.cluster_net = net.octets();
                config.cluster_mask = mask.octets();
            }
            (IpAddr::V6(net), IpAddr::V6(mask)) => {
                config.cluster_net6 = net.octets();
                config.cluster_mask6 = mask.octets();
            }
            _ => {}
        }
    }
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
