//! The parsed packet every step works on: its addresses, ports, protocol and family, where
//! its L4 header is, and the two sides of its flow as NAT rewrites them. [`crate::parse`]
//! fills it; nothing else writes it.
use lb_common::{Addr, CtKey, FAMILY_V4, FAMILY_V6, PROTO_SCTP, PROTO_TCP};

use crate::{
    addr::copy_addr,
    consts::{IP6_DST_OFF, IP6_SRC_OFF, IP_DST_OFF, IP_SRC_OFF},
};

/// What the parser extracts from an IPv4 or IPv6 TCP/UDP/SCTP packet. Ports are in host order;
/// an IPv4 address fills the first four bytes of its `Addr`. Aligned so addresses are copied
/// as words.
#[repr(C, align(8))]
pub struct Packet {
    pub saddr: Addr,
    pub daddr: Addr,
    /// Offset of the L4 header (after IPv4 options).
    pub l4_off: usize,
    /// Length of the L4 segment according to the IP header (no Ethernet padding).
    pub l4_len: usize,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub v6: bool,
    /// TCP flags (byte 13 of the TCP header); 0 for other protocols.
    pub tcp_flags: u8,
}

/// One end of a packet's flow, as NAT rewrites it: the address and port the packet holds, and
/// where they are (offsets in the frame).
pub struct Side<'a> {
    pub addr: &'a Addr,
    pub addr_off: usize,
    pub port: u16,
    pub port_off: usize,
}

impl Packet {
    /// Offset of the TCP/UDP checksum (SCTP's CRC32c is handled apart, see `sctp.rs`).
    pub fn csum_off(&self) -> usize {
        self.l4_off + if self.proto == PROTO_TCP { 16 } else { 6 }
    }

    /// Whether the L4 checksum is the Internet checksum over a pseudo-header (TCP, UDP), which
    /// address and port changes update incrementally. SCTP's CRC32c is recomputed instead.
    pub fn inet_csum(&self) -> bool {
        self.proto != PROTO_SCTP
    }

    pub fn family(&self) -> u8 {
        self.by_family(FAMILY_V4, FAMILY_V6)
    }

    /// The value for this packet's family: `v4` or `v6`.
    #[inline(always)]
    pub fn by_family<T>(&self, v4: T, v6: T) -> T {
        if self.v6 {
            v6
        } else {
            v4
        }
    }

    /// The source side: address and port, and their offsets.
    #[inline(always)]
    pub fn src(&self) -> Side<'_> {
        Side {
            addr: &self.saddr,
            addr_off: self.by_family(IP_SRC_OFF, IP6_SRC_OFF),
            port: self.sport,
            port_off: self.l4_off,
        }
    }

    /// The destination side.
    #[inline(always)]
    pub fn dst(&self) -> Side<'_> {
        Side {
            addr: &self.daddr,
            addr_off: self.by_family(IP_DST_OFF, IP6_DST_OFF),
            port: self.dport,
            port_off: self.l4_off + 2,
        }
    }

    pub fn ct_key(&self) -> CtKey {
        let mut k = CtKey {
            saddr: [0; 16],
            daddr: [0; 16],
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: self.family(),
            pad: [0; 2],
        };
        copy_addr(&mut k.saddr, &self.saddr);
        copy_addr(&mut k.daddr, &self.daddr);
        k
    }
}

impl Packet {
    pub const EMPTY: Packet = Packet {
        saddr: [0; 16],
        daddr: [0; 16],
        l4_off: 0,
        l4_len: 0,
        sport: 0,
        dport: 0,
        proto: 0,
        v6: false,
        tcp_flags: 0,
    };
}
