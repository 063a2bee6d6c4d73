//! ICMP errors about NATed flows (destination unreachable — including "fragmentation needed",
//! which Path MTU discovery relies on — and time exceeded). Such an error quotes the packet as
//! it was after NAT (client -> backend, or node:port -> backend when masqueraded), which the
//! client would not recognise. It is translated back: the quoted packet becomes client -> VIP,
//! the error's source becomes the VIP when the backend sent it, and a masqueraded flow's error
//! is addressed to the client again. Checksums: outer IPv4, quoted IPv4, and ICMP (which covers
//! the quoted bytes). The quoted L4 checksum is left alone, as receivers do not check it.
//!
//! Errors about the other direction are translated too (on ingress hooks): a client, or a router
//! on its side, answers a reply it got from the VIP (VIP -> client) with, say, "fragmentation
//! needed" or a UDP port unreachable, addressed to the VIP. The quoted packet becomes what the
//! backend sent (backend -> client, or backend -> node:port when masqueraded) and the error is
//! addressed to the backend, as Linux conntrack does for kube-proxy (RELATED traffic).
//!
//! ICMPv6 errors (destination unreachable, packet too big, time exceeded) are translated the
//! same way; IPv6 has no header checksum, but the ICMPv6 checksum also covers the outer
//! addresses (a pseudo-header).
use lb_common::{
    addr4, Addr, CtEntry, CtKey, CT_FORWARD, CT_REPLY, CT_SNAT, FAMILY_V4, FAMILY_V6, PROTO_SCTP,
    PROTO_TCP, PROTO_UDP,
};

use crate::{
    addr::{addr_eq, copy_addr, read_addr, v4},
    consts::*,
    csum,
    ctx::{ptr_at, Ctx},
    maps::CONNTRACK,
    parse::eth_proto,
    pipeline::Verdict,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// The ICMP header, then the quoted IPv4 header (no options) and 8 bytes of its L4 header.
const ICMP_OFF: usize = ETH_HLEN + IP_HLEN;
const ICMP_CSUM_OFF: usize = ICMP_OFF + 2;
const IN_IP: usize = ICMP_OFF + ICMP_HLEN;
const IN_CSUM: usize = IN_IP + 10;
const IN_SRC: usize = IN_IP + 12;
const IN_DST: usize = IN_IP + 16;
const IN_L4: usize = IN_IP + IP_HLEN;

const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
/// The ICMPv6 header, then the quoted IPv6 header and 8 bytes of its L4 header.
const ICMP6_OFF: usize = ETH_HLEN + IP6_HLEN;
const ICMP6_CSUM_OFF: usize = ICMP6_OFF + 2;
const IN6_IP: usize = ICMP6_OFF + ICMP_HLEN;
const IN6_SRC: usize = IN6_IP + 8;
const IN6_DST: usize = IN6_IP + 24;
const IN6_L4: usize = IN6_IP + IP6_HLEN;

/// Which ICMP errors a hook translates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Errors {
    /// Errors about client -> backend packets only (TC egress: the error's route is already
    /// chosen, so one redirected to a backend could not reach it).
    ToClients,
    /// Also errors about replies, sent to the VIP (ingress hooks).
    Both,
}

/// Translates an ICMP error about a NATed flow; anything else is `Pass`.
#[inline(always)]
pub fn translate<C: Ctx>(ctx: &C, which: Errors) -> Verdict {
    let both = which == Errors::Both;
    match eth_proto(ctx) {
        Some(ETH_P_IP) => translate4(ctx, both),
        Some(ETH_P_IPV6) => translate6(ctx, both),
        _ => Verdict::Pass,
    }
}

/// A BPF-to-BPF call per family (a one-register result: calls cannot return larger values).
#[inline(never)]
fn translate4<C: Ctx>(ctx: &C, both: bool) -> Verdict {
    verdict(try_translate4(ctx, both))
}

#[inline(never)]
fn translate6<C: Ctx>(ctx: &C, both: bool) -> Verdict {
    verdict(try_translate6(ctx, both))
}

/// `None`: not an ICMP error about one of our flows.
#[inline(always)]
fn verdict(r: Option<Result<(), i64>>) -> Verdict {
    match r {
        Some(Ok(())) => Verdict::Nat,
        Some(Err(_)) => Verdict::Drop,
        None => Verdict::Pass,
    }
}

/// The conntrack entry of the quoted packet's reverse direction: a reply entry when the quoted
/// packet went client -> backend, a forward entry when it was a reply (VIP -> client).
#[inline(always)]
fn reverse_entry(
    in_src: Addr,
    in_dst: Addr,
    ports: [u8; 4],
    proto: u8,
    family: u8,
) -> Option<CtEntry> {
    let key = CtKey {
        saddr: in_dst,
        daddr: in_src,
        sport: u16::from_be_bytes([ports[2], ports[3]]),
        dport: u16::from_be_bytes([ports[0], ports[1]]),
        proto,
        family,
        pad: [0; 2],
    };
    Some(unsafe { *CONNTRACK.get_ptr(key)? })
}

#[inline(always)]
fn try_translate4<C: Ctx>(ctx: &C, both: bool) -> Option<Result<(), i64>> {
    let ip = unsafe { *ptr_at::<C, [u8; IP_HLEN]>(ctx, ETH_HLEN)? };
    // Outer and quoted headers without options; not a fragment.
    if ip[0] != 0x45 || ip[9] != IPPROTO_ICMP || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    // The quoted header and ports must lie inside the datagram, not in trailing padding.
    if (u16::from_be_bytes([ip[2], ip[3]]) as usize) < IN_L4 + 4 - ETH_HLEN {
        return None;
    }
    let icmp_type = unsafe { *ptr_at::<C, u8>(ctx, ICMP_OFF)? };
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner = unsafe { *ptr_at::<C, [u8; IP_HLEN]>(ctx, IN_IP)? };
    let ports = unsafe { *ptr_at::<C, [u8; 4]>(ctx, IN_L4)? };
    let proto = inner[9];
    if inner[0] != 0x45 || !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return None;
    }
    let (in_src, in_dst) = (
        [inner[12], inner[13], inner[14], inner[15]],
        [inner[16], inner[17], inner[18], inner[19]],
    );
    let (in_sport, in_dport) = ([ports[0], ports[1]], [ports[2], ports[3]]);
    let e = reverse_entry(addr4(in_src), addr4(in_dst), ports, proto, FAMILY_V4)?;
    if e.flags & CT_REPLY != 0 {
        // The quoted packet went client -> backend.
        Some(rewrite(ctx, &ip, &e, in_src, in_dst, in_sport, in_dport))
    } else if both && e.flags & CT_FORWARD != 0 {
        // The quoted packet is a reply as the client got it (VIP -> client).
        Some(rewrite_reply(
            ctx, &ip, &e, in_src, in_dst, in_sport, in_dport,
        ))
    } else {
        None
    }
}

/// An error about a reply, addressed to the VIP: the quoted packet becomes backend -> client
/// (-> node:port when masqueraded) again, and the error goes to the backend.
#[inline(always)]
fn rewrite_reply<C: Ctx>(
    ctx: &C,
    ip: &[u8; IP_HLEN],
    e: &CtEntry,
    in_src: [u8; 4],
    in_dst: [u8; 4],
    in_sport: [u8; 2],
    in_dport: [u8; 2],
) -> Result<(), i64> {
    quoted(ctx, IN_SRC, in_src, v4(&e.nat_addr))?;
    quoted(ctx, IN_L4, in_sport, e.nat_port.to_be_bytes())?;
    let outer_dst = [ip[16], ip[17], ip[18], ip[19]];
    if outer_dst == in_src {
        outer(ctx, IP_DST_OFF, outer_dst, v4(&e.nat_addr))?;
    }
    if e.flags & CT_SNAT != 0 {
        quoted(ctx, IN_DST, in_dst, v4(&e.snat_addr))?;
        quoted(ctx, IN_L4 + 2, in_dport, e.snat_port.to_be_bytes())?;
    }
    Ok(())
}

#[inline(always)]
fn rewrite<C: Ctx>(
    ctx: &C,
    ip: &[u8; IP_HLEN],
    e: &CtEntry,
    in_src: [u8; 4],
    in_dst: [u8; 4],
    in_sport: [u8; 2],
    in_dport: [u8; 2],
) -> Result<(), i64> {
    // Quoted destination: backend -> VIP and Service port.
    quoted(ctx, IN_DST, in_dst, v4(&e.nat_addr))?;
    quoted(ctx, IN_L4 + 2, in_dport, e.nat_port.to_be_bytes())?;
    let outer_src = [ip[12], ip[13], ip[14], ip[15]];
    if outer_src == in_dst {
        outer(ctx, IP_SRC_OFF, outer_src, v4(&e.nat_addr))?;
    }
    if e.flags & CT_SNAT != 0 {
        // Masqueraded: quoted source node:port -> client, and the error goes to the client.
        quoted(ctx, IN_SRC, in_src, v4(&e.snat_addr))?;
        quoted(ctx, IN_L4, in_sport, e.snat_port.to_be_bytes())?;
        outer(
            ctx,
            IP_DST_OFF,
            [ip[16], ip[17], ip[18], ip[19]],
            v4(&e.snat_addr),
        )?;
    }
    Ok(())
}

/// Rewrites an outer IPv4 address (the IPv4 checksum only: ICMP has no pseudo-header).
#[inline(always)]
fn outer<C: Ctx>(ctx: &C, off: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), i64> {
    ctx.fix_csum(IP_CSUM_OFF, old, new)?;
    ctx.write(off, new)
}

/// Rewrites a field of the quoted packet: the ICMP checksum covers it, and an address also
/// changes the quoted IPv4 checksum (itself covered by the ICMP checksum).
#[inline(always)]
fn quoted<C: Ctx, const N: usize>(
    ctx: &C,
    off: usize,
    old: [u8; N],
    new: [u8; N],
) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    if N == 4 {
        let c_old = unsafe { *ptr_at::<C, [u8; 2]>(ctx, IN_CSUM).ok_or(-1i64)? };
        let c_new = csum::replace(c_old, &old, &new);
        ctx.fix_csum(ICMP_CSUM_OFF, c_old, c_new)?;
        ctx.write(IN_CSUM, c_new)?;
    }
    ctx.fix_csum(ICMP_CSUM_OFF, old, new)?;
    ctx.write(off, new)
}

/// The addresses of an ICMPv6 error: outer, and of the quoted packet. Aligned, so they are
/// read, compared and written as words.
#[repr(C, align(8))]
struct Addrs6 {
    outer_src: Addr,
    outer_dst: Addr,
    in_src: Addr,
    in_dst: Addr,
}

#[inline(always)]
fn try_translate6<C: Ctx>(ctx: &C, both: bool) -> Option<Result<(), i64>> {
    let hdr = ptr_at::<C, [u8; IP6_HLEN]>(ctx, ETH_HLEN)?;
    let ip = unsafe { &*hdr };
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
        return None;
    }
    // The quoted header and ports must lie inside the datagram, not in trailing padding.
    if (u16::from_be_bytes([ip[4], ip[5]]) as usize) < IN6_L4 + 4 - ICMP6_OFF {
        return None;
    }
    let icmp_type = unsafe { *ptr_at::<C, u8>(ctx, ICMP6_OFF)? };
    if !matches!(
        icmp_type,
        ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED
    ) {
        return None;
    }
    let inner_hdr = ptr_at::<C, [u8; IP6_HLEN]>(ctx, IN6_IP)?;
    let inner = unsafe { &*inner_hdr };
    let ports = unsafe { *ptr_at::<C, [u8; 4]>(ctx, IN6_L4)? };
    let proto = inner[6];
    if inner[0] >> 4 != 6 || !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return None;
    }
    let mut a = Addrs6 {
        outer_src: [0; 16],
        outer_dst: [0; 16],
        in_src: [0; 16],
        in_dst: [0; 16],
    };
    read_addr(&mut a.outer_src, hdr as usize, 8, true);
    read_addr(&mut a.outer_dst, hdr as usize, 24, true);
    read_addr(&mut a.in_src, inner_hdr as usize, 8, true);
    read_addr(&mut a.in_dst, inner_hdr as usize, 24, true);
    // The quoted packet went client -> backend; its reply direction names the flow.
    let mut key = CtKey {
        saddr: [0; 16],
        daddr: [0; 16],
        sport: u16::from_be_bytes([ports[2], ports[3]]),
        dport: u16::from_be_bytes([ports[0], ports[1]]),
        proto,
        family: FAMILY_V6,
        pad: [0; 2],
    };
    copy_addr(&mut key.saddr, &a.in_dst);
    copy_addr(&mut key.daddr, &a.in_src);
    let e = unsafe { &*CONNTRACK.get_ptr(&key)? };
    if e.flags & CT_REPLY != 0 {
        Some(rewrite6(ctx, &a, e, ports))
    } else if both && e.flags & CT_FORWARD != 0 {
        Some(rewrite6_reply(ctx, &a, e, ports))
    } else {
        None
    }
}

/// `rewrite_reply` for ICMPv6.
#[inline(always)]
fn rewrite6_reply<C: Ctx>(ctx: &C, a: &Addrs6, e: &CtEntry, ports: [u8; 4]) -> Result<(), i64> {
    field6(ctx, IN6_SRC, &a.in_src, &e.nat_addr)?;
    port6(ctx, IN6_L4, [ports[0], ports[1]], e.nat_port.to_be_bytes())?;
    if addr_eq(&a.outer_dst, &a.in_src) {
        field6(ctx, IP6_DST_OFF, &a.outer_dst, &e.nat_addr)?;
    }
    if e.flags & CT_SNAT != 0 {
        field6(ctx, IN6_DST, &a.in_dst, &e.snat_addr)?;
        port6(
            ctx,
            IN6_L4 + 2,
            [ports[2], ports[3]],
            e.snat_port.to_be_bytes(),
        )?;
    }
    Ok(())
}

#[inline(always)]
fn rewrite6<C: Ctx>(ctx: &C, a: &Addrs6, e: &CtEntry, ports: [u8; 4]) -> Result<(), i64> {
    // Every change is covered by the ICMPv6 checksum (outer addresses via the pseudo-header).
    field6(ctx, IN6_DST, &a.in_dst, &e.nat_addr)?;
    port6(
        ctx,
        IN6_L4 + 2,
        [ports[2], ports[3]],
        e.nat_port.to_be_bytes(),
    )?;
    if addr_eq(&a.outer_src, &a.in_dst) {
        field6(ctx, IP6_SRC_OFF, &a.outer_src, &e.nat_addr)?;
    }
    if e.flags & CT_SNAT != 0 {
        field6(ctx, IN6_SRC, &a.in_src, &e.snat_addr)?;
        port6(ctx, IN6_L4, [ports[0], ports[1]], e.snat_port.to_be_bytes())?;
        field6(ctx, IP6_DST_OFF, &a.outer_dst, &e.snat_addr)?;
    }
    Ok(())
}

/// Rewrites an (aligned) IPv6 address in an ICMPv6 error, outer or quoted, a word at a time,
/// fixing the ICMPv6 checksum.
#[inline(always)]
fn field6<C: Ctx>(ctx: &C, off: usize, old: &Addr, new: &Addr) -> Result<(), i64> {
    let (o, n) = unsafe {
        (
            &*(old as *const Addr as *const [u32; 4]),
            &*(new as *const Addr as *const [u32; 4]),
        )
    };
    for i in 0..4 {
        if o[i] != n[i] {
            ctx.fix_csum(ICMP6_CSUM_OFF, o[i].to_ne_bytes(), n[i].to_ne_bytes())?;
            ctx.write(off + 4 * i, n[i].to_ne_bytes())?;
        }
    }
    Ok(())
}

/// Rewrites a quoted port in an ICMPv6 error, fixing the ICMPv6 checksum.
#[inline(always)]
fn port6<C: Ctx>(ctx: &C, off: usize, old: [u8; 2], new: [u8; 2]) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.fix_csum(ICMP6_CSUM_OFF, old, new)?;
    ctx.write(off, new)
}
