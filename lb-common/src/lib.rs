//! Types shared by the eBPF programs (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, has explicit padding, and holds only plain integers
//! and byte arrays, so its layout is the same on both sides and `bpftool` prints it with field
//! names from BTF. Addresses are stored as bytes in network order (`[10, 96, 0, 10]`), ports and
//! counters in host order, so that a map dump reads naturally.
#![no_std]

/// Version of the pinned map layout. Bump when a key or value type changes shape.
/// The agent records it in `<bpf-root>/layout-version` and refuses to adopt pins of another
/// version (`podlb reset` clears them).
pub const PIN_LAYOUT_VERSION: u32 = 4;
/// File under the bpf root that holds `PIN_LAYOUT_VERSION` of the pinned maps.
pub const LAYOUT_VERSION_FILE: &str = "layout-version";

/// Map names. These are also the pin names under the bpf root.
pub const MAP_FRONTENDS: &str = "lb_frontends";
pub const MAP_SLOTS: &str = "lb_slots";
pub const MAP_BACKENDS: &str = "lb_backends";
pub const MAP_CONNTRACK: &str = "lb_conntrack";
pub const MAP_SVC_STATS: &str = "lb_svc_stats";
pub const MAP_SVC_META: &str = "lb_svc_meta";
pub const MAP_VIPS: &str = "lb_vips";
pub const MAP_CONFIG: &str = "lb_config";
pub const MAP_COUNTERS: &str = "lb_counters";
/// All maps, in the order they are pinned.
pub const ALL_MAPS: [&str; 9] = [
    MAP_FRONTENDS,
    MAP_SLOTS,
    MAP_BACKENDS,
    MAP_CONNTRACK,
    MAP_SVC_STATS,
    MAP_SVC_META,
    MAP_VIPS,
    MAP_CONFIG,
    MAP_COUNTERS,
];

/// Names of the programs (the function names in lb-ebpf), also their pin names.
pub const PROG_TC_POD: &str = "podlb_tc_pod";
pub const PROG_XDP_EXT: &str = "podlb_xdp_ext";
pub const PROG_TC_EGRESS: &str = "podlb_tc_egress";

/// Map sizes.
pub const MAX_SERVICES: u32 = 65536;
pub const MAX_SLOTS: u32 = 262_144;
pub const MAX_BACKENDS: u32 = 131_072;
pub const MAX_CONNTRACK: u32 = 262_144;
/// Largest number of backends one frontend can hold.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 4096;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// `family` field of keys and values: which IP version `addr` holds.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// An address field of either family, 16 bytes in network order. An IPv4 address takes the
/// first four bytes and the rest stays zero; the `family` field next to it tells them apart.
/// Every struct holding one is 4-byte aligned (`align(4)`, which adds no padding), so that the
/// eBPF side copies and compares addresses as words, not byte by byte.
pub type Addr = [u8; 16];

/// An IPv4 address as an [`Addr`].
#[inline(always)]
pub const fn addr4(a: [u8; 4]) -> Addr {
    let mut out = [0u8; 16];
    out[0] = a[0];
    out[1] = a[1];
    out[2] = a[2];
    out[3] = a[3];
    out
}

/// A Service frontend: VIP, port and protocol. Key of `lb_frontends`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
    /// `FAMILY_V4` or `FAMILY_V6`.
    pub family: u8,
}

/// Value of `lb_frontends`.
///
/// `svc_id` names the frontend in the slot, stats and meta maps. `count` is the number of
/// valid slots: the datapath picks slot `rand % count`. The reconciler writes slots first and
/// `count` last, so a packet never reads a slot that is not written yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub svc_id: u32,
    pub count: u32,
    /// `FE_*` bits.
    pub flags: u16,
    /// `KIND_*`: for operators only; the datapath reads `flags`.
    pub kind: u16,
    pub pad: u32,
}

/// `Frontend::flags`: masquerade every new flow to the node address (externalTrafficPolicy
/// Cluster on NodePort, ExternalIP and LoadBalancer frontends).
pub const FE_SNAT: u16 = 1;
/// `Frontend::flags`: with no backends, drop instead of rejecting (traffic policy Local).
pub const FE_DROP_EMPTY: u16 = 2;

pub const KIND_CLUSTER_IP: u16 = 1;
pub const KIND_NODE_PORT: u16 = 2;
pub const KIND_EXTERNAL_IP: u16 = 3;
pub const KIND_LOAD_BALANCER: u16 = 4;

/// Key of `lb_vips`: a ClusterIP.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: Addr,
    pub family: u8,
    pub pad: [u8; 3],
}

/// Value of `lb_vips`: traffic to a ClusterIP on a port that is not a frontend is rejected.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Vip {
    pub flags: u32,
}

/// The one entry of `lb_config` (an array of size 1), written by the agent.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// IPv4 source address for SNAT (masquerade and hairpin); 0.0.0.0 disables IPv4 SNAT.
    pub snat_addr: [u8; 4],
    /// SNAT source ports are taken from `snat_port_min..=snat_port_max` (both families).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// IPv6 source address for SNAT; `::` disables IPv6 SNAT.
    pub snat_addr6: [u8; 16],
}

/// Default SNAT port range: above Linux's default ephemeral range (32768-60999), so SNATed
/// flows do not collide with the node's own connections.
pub const SNAT_PORT_MIN: u16 = 61000;
pub const SNAT_PORT_MAX: u16 = 65535;

/// Indexes of `lb_counters`, a per-CPU array of `u64` event counters.
pub const CNT_REJECT_NO_BACKEND: u32 = 0;
pub const CNT_REJECT_NO_PORT: u32 = 1;
pub const CNT_DROP_NO_BACKEND: u32 = 2;
pub const CNT_SNAT_NO_PORT: u32 = 3;
pub const CNT_NAT_ERROR: u32 = 4;
pub const CNT_HAIRPIN: u32 = 5;
pub const CNT_SNAT: u32 = 6;
pub const COUNTERS: u32 = 8;
/// Names of the counters, by index, for the CLI.
pub const COUNTER_NAMES: [&str; 7] = [
    "reject_no_backend",
    "reject_no_port",
    "drop_no_backend",
    "snat_no_free_port",
    "nat_error",
    "hairpin",
    "snat",
];

/// Key of `lb_slots`: the `slot`-th backend of service `svc_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

/// Value of `lb_slots`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub backend_id: u32,
}

/// A backend (pod address and target port). Value of `lb_backends`, an array indexed by
/// backend id. Id 0 is never used; an all-zero entry means "no backend". A frontend's backends
/// are all of the frontend's family.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Conntrack key: the 5-tuple as seen on the wire, in the packet's own direction.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: Addr,
    pub daddr: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: [u8; 2],
}

/// `CtEntry::flags`: forward entry (client to VIP); rewrite the destination.
pub const CT_FORWARD: u32 = 1;
/// `CtEntry::flags`: reply entry (backend to client); rewrite the source back to the VIP.
pub const CT_REPLY: u32 = 2;
/// `CtEntry::flags`: the flow is source-NATed (`snat_*` are used).
pub const CT_SNAT: u32 = 4;

/// Conntrack value.
/// - forward entry: `nat_*` is the backend; with `CT_SNAT`, `snat_*` is the source the
///   client is rewritten to (node address and allocated port);
/// - reply entry: `nat_*` is the VIP and Service port (the new source); with `CT_SNAT`,
///   `snat_*` is the original client (the new destination).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub nat_addr: Addr,
    pub snat_addr: Addr,
    pub nat_port: u16,
    pub snat_port: u16,
    pub flags: u32,
    pub svc_id: u32,
    pub backend_id: u32,
}

/// Per-CPU counters per service (indexed by `svc_id`), in `lb_svc_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SvcStats {
    pub packets: u64,
    pub bytes: u64,
}

/// Length of the name in `SvcMeta`.
pub const SVC_NAME_LEN: usize = 120;

/// Human-readable name of a frontend (`namespace/name:port-name`), indexed by `svc_id`, so that
/// `podlb service list` works from the pinned maps alone. Not read by the datapath.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcMeta {
    pub name_len: u32,
    pub pad: u32,
    pub name: [u8; SVC_NAME_LEN],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for FrontendKey {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for Frontend {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for Slot {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for SvcStats {}
    unsafe impl aya::Pod for SvcMeta {}
    unsafe impl aya::Pod for Vip {}
    unsafe impl aya::Pod for Config {}
}

/// Conversions between `core::net` addresses and the `Addr` + family fields of the maps.
#[cfg(feature = "user")]
pub mod ip {
    use super::{addr4, Addr, FAMILY_V4, FAMILY_V6};
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// The `Addr` and `FAMILY_*` of an address.
    pub fn to_addr(ip: IpAddr) -> (Addr, u8) {
        match ip {
            IpAddr::V4(v4) => (addr4(v4.octets()), FAMILY_V4),
            IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
        }
    }

    /// The address an `Addr` + `FAMILY_*` pair holds (anything but `FAMILY_V6` reads as IPv4).
    pub fn from_addr(addr: &Addr, family: u8) -> IpAddr {
        if family == FAMILY_V6 {
            IpAddr::V6(Ipv6Addr::from(*addr))
        } else {
            IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
        }
    }
}
