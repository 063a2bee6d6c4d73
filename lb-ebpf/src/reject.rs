//! Step 7: rejecting a connection the way kube-proxy does (REJECT): a TCP RST, or an ICMP port
//! unreachable for UDP and SCTP, sent back out of the interface the packet came in on. The
//! client sees "connection refused" at once instead of a timeout.
//!
//! The reply is built whole in this CPU's scratch buffer from fields read before the packet is
//! resized, then written in one go. IPv4 gets ICMP type 3 code 3, IPv6 ICMPv6 type 1 code 4.
//! Packets with IPv4 options are dropped instead (rare, and the client still gets no
//! connection).
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
    packet::Packet,
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

/// A hook's way to replace the packet with the first `N` bytes of the scratch buffer.
trait Replace {
    fn replace<const N: usize>(&self, buf: &mut [u8; SCRATCH_BUF]) -> Option<()>;
}

impl Replace for TcContext {
    #[inline(always)]
    fn replace<const N: usize>(&self, buf: &mut [u8; SCRATCH_BUF]) -> Option<()> {
        if unsafe { bpf_skb_change_tail(self.skb.skb, N as u32, 0) } != 0 {
            return None;
        }
        self.store(0, sub::<N>(buf), 0).ok()
    }
}

impl Replace for XdpContext {
    #[inline(always)]
    fn replace<const N: usize>(&self, buf: &mut [u8; SCRATCH_BUF]) -> Option<()> {
        let delta = N as i32 - (self.data_end() - self.data()) as i32;
        if unsafe { bpf_xdp_adjust_tail(self.as_ptr().cast(), delta) } != 0 {
            return None;
        }
        *slot::<[u8; N]>(self, 0).ok()? = *sub::<N>(buf);
        Some(())
    }
}

/// Replaces the packet with the reply `built` in `buf`; `None` when the packet could not be
/// resized.
#[inline(always)]
fn send<C: Replace>(ctx: &C, built: Built, buf: &mut [u8; SCRATCH_BUF]) -> Option<()> {
    match built {
        Built::Rst => ctx.replace::<RST_LEN>(buf),
        Built::Icmp => ctx.replace::<ICMP_LEN>(buf),
        Built::Rst6 => ctx.replace::<RST6_LEN>(buf),
        Built::Icmp6 => ctx.replace::<ICMP6_LEN>(buf),
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
        Some(built) => send(ctx, built, &mut s.buf),
        None => None,
    };
    match done {
        Some(()) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        None => TC_ACT_SHOT,
    }
}

/// XDP: rewrites the packet into its reject and transmits it back; returns the verdict. When
/// the frame cannot be resized (a driver without tailroom), the packet goes on to the stack and
/// the TC program rejects it.
#[inline(never)]
pub fn reject_xdp(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let Some(s) = scratch() else {
        return xdp_action::XDP_DROP;
    };
    let Some(built) = build(ctx, pkt, &mut s.buf) else {
        return xdp_action::XDP_DROP;
    };
    match send(ctx, built, &mut s.buf) {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_PASS,
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
        let buf = sub::<RST_LEN>(buf);
        let l4_len = (u16::from_be_bytes([ip[2], ip[3]]) as u32).saturating_sub(IP_HLEN as u32);
        buf.fill(0);
        headers(buf, &eth, &ip, PROTO_TCP, (IP_HLEN + TCP_HLEN) as u16);
        let pseudo = |b: &[u8]| pseudo(b, PROTO_TCP, TCP_HLEN as u16);
        rst(buf, ETH_HLEN + IP_HLEN, &tcp, l4_len, pseudo).map(|_| Built::Rst)
    } else {
        // UDP and SCTP: ICMP port unreachable quoting the first 8 bytes of the L4 header.
        let l4 = unsafe { *ptr_at::<C, [u8; 8]>(ctx, ETH_HLEN + IP_HLEN)? };
        let buf = sub::<ICMP_LEN>(buf);
        buf.fill(0);
        headers(buf, &eth, &ip, IPPROTO_ICMP, (ICMP_LEN - ETH_HLEN) as u16);
        // Destination unreachable, port unreachable; no pseudo-header.
        unreachable(buf, ETH_HLEN + IP_HLEN, [3, 3], &ip, &l4, |_| 0);
        Some(Built::Icmp)
    }
}

#[inline(always)]
fn build6<C: Ctx>(ctx: &C, pkt: &Packet, buf: &mut [u8; SCRATCH_BUF]) -> Option<Built> {
    let eth = unsafe { *ptr_at::<C, [u8; ETH_HLEN]>(ctx, 0)? };
    let ip = unsafe { &*ptr_at::<C, [u8; IP6_HLEN]>(ctx, ETH_HLEN)? };
    if pkt.proto == PROTO_TCP {
        let tcp = unsafe { *ptr_at::<C, [u8; TCP_HLEN]>(ctx, pkt.l4_off)? };
        let buf = sub::<RST6_LEN>(buf);
        buf.fill(0);
        headers6(buf, &eth, ip, PROTO_TCP, TCP_HLEN as u16);
        let pseudo = |b: &[u8]| pseudo6(b, PROTO_TCP, TCP_HLEN as u16);
        let l4_len = pkt.l4_len as u32;
        rst(buf, ETH_HLEN + IP6_HLEN, &tcp, l4_len, pseudo).map(|_| Built::Rst6)
    } else {
        const LEN: u16 = (ICMP6_LEN - ETH_HLEN - IP6_HLEN) as u16;
        let l4 = unsafe { *ptr_at::<C, [u8; 8]>(ctx, pkt.l4_off)? };
        let buf = sub::<ICMP6_LEN>(buf);
        buf.fill(0);
        headers6(buf, &eth, ip, IPPROTO_ICMPV6, LEN);
        let pseudo = |b: &[u8]| pseudo6(b, IPPROTO_ICMPV6, LEN);
        // Destination unreachable, port unreachable (type 1, code 4).
        unreachable(buf, ETH_HLEN + IP6_HLEN, [1, 4], ip, &l4, pseudo);
        Some(Built::Icmp6)
    }
}

/// The Ethernet header of a reply: the original's addresses swapped, and `ethertype`.
#[inline(always)]
fn eth_reply(buf: &mut [u8], orig_eth: &[u8; ETH_HLEN], ethertype: u16) {
    buf[0..6].copy_from_slice(&orig_eth[6..12]);
    buf[6..12].copy_from_slice(&orig_eth[0..6]);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Ethernet header with the addresses swapped, and an IPv4 header (no options) from the
/// original's destination back to its source.
#[inline(always)]
fn headers(buf: &mut [u8], eth: &[u8; ETH_HLEN], orig_ip: &[u8; IP_HLEN], proto: u8, len: u16) {
    eth_reply(buf, eth, ETH_P_IP);
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + IP_HLEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&len.to_be_bytes());
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

/// Pseudo-header sum for the L4 checksum of the reply in `buf`.
#[inline(always)]
fn pseudo(buf: &[u8], proto: u8, l4_len: u16) -> u32 {
    let ip = &buf[ETH_HLEN..ETH_HLEN + IP_HLEN];
    sum(&ip[12..20], proto as u32 + l4_len as u32)
}

/// Ethernet header with the addresses swapped, and an IPv6 header from the original's
/// destination back to its source.
#[inline(always)]
fn headers6(buf: &mut [u8], eth: &[u8; ETH_HLEN], orig_ip: &[u8; IP6_HLEN], next: u8, len: u16) {
    eth_reply(buf, eth, ETH_P_IPV6);
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + IP6_HLEN];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&len.to_be_bytes());
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

/// Fills the TCP header at `l4` of the reply in `buf` (which ends with it) with the RST
/// answering the segment `tcp` (`l4_len` bytes with its header), checksum included (`pseudo`:
/// the pseudo-header's sum). `None` for a segment that is itself a reset.
#[inline(always)]
fn rst<P: Fn(&[u8]) -> u32>(
    buf: &mut [u8],
    l4: usize,
    tcp: &[u8; TCP_HLEN],
    l4_len: u32,
    pseudo: P,
) -> Option<()> {
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return None; // never answer a reset
    }
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let seg_len =
        l4_len.saturating_sub(doff) + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
    let t = &mut buf[l4..];
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
    let c = fold(sum(&buf[l4..], pseudo(buf)));
    buf[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Fills the ICMP (or ICMPv6) header at `icmp` of the reply in `buf` (which ends with it):
/// `type_code`, then the quoted IP header `ip` and first 8 bytes `l4` of the L4 header, and
/// the checksum (`pseudo`: the pseudo-header's sum, 0 for ICMP).
#[inline(always)]
fn unreachable<const IPL: usize, P: Fn(&[u8]) -> u32>(
    buf: &mut [u8],
    at: usize,
    type_code: [u8; 2],
    ip: &[u8; IPL],
    l4: &[u8; 8],
    pseudo: P,
) {
    let icmp = &mut buf[at..];
    icmp[0..2].copy_from_slice(&type_code);
    icmp[8..8 + IPL].copy_from_slice(ip);
    icmp[8 + IPL..16 + IPL].copy_from_slice(l4);
    let c = fold(sum(&buf[at..], pseudo(buf)));
    buf[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
}
