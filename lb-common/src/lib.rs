//! Types shared by the eBPF programs (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, has explicit padding, and holds only plain integers
//! and byte arrays, so its layout is the same on both sides and `bpftool` prints it with field
//! names from BTF. Addresses are stored as bytes in network order (`[10, 96, 0, 10]`), ports and
//! counters in host order, so that a map dump reads naturally.
#![no_std]

/// Version of the pinned map layout. Bump when a key or value type changes shape.
pub const PIN_LAYOUT_VERSION: u32 = 1;

/// Map names. These are also the pin names under the bpf root.
pub const MAP_FRONTENDS: &str = "lb4_frontends";
pub const MAP_SLOTS: &str = "lb4_slots";
pub const MAP_BACKENDS: &str = "lb4_backends";
pub const MAP_CONNTRACK: &str = "lb4_conntrack";
pub const MAP_SVC_STATS: &str = "lb_svc_stats";
pub const MAP_SVC_META: &str = "lb_svc_meta";
/// All maps, in the order they are pinned.
pub const ALL_MAPS: [&str; 6] = [
    MAP_FRONTENDS,
    MAP_SLOTS,
    MAP_BACKENDS,
    MAP_CONNTRACK,
    MAP_SVC_STATS,
    MAP_SVC_META,
];

/// Name of the TC program (the function name in lb-ebpf) and its pin name.
pub const PROG_TC_POD: &str = "podlb_tc_pod";

/// Map sizes.
pub const MAX_SERVICES: u32 = 65536;
pub const MAX_SLOTS: u32 = 262_144;
pub const MAX_BACKENDS: u32 = 65536;
pub const MAX_CONNTRACK: u32 = 262_144;
/// Largest number of backends one frontend can hold.
pub const MAX_BACKENDS_PER_SERVICE: u32 = 4096;

/// IP protocol numbers used in keys.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// A Service frontend: VIP, port and protocol. Key of `lb4_frontends`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend4Key {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of `lb4_frontends`.
///
/// `svc_id` names the frontend in the slot, stats and meta maps. `count` is the number of
/// valid slots: the datapath picks slot `rand % count`. The reconciler writes slots first and
/// `count` last, so a packet never reads a slot that is not written yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frontend {
    pub svc_id: u32,
    pub count: u32,
    pub flags: u32,
    pub pad: u32,
}

/// Key of `lb4_slots`: the `slot`-th backend of service `svc_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotKey {
    pub svc_id: u32,
    pub slot: u32,
}

/// Value of `lb4_slots`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub backend_id: u32,
}

/// A backend (pod address and target port). Value of `lb4_backends`, an array indexed by
/// backend id. Id 0 is never used; an all-zero entry means "no backend".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Backend4 {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub flags: u8,
}

/// Conntrack key: the 5-tuple as seen on the wire, in the packet's own direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ct4Key {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `Ct4Entry::flags`: forward entry (client to VIP); rewrite the destination.
pub const CT_FORWARD: u32 = 1;
/// `Ct4Entry::flags`: reply entry (backend to client); rewrite the source back to the VIP.
pub const CT_REPLY: u32 = 2;

/// Conntrack value. For a forward entry `nat_addr:nat_port` is the backend; for a reply entry it
/// is the VIP and Service port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ct4Entry {
    pub nat_addr: [u8; 4],
    pub nat_port: u16,
    pub pad: u16,
    pub flags: u32,
    pub svc_id: u32,
    pub backend_id: u32,
    pub pad2: u32,
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
    unsafe impl aya::Pod for Frontend4Key {}
    unsafe impl aya::Pod for Frontend {}
    unsafe impl aya::Pod for SlotKey {}
    unsafe impl aya::Pod for Slot {}
    unsafe impl aya::Pod for Backend4 {}
    unsafe impl aya::Pod for Ct4Key {}
    unsafe impl aya::Pod for Ct4Entry {}
    unsafe impl aya::Pod for SvcStats {}
    unsafe impl aya::Pod for SvcMeta {}
}
