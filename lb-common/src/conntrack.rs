//! `lb_conntrack`: two entries per flow, the forward 5-tuple and the expected reply 5-tuple.
use crate::Addr;

/// `CtEntry::flags`: forward entry (client to VIP); rewrite the destination.
pub const CT_FORWARD: u32 = 1;
/// `CtEntry::flags`: reply entry (backend to client); rewrite the source back to the VIP.
pub const CT_REPLY: u32 = 2;
/// `CtEntry::flags`: the flow is source-NATed (`snat_*` are used).
pub const CT_SNAT: u32 = 4;

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
