//! Step 1: parsing. Every header read is bounds-checked against the frame and, for L4, against
//! the datagram's own length (IPv4 total length, IPv6 payload length), so Ethernet padding is
//! never taken for packet data.
use lb_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::{
    addr::read_addr,
    packet::Packet,
    consts::*,
    ctx::{ptr_at, Ctx},
};

/// The EtherType of the frame.
#[inline(always)]
pub fn eth_proto<C: Ctx>(ctx: &C) -> Option<u16> {
    Some(u16::from_be(unsafe { *ptr_at::<C, u16>(ctx, 12)? }))
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
    let hdr = ptr_at::<C, [u8; IP_HLEN]>(ctx, ETH_HLEN)?;
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
    let l3 = Ip {
        hdr: hdr as usize,
        src_off: 12,
        dst_off: 16,
        proto: ip[9],
        l4_off: ETH_HLEN + ip_len,
        l4_len: tot_len - ip_len,
        v6: false,
    };
    parse_l4(ctx, pkt, &l3)
}

#[inline(always)]
fn parse6<C: Ctx>(ctx: &C, pkt: &mut Packet) -> Option<()> {
    let hdr = ptr_at::<C, [u8; IP6_HLEN]>(ctx, ETH_HLEN)?;
    let ip = unsafe { &*hdr };
    if ip[0] >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    // The next header must be the L4 header itself: extension headers (fragments among them)
    // are left to the stack.
    let l3 = Ip {
        hdr: hdr as usize,
        src_off: 8,
        dst_off: 24,
        proto: ip[6],
        l4_off: ETH_HLEN + IP6_HLEN,
        l4_len: payload_len,
        v6: true,
    };
    parse_l4(ctx, pkt, &l3)
}

/// What the IPv4 or IPv6 header says about the packet: where it is and where its addresses are
/// in it, and the L4 protocol, offset and length.
struct Ip {
    hdr: usize,
    src_off: usize,
    dst_off: usize,
    proto: u8,
    l4_off: usize,
    l4_len: usize,
    v6: bool,
}

/// Reads the ports (and TCP flags) of the L4 header `ip` announces and fills `pkt`.
#[inline(always)]
fn parse_l4<C: Ctx>(ctx: &C, pkt: &mut Packet, ip: &Ip) -> Option<()> {
    let (ports, tcp_flags) = ports(ctx, ip.proto, ip.l4_off, ip.l4_len)?;
    read_addr(&mut pkt.saddr, ip.hdr, ip.src_off, ip.v6);
    read_addr(&mut pkt.daddr, ip.hdr, ip.dst_off, ip.v6);
    pkt.sport = u16::from_be(ports[0]);
    pkt.dport = u16::from_be(ports[1]);
    pkt.proto = ip.proto;
    pkt.l4_off = ip.l4_off;
    pkt.l4_len = ip.l4_len;
    pkt.v6 = ip.v6;
    pkt.tcp_flags = tcp_flags;
    Some(())
}

/// The source and destination ports (network order), and the TCP flags (0 for UDP and SCTP).
/// The L4 header must be complete, up to and including the checksum we rewrite, both in the
/// frame and inside the datagram (`l4_len`).
#[inline(always)]
fn ports<C: Ctx>(ctx: &C, proto: u8, l4_off: usize, l4_len: usize) -> Option<([u16; 2], u8)> {
    let need = match proto {
        PROTO_TCP => TCP_HLEN,
        PROTO_UDP => UDP_HLEN,
        PROTO_SCTP => SCTP_HLEN,
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
