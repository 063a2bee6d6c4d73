//! Types shared by the eBPF programs (`lb-ebpf`) and the agent (`lb-userspace`).
//!
//! Every map key and value is `#[repr(C)]`, has explicit padding, and holds only plain integers
//! and byte arrays, so its layout is the same on both sides and `bpftool` prints it with field
//! names from BTF. Addresses are stored as bytes in network order (`[10, 96, 0, 10]`), ports and
//! counters in host order, so that a map dump reads naturally.
//!
//! This file holds what concerns all maps (layout version, names, sizes, protocol and family
//! numbers, the address type); the key and value types are in one file per map group:
//! `frontend` (`lb_frontends`, `lb_vips`), `backend` (`lb_slots`, `lb_backends`), `conntrack`,
//! `config` and `stats` (`lb_svc_stats`, `lb_counters`, `lb_svc_meta`), all re-exported here.
#![no_std]

/// Version of the pinned map layout. Bump when a key or value type changes shape.
/// The agent records it in `<bpf-root>/layout-version` and refuses to adopt pins of another
/// version (`podlb reset` clears them).
pub const PIN_LAYOUT_VERSION: u32 = 5;
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

mod backend;
mod config;
mod conntrack;
mod frontend;
mod stats;

pub use self::{backend::*, config::*, conntrack::*, frontend::*, stats::*};

/// Every map key and value is plain data: `aya::Pod` for the agent.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    macro_rules! pod {
        ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        FrontendKey,
        Frontend,
        VipKey,
        Vip,
        Config,
        SlotKey,
        Slot,
        Backend,
        CtKey,
        CtEntry,
        SvcStats,
        SvcMeta
    );
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
