//! `lb_config`: the agent's settings for the datapath (SNAT addresses and port range, and the
//! cluster CIDR of each family).

/// Default SNAT port range: above Linux's default ephemeral range (32768-60999), so SNATed
/// flows do not collide with the node's own connections.
pub const SNAT_PORT_MIN: u16 = 61000;
pub const SNAT_PORT_MAX: u16 = 65535;

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
    /// The IPv4 cluster CIDR (`--cluster-cidr`) as network address and netmask, both in network
    /// order: a source `s` is inside when `s & cluster_mask == cluster_net`. Read only for
    /// frontends with `FE_MASQ_OFF_CLUSTER`, which the agent sets only when the family has a
    /// CIDR; all zeros otherwise.
    pub cluster_net: [u8; 4],
    pub cluster_mask: [u8; 4],
    /// The IPv6 cluster CIDR, the same way.
    pub cluster_net6: [u8; 16],
    pub cluster_mask6: [u8; 16],
}
