//! Step 1: parsing. Every header read is bounds-checked against the frame and, for L4, against
//! the IPv4 total length.
use lb_common::{Ct4Key, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::ctx::Ctx;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub const IP_DST_OFF: usize = ETH_HLEN + 16;

/// What the parser extracts from an IPv4 TCP/UDP/SCTP packet. Ports are in host order.
pub struct Packet {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Offset of the L4 header (after IPv4 options).
    pub l4_off: usize,
    /// Length of the L4 segment according to the IPv4 total length (no Ethernet padding).
    pub l4_len: usize,
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

    pub fn ct_key(&self) -> Ct4Key {
        Ct4Key {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

/// Returns a pointer to a `T` at `off` if the whole `T` lies inside the packet.
#[inline(always)]
pub fn ptr_at<C: Ctx, T>(ctx: &C, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// Parses Ethernet + IPv4 (with options) + TCP/UDP/SCTP ports. `None` means "not ours": not IPv4,
/// truncated, malformed (IHL < 5, total length shorter than the headers), a fragment, or
/// another protocol.
#[inline(always)]
pub fn parse<C: Ctx>(ctx: &C) -> Option<Packet> {
    let eth_proto: u16 = u16::from_be(unsafe { *ptr_at::<C, u16>(ctx, 12)? });
    if eth_proto != ETH_P_IP {
        return None;
    }
    let ip: [u8; 20] = unsafe { *ptr_at::<C, [u8; 20]>(ctx, ETH_HLEN)? };
    let version = ip[0] >> 4;
    let ihl = (ip[0] & 0x0f) as usize;
    if version != 4 || ihl < 5 {
        return None;
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    // More-fragments flag or a fragment offset: ports are not (all) there.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = ip[9];
    let l4_off = ETH_HLEN + ihl * 4;
    // The L4 header must be complete, up to and including the checksum we rewrite, both in the
    // frame and inside the datagram (a short datagram in a padded frame is truncated too).
    let ports: [u8; 4] = match proto {
        PROTO_TCP if tot_len >= ihl * 4 + 20 => {
            let tcp = unsafe { *ptr_at::<C, [u8; 20]>(ctx, l4_off)? };
            [tcp[0], tcp[1], tcp[2], tcp[3]]
        }
        PROTO_UDP if tot_len >= ihl * 4 + 8 => {
            let udp = unsafe { *ptr_at::<C, [u8; 8]>(ctx, l4_off)? };
            [udp[0], udp[1], udp[2], udp[3]]
        }
        PROTO_SCTP if tot_len >= ihl * 4 + 12 => {
            let sctp = unsafe { *ptr_at::<C, [u8; 12]>(ctx, l4_off)? };
            [sctp[0], sctp[1], sctp[2], sctp[3]]
        }
        _ => return None,
    };
    Some(Packet {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        proto,
        l4_off,
        l4_len: tot_len - ihl * 4,
    })
}
