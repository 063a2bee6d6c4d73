//! `lb_config`: the agent's settings for the datapath (SNAT addresses and port range).

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
}
