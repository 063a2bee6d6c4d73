//! Step 1: parsing. Every header read is bounds-checked against the frame and, for L4, against
//! the datagram's own length (IPv4 total length, IPv6 payload length), so Ethernet padding is
//! never taken for packet data.
use lb_common::{Addr, CtKey, FAMILY_V4, FAMILY_V6, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::ctx::Ctx;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub const IP_DST_OFF: usize = ETH_HLEN + 16;
pub const IP6_HLEN: usize = 40;
pub const IP6_SRC_OFF: usize = ETH_HLEN + 8;
pub const IP6_DST_OFF: usize = ETH_HLEN + 24;

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
        if self.v6 {
            FAMILY_V6
        } else {
            FAMILY_V4
        }
    }

    /// Offset of the source address in the IP header.
    pub fn src_off(&self) -> usize {
        if self.v6 {
            IP6_SRC_OFF
        } else {
            IP_SRC_OFF
        }
    }

    /// Offset of the destination address in the IP header.
    pub fn dst_off(&self) -> usize {
        if self.v6 {
            IP6_DST_OFF
        } else {
            IP_DST_OFF
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

/// Copies an address as four words. Both must be 4-byte aligned, as every `Addr` in a
/// `lb-common` struct (`align(4)`) and in `Packet` is; plain `[u8; 16]` copies go byte by byte
/// in BPF and spill every byte across helper calls.
#[inline(always)]
pub fn copy_addr(dst: &mut Addr, src: &Addr) {
    unsafe { *(dst as *mut Addr as *mut [u32; 4]) = *(src as *const Addr as *const [u32; 4]) }
}

/// Whether two addresses are equal, compared as four words (no `bcmp` call in BPF). Both must
/// be 4-byte aligned, as for `copy_addr`.
#[inline(always)]
pub fn addr_eq(a: &Addr, b: &Addr) -> bool {
    let (a, b) = unsafe {
        (
            &*(a as *const Addr as *const [u32; 4]),
            &*(b as *const Addr as *const [u32; 4]),
        )
    };
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Whether an (aligned) address is all zeros (unset).
#[inline(always)]
pub fn addr_is_zero(a: &Addr) -> bool {
    let a = unsafe { &*(a as *const Addr as *const [u32; 4]) };
    a[0] | a[1] | a[2] | a[3] == 0
}

/// Sets an (aligned) address: an IPv4 address (first word) or all zeros.
#[inline(always)]
pub fn set_addr4(dst: &mut Addr, v4: [u8; 4]) {
    unsafe { *(dst as *mut Addr as *mut [u32; 4]) = [u32::from_ne_bytes(v4), 0, 0, 0] }
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

/// The EtherType of the frame.
#[inline(always)]
pub fn eth_proto<C: Ctx>(ctx: &C) -> Option<u16> {
    Some(u16::from_be(unsafe { *ptr_at::<C, u16>(ctx, 12)? }))
}

/// Reads the 4-byte word at `off` of a header that has been bounds-checked. Packet data is
/// only 2-byte aligned; BPF (without strict alignment) and the JITs take such loads, and one
/// word load beats four byte loads whose results the compiler spills across helper calls.
#[inline(always)]
fn word_at(base: usize, off: usize) -> u32 {
    unsafe { *((base + off) as *const u32) }
}

/// Copies the address at `off` (4 or 16 bytes, bounds-checked by the caller) into `dst`.
#[inline(always)]
pub fn read_addr(dst: &mut Addr, base: usize, off: usize, v6: bool) {
    let w = unsafe { &mut *(dst as *mut Addr as *mut [u32; 4]) };
    w[0] = word_at(base, off);
    if v6 {
        w[1] = word_at(base, off + 4);
        w[2] = word_at(base, off + 8);
        w[3] = word_at(base, off + 12);
    } else {
        w[1] = 0;
        w[2] = 0;
        w[3] = 0;
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

/// Parses Ethernet + IPv4 (with options) or IPv6 + TCP/UDP/SCTP ports into `pkt`. `false`
/// means "not ours": another EtherType or protocol, truncated, malformed (IHL < 5, a length
/// shorter than the headers), a fragment, or an IPv6 packet with extension headers. Inlined:
/// as a BPF-to-BPF call the compiler would pass it the packet pointers as scalars, which the
/// verifier refuses.
#[inline(always)]
pub fn parse<C: Ctx>(ctx: &C, pkt: &mut Packet) -> bool {
    match eth_proto(ctx) {
        Some(ETH_P_IP) => parse4(ctx, pkt).is_some(),
        Some(ETH_P_IPV6) => parse6(ctx, pkt).is_some(),
        _ => false,
    }
}

#[inline(always)]
fn parse4<C: Ctx>(ctx: &C, pkt: &mut Packet) -> Option<()> {
    let hdr = ptr_at::<C, [u8; 20]>(ctx, ETH_HLEN)?;
    let ip = unsafe { &*hdr };
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
    let ip_len = ihl * 4;
    if tot_len < ip_len {
        return None;
    }
    let proto = ip[9];
    let l4_off = ETH_HLEN + ip_len;
    let (ports, tcp_flags) = ports(ctx, proto, l4_off, tot_len - ip_len)?;
    read_addr(&mut pkt.saddr, hdr as usize, 12, false);
    read_addr(&mut pkt.daddr, hdr as usize, 16, false);
    pkt.sport = u16::from_be(ports[0]);
    pkt.dport = u16::from_be(ports[1]);
    pkt.proto = proto;
    pkt.l4_off = l4_off;
    pkt.l4_len = tot_len - ip_len;
    pkt.v6 = false;
    pkt.tcp_flags = tcp_flags;
    Some(())
}

#[inline(always)]
fn parse6<C: Ctx>(ctx: &C, pkt: &mut Packet) -> Option<()> {
    let hdr = ptr_at::<C, [u8; 40]>(ctx, ETH_HLEN)?;
    let ip = unsafe { &*hdr };
    if ip[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    // The next header must be the L4 header itself: extension headers (fragments among them)
    // are left to the stack.
    let proto = ip[6];
    let l4_off = ETH_HLEN + IP6_HLEN;
    let (ports, tcp_flags) = ports(ctx, proto, l4_off, payload_len)?;
    read_addr(&mut pkt.saddr, hdr as usize, 8, true);
    read_addr(&mut pkt.daddr, hdr as usize, 24, true);
    pkt.sport = u16::from_be(ports[0]);
    pkt.dport = u16::from_be(ports[1]);
    pkt.proto = proto;
    pkt.l4_off = l4_off;
    pkt.l4_len = payload_len;
    pkt.v6 = true;
    pkt.tcp_flags = tcp_flags;
    Some(())
}

/// The source and destination ports (network order), and the TCP flags (0 for UDP and SCTP).
/// The L4 header must be complete, up to and including the checksum we rewrite, both in the
/// frame and inside the datagram (`l4_len`).
#[inline(always)]
fn ports<C: Ctx>(ctx: &C, proto: u8, l4_off: usize, l4_len: usize) -> Option<([u16; 2], u8)> {
    let need = match proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        PROTO_SCTP => 12,
        _ => return None,
    };
    if l4_len < need {
        return None;
    }
    let end = ctx.data() + l4_off + need;
    if end > ctx.data_end() {
        return None;
    }
    let p = unsafe { *((ctx.data() + l4_off) as *const [u16; 2]) };
    let flags = if proto == PROTO_TCP {
        unsafe { *((ctx.data() + l4_off + 13) as *const u8) }
    } else {
        0
    };
    Some((p, flags))
}
