//! The test bed's address plan (see the table in the module docs of [`super`]): the fixed
//! addresses of nodes, clients and gateways, the addresses of pod `i` on node `k` and of the
//! underlay, in both families, and [`FamilyExt`], what the test bed adds to
//! [`podlb::types::Family`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use podlb::types::Family;

/// Address of the node on the external network (`ext0`).
pub const EXT_NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// Address of the external client (`eth0` in the ext namespace).
pub const EXT_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// Gateway address of the pods in [`PodNetwork::Bridge`](super::PodNetwork::Bridge) mode (address of `cbr0`).
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 1);
/// Link-local gateway of the pods in [`PodNetwork::Routed`](super::PodNetwork::Routed) mode (answered by proxy ARP).
pub const ROUTED_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// MAC address of every host-side `lxc` veth in routed mode (as Calico does).
pub const ROUTED_HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";

/// Address of the first external client of a [`Cluster`](super::Cluster) on the underlay (`br0`).
pub const CLUSTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// Name of a cluster node's uplink to the underlay, in the node namespace.
pub const CLUSTER_UPLINK: &str = "eth0";
/// Most nodes in a [`Cluster`](super::Cluster) (node IPs 192.168.50.10..=254).
pub const MAX_CLUSTER_NODES: usize = 245;
/// Most external clients of a [`Cluster`](super::Cluster) (client IPs 192.168.50.2..=9).
pub const MAX_CLUSTER_CLIENTS: usize = 8;

/// IPv6 address of the node on the external network (`ext0`).
pub const EXT_NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// IPv6 address of the external client (`eth0` in the ext namespace).
pub const EXT_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
/// IPv6 gateway of the pods of node 0 in [`PodNetwork::Bridge`](super::PodNetwork::Bridge) mode (address of `cbr0`).
pub const BRIDGE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
/// IPv6 gateway of the pods in [`PodNetwork::Routed`](super::PodNetwork::Routed) mode: the link-local address every host-side
/// `lxc` veth derives from [`ROUTED_HOST_MAC`] (Calico's fe80::ecee:eeff:feee:eeee).
pub const ROUTED_GATEWAY6: Ipv6Addr =
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// IPv6 address of the first external client of a [`Cluster`](super::Cluster) on the underlay.
pub const CLUSTER_CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);

/// `n` written in decimal and read as hex, so that IPv6 groups read like the IPv4 numbers they
/// mirror (10 -> 0x10, 244 -> 0x244).
fn dec_as_hex(n: usize) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("at most 4 decimal digits")
}

/// Address of pod `i` on node 0: 10.244.0.(10+i).
pub fn pod_ip(i: usize) -> Ipv4Addr {
    pod_ip_on(0, i)
}

/// Address of pod `i` on node `k`: 10.244.k.(10+i).
pub fn pod_ip_on(k: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, k, 10 + i as u8)
}

/// Gateway of the pods on node `k` in [`PodNetwork::Bridge`](super::PodNetwork::Bridge) mode: 10.244.k.1 (`cbr0`).
pub fn bridge_ip_on(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, k, 1)
}

/// Address of cluster node `k` on the underlay: 192.168.50.(10+k).
pub fn cluster_node_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 10 + k as u8)
}

/// Address of cluster client `n` on the underlay: 192.168.50.(2+n).
pub fn cluster_client_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 2 + n as u8)
}

/// IPv6 address of pod `i` on node 0: fd00:10:244:0::(10+i).
pub fn pod_ip6(i: usize) -> Ipv6Addr {
    pod_ip6_on(0, i)
}

/// IPv6 address of pod `i` on node `k`: fd00:10:244:k::(10+i) (the twin of 10.244.k.(10+i)).
pub fn pod_ip6_on(k: u8, i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x10,
        0x244,
        dec_as_hex(k as usize),
        0,
        0,
        0,
        dec_as_hex(10 + i),
    )
}

/// IPv6 gateway of the pods on node `k` in [`PodNetwork::Bridge`](super::PodNetwork::Bridge) mode: fd00:10:244:k::1.
pub fn bridge_ip6_on(k: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, dec_as_hex(k as usize), 0, 0, 0, 1)
}

/// IPv6 address of cluster node `k` on the underlay: fd00:50::(10+k).
pub fn cluster_node_ip6(k: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, dec_as_hex(10 + k))
}

/// IPv6 address of cluster client `n` on the underlay: fd00:50::(2+n).
pub fn cluster_client_ip6(n: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, dec_as_hex(2 + n))
}

/// What the test bed needs of an address family beyond [`podlb::types::Family`].
pub trait FamilyExt {
    /// The unspecified address of the family (0.0.0.0 or ::).
    fn unspecified(self) -> IpAddr;
}

impl FamilyExt for Family {
    fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }
}
