//! Rejecting a connection the way kube-proxy does (REJECT): a TCP RST, or an ICMP port
//! unreachable for UDP and SCTP, sent back out of the interface the packet came in on. The client sees
//! "connection refused" at once instead of a timeout.
//!
//! The reply is built whole in a stack buffer from fields read before the packet is resized,
//! then written in one go. Packets with IPv4 options are dropped instead (rare, and the client
//! still gets no connection).
use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_tail, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use lb_common::PROTO_TCP;

use crate::{
    csum::{fold, sum},
    ctx::{slot, Ctx},
    parse::{ptr_at, Packet, ETH_HLEN},
};

const IPPROTO_ICMP: u8 = 1;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const RST_LEN: usize = ETH_HLEN + 20 + 20;
const ICMP_LEN: usize = ETH_HLEN + 20 + 8 + 20 + 8;

/// The reject for `pkt`, ready to be written over the packet.
enum Reply {
    Rst([u8; RST_LEN]),
    Icmp([u8; ICMP_LEN]),
}

#[inline(always)]
fn build<C: Ctx>(ctx: &C, pkt: &Packet) -> Option<Reply> {
    if pkt.l4_off != ETH_HLEN + 20 {
        return None;
    }
    let eth = unsafe { *ptr_at::<C, [u8; 14]>(ctx, 0)? };
    let ip = unsafe { *ptr_at::<C, [u8; 20]>(ctx, ETH_HLEN)? };
    if pkt.proto == PROTO_TCP {
        let tcp = unsafe { *ptr_at::<C, [u8; 20]>(ctx, ETH_HLEN + 20)? };
        tcp_rst(&eth, &ip, &tcp).map(Reply::Rst)
    } else {
        // UDP and SCTP: ICMP port unreachable quoting the first 8 bytes of the L4 header.
        let l4 = unsafe { *ptr_at::<C, [u8; 8]>(ctx, ETH_HLEN + 20)? };
        Some(Reply::Icmp(icmp_unreachable(&eth, &ip, &l4)))
    }
}

/// TC: rewrites the packet into its reject and sends it back out; returns the verdict.
#[inline(always)]
pub fn reject_tc(ctx: &TcContext, pkt: &Packet) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let done = match build(ctx, pkt) {
        Some(Reply::Rst(buf)) => tc_write(ctx, &buf),
        Some(Reply::Icmp(buf)) => tc_write(ctx, &buf),
        None => None,
    };
    match done {
        Some(()) => unsafe { bpf_redirect(ifindex, 0) as i32 },
        None => TC_ACT_SHOT,
    }
}

#[inline(always)]
fn tc_write<const N: usize>(ctx: &TcContext, buf: &[u8; N]) -> Option<()> {
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, N as u32, 0) } != 0 {
        return None;
    }
    ctx.store(0, buf, 0).ok()
}

/// XDP: rewrites the packet into its reject and transmits it back; returns the verdict. When
/// the frame cannot be resized (a driver without tailroom), the packet goes on to the stack and
/// the TC program rejects it.
#[inline(always)]
pub fn reject_xdp(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let done = match build(ctx, pkt) {
        Some(Reply::Rst(buf)) => xdp_write(ctx, &buf),
        Some(Reply::Icmp(buf)) => xdp_write(ctx, &buf),
        None => return xdp_action::XDP_DROP,
    };
    match done {
        Some(()) => xdp_action::XDP_TX,
        None => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn xdp_write<const N: usize>(ctx: &XdpContext, buf: &[u8; N]) -> Option<()> {
    let delta = N as i32 - (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.as_ptr().cast(), delta) } != 0 {
        return None;
    }
    *slot::<[u8; N]>(ctx, 0).ok()? = *buf;
    Some(())
}

/// Ethernet header with the addresses swapped, and an IPv4 header (no options) from the
/// original's destination back to its source.
#[inline(always)]
fn headers(buf: &mut [u8], orig_eth: &[u8; 14], orig_ip: &[u8; 20], proto: u8, tot_len: u16) {
    buf[0..6].copy_from_slice(&orig_eth[6..12]);
    buf[6..12].copy_from_slice(&orig_eth[0..6]);
    buf[12] = 0x08;
    buf[13] = 0x00;
    let ip = &mut buf[ETH_HLEN..ETH_HLEN + 20];
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
fn tcp_rst(eth: &[u8; 14], ip: &[u8; 20], tcp: &[u8; 20]) -> Option<[u8; RST_LEN]> {
    let flags = tcp[13];
    if flags & TCP_RST != 0 {
        return None; // never answer a reset
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as u32;
    let doff = ((tcp[12] >> 4) as u32) * 4;
    let seg_len = tot_len.saturating_sub(20 + doff)
        + (flags & TCP_SYN != 0) as u32
        + (flags & TCP_FIN != 0) as u32;
    let mut buf = [0u8; RST_LEN];
    headers(&mut buf, eth, ip, PROTO_TCP, 40);
    let t = &mut buf[ETH_HLEN + 20..];
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
    let c = fold(sum(&buf[ETH_HLEN + 20..], pseudo(&buf, PROTO_TCP, 20)));
    buf[ETH_HLEN + 20 + 16..ETH_HLEN + 20 + 18].copy_from_slice(&c.to_be_bytes());
    Some(buf)
}

#[inline(always)]
fn icmp_unreachable(eth: &[u8; 14], ip: &[u8; 20], udp: &[u8; 8]) -> [u8; ICMP_LEN] {
    let mut buf = [0u8; ICMP_LEN];
    headers(&mut buf, eth, ip, IPPROTO_ICMP, (ICMP_LEN - ETH_HLEN) as u16);
    let icmp = &mut buf[ETH_HLEN + 20..];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 3; // port unreachable
    icmp[8..28].copy_from_slice(ip);
    icmp[28..36].copy_from_slice(udp);
    let c = fold(sum(icmp, 0));
    buf[ETH_HLEN + 22..ETH_HLEN + 24].copy_from_slice(&c.to_be_bytes());
    buf
}

/// Pseudo-header sum for the L4 checksum of the reply in `buf`.
#[inline(always)]
fn pseudo(buf: &[u8], proto: u8, l4_len: u16) -> u32 {
    let ip = &buf[ETH_HLEN..ETH_HLEN + 20];
    sum(&ip[12..20], proto as u32 + l4_len as u32)
}
