//! Rejecting a connection the way kube-proxy does (REJECT): a TCP RST, or an ICMP port
//! unreachable for UDP and SCTP, sent back out of the interface the packet came in on. The client sees
//! "connection refused" at once instead of a timeout.
//!
//! The reply is built whole in a stack buffer from fields read before the packet is resized,
//! then written in one go. IPv4 gets ICMP type 3 code 3, IPv6 ICMPv6 type 1 code 4. Packets
//! with IPv4 options are dropped instead (rare, and the client still gets no connection).
use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use lb_common::PROTO_TCP;

use crate::{
    consts::*,
    csum::{fold, sum},
    ctx::{ptr_at, slot, Ctx},
    maps::{scratch, SCRATCH_BUF},
    parse::Packet,
};

/// The replies: a TCP RST without options; an ICMP error quoting the IP header (IPv4 without
/// options) and the first 8 bytes of the L4 header.
const RST_LEN: usize = ETH_HLEN + IP_HLEN + TCP_HLEN;
const ICMP_LEN: usize = ETH_HLEN + IP_HLEN + ICMP_HLEN + IP_HLEN + 8;
const RST6_LEN: usize = ETH_HLEN + IP6_HLEN + TCP_HLEN;
const ICMP6_LEN: usize = ETH_HLEN + IP6_HLEN + ICMP_HLEN + IP6_HLEN + 8;

/// Which reply `build` left in the scratch buffer.
#[derive(Clone, Copy)]
enum Built {
    Rst,
    Icmp,
    Rst6,
    Icmp6,
}

/// The first `N` bytes of the scratch buffer.
#[inline(always)]
fn sub<const N: usize>(buf: &mut [u8; SCRATCH_BUF]) -> &mut [u8; N] {
    const { assert!(N <= SCRATCH_BUF) };
    unsafe { &mut *(buf.as_mut_ptr() as *mut [u8; N]) }
}

/// Builds the reject for `pkt` in `buf` (this CPU's scratch space: the replies do not fit on
/// the BPF stack beside everything else).
#[inline(always)]
fn build<C: Ctx>(ctx: &C, pkt: &Packet, buf: &mut [u8; SCRATCH_BUF]) -> Option<Built> {
    if pkt.v6 {
        build6(ctx, pkt, buf)
    } else {
        build4(ctx, pkt, buf)
    }
}

#[inline(always)]
fn build4<C: Ctx>(ctx: &C, pkt: &Packet, buf: &mut [u8; SCRATCH_BUF]) -> Option<Built> {
    if pkt.l4_off != ETH_HLEN + IP_HLEN {
        return None;
    }
    let eth = unsafe { *ptr_at::<C, [u8; ETH_HLEN]>(ctx, 0)? };
    let ip = unsafe { *ptr_at::<C, [u8; IP_HLEN]>(ctx, ETH_HLEN)? };
    if pkt.proto == PROTO_TCP {
        let tcp = unsafe { *ptr_at::<C, [u8; TCP_HLEN]>(ctx, ETH_HLEN + IP_HLEN)? };
        tcp_rst(sub(buf), &eth, &ip, &tcp).map(|_| Built::Rst)
    } else {
        // UDP and SCTP: ICMP port unreachable quoting the first 8 bytes of the L4 header.
        let l4 = unsafe { *ptr_at::<C, [u8; 8]>(ctx, ETH_HLEN + IP_HLEN)? };
        icmp_unreachable(sub(buf), &eth, &ip, &l4);
        Some(Built::Icmp)
    }
}

/// TC: rewrites the packet into its reject and sends it back out; returns the verdict.
#[inline(never)]
pub fn reject_tc(ctx: &TcContext, pkt: &Packet) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(s) = scratch() else {
        return TC_ACT_SHOT;
    };
    let done = match build(ctx, pkt, &mut s.buf) {
        Some(Built::Rst) => tc_write::<RST_LEN>(ctx, &mut s.buf),
        Some(Built::Icmp) => tc_write::<ICMP_LEN>(ctx, &mut s.buf),
        Some(Built::Rst6) => tc_write::<RST6_LEN>(ctx, &mut s.buf),
        Some(Built::Icmp6) => tc_write::<ICMP6_LEN>(ctx, &mut s.buf),
        None => None,
    };
    match done {
        Some(()) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        None => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn tc_write<const N: usize>(ctx: &TcContext, buf: &mut [u8; SCRATCH_BUF]) -> Option<()> {
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, N as u32, 0) } != 0 {
        return None;
    }
    ctx.store(0, sub::<N>(buf), 0).ok()
}

/// XDP: rewrites the packet into its reject and transmits it back; returns the verdict. When
/// the frame cannot be resized (a driver without tailroom), the packet goes on to the stack and
/// the TC program rejects it.
#[inline(never)]
pub fn reject_xdp(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let done = match build(ctx, pkt, &mut s.buf) {
        Some(Built::Rst) => xdp_write::<RST_LEN>(ctx, &mut s.buf),
        Some(Built::Icmp) => xdp_write::<ICMP_LEN>(ctx, &mut s.buf),
        Some(Built::Rst6) => xdp_write::<RST6_LEN>(ctx, &mut s.buf),
        Some(Built::Icmp6) => xdp_write::<ICMP6_LEN>(ctx, &mut s.buf),
        None => return xdp_action::XDP_DROP,
    };
    match done {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn xdp_write<const N: usize>(ctx: &XdpContext, buf: &mut [u8; SCRATCH_BUF]) -> Option<()> {
    let delta = N as i32 - (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), delta) } != 0 {
        return None;
    }
    *slot::<[u8; N]>(ctx, 0).ok()? = *sub::<N>(buf);
    Some(())
}

/// Ethernet header with the addresses swapped, and an IPv4 header (no options) from the
/// original's destination back to its source.
#[inline(always)]
fn headers(
    buf: &mut [u8],
    orig_eth: &[u8; ETH_HLEN],
    orig_ip: &[u8; IP_HLEN],
    proto: u8,
    tot_len: u16,
) {
    buf[0..6].copy_from_slice(&orig_eth[6..12]);
    buf[6..12].copy_from_slice(&orig_eth[0..6]);
    buf[12] = 0x08;
    buf[13] = 0x00;
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + IP_HLEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&tot_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&[0x40, 0]); // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&orig_ip[16..20]);
    ip[16..20].copy_from_slice(&orig_ip[12..16]);
    let c = fold(sum(ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

#[inline(always)]
fn tcp_rst(
    buf: &mut [u8; RST_LEN],
    eth: &[u8; ETH_HLEN],
    ip: &[u8; IP_HLEN],
    tcp: &[u8; TCP_HLEN],
) -> Option<()> {
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as u32;
    buf.fill(0);
    headers(buf, eth, ip, PROTO_TCP, (IP_HLEN + TCP_HLEN) as u16);
    rst_segment(
        &mut buf[ETH_HLEN + IP_HLEN..],
        tcp,
        tot_len.saturating_sub(IP_HLEN as u32),
    )?;
    let c = fold(sum(
        &buf[ETH_HLEN + IP_HLEN..],
        pseudo(buf, PROTO_TCP, TCP_HLEN as u16),
    ));
    buf[ETH_HLEN + IP_HLEN + 16..ETH_HLEN + IP_HLEN + 18].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Fills `t` with the RST answering the TCP segment `tcp` (`l4_len` bytes with its header),
/// without the checksum. `None` for a segment that is itself a reset.
#[inline(always)]
fn rst_segment(t: &mut [u8], tcp: &[u8; TCP_HLEN], l4_len: u32) -> Option<()> {
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return None; // never answer a reset
    }
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let seg_len =
        l4_len.saturating_sub(doff) + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
    t[0..2].copy_from_slice(&tcp[2..4]);
    t[2..4].copy_from_slice(&tcp[0..2]);
    if flags & TCP_ACK != 0 {
        // RFC 793: <SEQ=SEG.ACK><CTL=RST>
        t[4..8].copy_from_slice(&tcp[8..12]);
        t[13] = TCP_RST;
    } else {
        // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
        let ack = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]).wrapping_add(seg_len);
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[13] = TCP_RST | TCP_ACK;
    }
    t[12] = 5 << 4;
    Some(())
}

#[inline(always)]
fn icmp_unreachable(
    buf: &mut [u8; ICMP_LEN],
    eth: &[u8; ETH_HLEN],
    ip: &[u8; IP_HLEN],
    udp: &[u8; 8],
) {
    buf.fill(0);
    headers(buf, eth, ip, IPPROTO_ICMP, (ICMP_LEN - ETH_HLEN) as u16);
    let icmp = &mut buf[ETH_HLEN + IP_HLEN..];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp[8..28].copy_from_slice(ip);
    icmp[28..36].copy_from_slice(udp);
    let c = fold(sum(icmp, 0));
    buf[ETH_HLEN + 22..ETH_HLEN + 24].copy_from_slice(&c.to_be_bytes());
}

/// Pseudo-header sum for the L4 checksum of the reply in `buf`.
#[inline(always)]
fn pseudo(buf: &[u8], proto: u8, l4_len: u16) -> u32 {
    let ip = &buf[ETH_HLEN..ETH_HLEN + IP_HLEN];
    sum(&ip[12..20], proto as u32 + l4_len as u32)
}

#[inline(always)]
fn build6<C: Ctx>(ctx: &C, pkt: &Packet, buf: &mut [u8; SCRATCH_BUF]) -> Option<Built> {
    let eth = unsafe { *ptr_at::<C, [u8; ETH_HLEN]>(ctx, 0)? };
    let ip = unsafe { &*ptr_at::<C, [u8; IP6_HLEN]>(ctx, ETH_HLEN)? };
    if pkt.proto == PROTO_TCP {
        let tcp = unsafe { *ptr_at::<C, [u8; TCP_HLEN]>(ctx, pkt.l4_off)? };
        tcp_rst6(sub(buf), &eth, ip, &tcp, pkt.l4_len as u32).map(|_| Built::Rst6)
    } else {
        let l4 = unsafe { *ptr_at::<C, [u8; 8]>(ctx, pkt.l4_off)? };
        icmp6_unreachable(sub(buf), &eth, ip, &l4);
        Some(Built::Icmp6)
    }
}

/// Ethernet header with the addresses swapped, and an IPv6 header from the original's
/// destination back to its source.
#[inline(always)]
fn headers6(
    buf: &mut [u8],
    orig_eth: &[u8; ETH_HLEN],
    orig_ip: &[u8; IP6_HLEN],
    next: u8,
    payload_len: u16,
) {
    buf[0..6].copy_from_slice(&orig_eth[6..12]);
    buf[6..12].copy_from_slice(&orig_eth[0..6]);
    buf[12] = 0x86;
    buf[13] = 0xdd;
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + IP6_HLEN];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = next;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&orig_ip[24..40]);
    ip[24..40].copy_from_slice(&orig_ip[8..24]);
}

/// Pseudo-header sum (RFC 8200 section 8.1) for the L4 checksum of the IPv6 reply in `buf`.
#[inline(always)]
fn pseudo6(buf: &[u8], next: u8, l4_len: u16) -> u32 {
    sum(
        &buf[ETH_HLEN + 8..ETH_HLEN + IP6_HLEN],
        next as u32 + l4_len as u32,
    )
}

#[inline(always)]
fn tcp_rst6(
    buf: &mut [u8; RST6_LEN],
    eth: &[u8; ETH_HLEN],
    ip: &[u8; IP6_HLEN],
    tcp: &[u8; TCP_HLEN],
    l4_len: u32,
) -> Option<()> {
    buf.fill(0);
    headers6(buf, eth, ip, PROTO_TCP, TCP_HLEN as u16);
    rst_segment(&mut buf[ETH_HLEN + IP6_HLEN..], tcp, l4_len)?;
    let c = fold(sum(
        &buf[ETH_HLEN + IP6_HLEN..],
        pseudo6(buf, PROTO_TCP, TCP_HLEN as u16),
    ));
    buf[ETH_HLEN + IP6_HLEN + 16..ETH_HLEN + IP6_HLEN + 18].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// ICMPv6 destination unreachable, port unreachable (type 1, code 4), quoting the IPv6 header
/// and the first 8 bytes of the L4 header.
#[inline(always)]
fn icmp6_unreachable(
    buf: &mut [u8; ICMP6_LEN],
    eth: &[u8; ETH_HLEN],
    ip: &[u8; IP6_HLEN],
    l4: &[u8; 8],
) {
    const LEN: u16 = (ICMP6_LEN - ETH_HLEN - IP6_HLEN) as u16;
    buf.fill(0);
    headers6(buf, eth, ip, IPPROTO_ICMPV6, LEN);
    let icmp = &mut buf[ETH_HLEN + IP6_HLEN..];
    icmp[0] = 1; // destination unreachable
    icmp[1] = 4; // port unreachable
    icmp[8..8 + IP6_HLEN].copy_from_slice(ip);
    icmp[8 + IP6_HLEN..16 + IP6_HLEN].copy_from_slice(l4);
    let c = fold(sum(
        &buf[ETH_HLEN + IP6_HLEN..],
        pseudo6(buf, IPPROTO_ICMPV6, LEN),
    ));
    buf[ETH_HLEN + IP6_HLEN + 2..ETH_HLEN + IP6_HLEN + 4].copy_from_slice(&c.to_be_bytes());
}
