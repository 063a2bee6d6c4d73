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
    addr::{addr_eq, copy_addr, read_addr, v4, words},
    consts::*,
    csum,
    ctx::{ptr_at, Ctx},
    maps::CONNTRACK,
    parse::eth_proto,
    verdict::Verdict,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;

/// Where the parts of an ICMP or ICMPv6 error are in the frame: the outer addresses, the ICMP
/// header (after an outer IP header without options) and its checksum, then the quoted IP
/// header (the same length), its addresses, and 8 bytes of its L4 header.
struct Layout {
    src: usize,
    dst: usize,
    icmp: usize,
    csum: usize,
    in_ip: usize,
    in_src: usize,
    in_dst: usize,
    in_l4: usize,
}

/// The layout for an IP header of `ip_hlen` bytes with its addresses at `src` and `dst` in the
/// frame.
const fn layout(ip_hlen: usize, src: usize, dst: usize) -> Layout {
    let icmp = ETH_HLEN + ip_hlen;
    let in_ip = icmp + ICMP_HLEN;
    Layout {
        src,
        dst,
        icmp,
        csum: icmp + 2,
        in_ip,
        in_src: in_ip + src - ETH_HLEN,
        in_dst: in_ip + dst - ETH_HLEN,
        in_l4: in_ip + ip_hlen,
    }
}

const V4: Layout = layout(IP_HLEN, IP_SRC_OFF, IP_DST_OFF);
const V6: Layout = layout(IP6_HLEN, IP6_SRC_OFF, IP6_DST_OFF);
/// The quoted IPv4 header's checksum.
const IN_CSUM: usize = V4.in_ip + 10;

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

/// The addresses of an ICMP error (`[u8; 4]` for IPv4, `Addr` for IPv6), outer and of the
/// quoted packet, and the quoted ports (network order). Aligned, so IPv6 addresses are read,
/// compared and written as words.
#[repr(C, align(8))]
struct Quote<A> {
    outer_src: A,
    outer_dst: A,
    in_src: A,
    in_dst: A,
    ports: [u8; 4],
}

/// One end of the quoted packet, or one outer address.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Src,
    Dst,
}

impl<A: Family> Quote<A> {
    /// Where the quoted address at `end` is, and its value.
    #[inline(always)]
    fn quoted(&self, end: End) -> (usize, &A) {
        match end {
            End::Src => (A::AT.in_src, &self.in_src),
            End::Dst => (A::AT.in_dst, &self.in_dst),
        }
    }

    /// Where the outer address at `end` is, and its value.
    #[inline(always)]
    fn outer(&self, end: End) -> (usize, &A) {
        match end {
            End::Src => (A::AT.src, &self.outer_src),
            End::Dst => (A::AT.dst, &self.outer_dst),
        }
    }

    /// Rewrites the quoted address and port at `end`.
    #[inline(always)]
    fn rewrite_quoted<C: Ctx>(&self, ctx: &C, end: End, addr: &Addr, port: u16) -> Result<(), i64> {
        let (off, old) = self.quoted(end);
        A::rewrite_quoted(ctx, off, old, addr)?;
        let p = self.ports;
        let (off, old) = match end {
            End::Src => (A::AT.in_l4, [p[0], p[1]]),
            End::Dst => (A::AT.in_l4 + 2, [p[2], p[3]]),
        };
        covered(ctx, A::AT.csum, off, old, port.to_be_bytes())
    }

    /// Rewrites the outer address at `end`.
    #[inline(always)]
    fn rewrite_outer<C: Ctx>(&self, ctx: &C, end: End, addr: &Addr) -> Result<(), i64> {
        let (off, old) = self.outer(end);
        A::rewrite_outer(ctx, off, old, addr)
    }
}

/// What differs between an ICMP and an ICMPv6 error: the layout, and the checksums an address
/// change touches.
trait Family: Sized {
    const AT: Layout;
    fn same(a: &Self, b: &Self) -> bool;
    fn rewrite_quoted<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64>;
    fn rewrite_outer<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64>;
}

impl Family for [u8; 4] {
    const AT: Layout = V4;
    #[inline(always)]
    fn same(a: &Self, b: &Self) -> bool {
        a == b
    }
    /// A quoted IPv4 address also changes the quoted IPv4 checksum (itself covered by the ICMP
    /// checksum).
    #[inline(always)]
    fn rewrite_quoted<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64> {
        let (old, new) = (*old, v4(new));
        if old == new {
            return Ok(());
        }
        let c_old = unsafe { *ptr_at::<C, [u8; 2]>(ctx, IN_CSUM).ok_or(-1i64)? };
        let c_new = csum::replace(c_old, &old, &new);
        covered(ctx, V4.csum, IN_CSUM, c_old, c_new)?;
        covered(ctx, V4.csum, off, old, new)
    }
    /// The IPv4 checksum only: ICMP has no pseudo-header.
    #[inline(always)]
    fn rewrite_outer<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64> {
        let new = v4(new);
        ctx.fix_csum(IP_CSUM_OFF, *old, new)?;
        ctx.write(off, new)
    }
}

impl Family for Addr {
    const AT: Layout = V6;
    #[inline(always)]
    fn same(a: &Self, b: &Self) -> bool {
        addr_eq(a, b)
    }
    #[inline(always)]
    fn rewrite_quoted<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64> {
        addr6(ctx, off, old, new)
    }
    /// The ICMPv6 checksum covers the outer addresses too (a pseudo-header).
    #[inline(always)]
    fn rewrite_outer<C: Ctx>(ctx: &C, off: usize, old: &Self, new: &Addr) -> Result<(), i64> {
        addr6(ctx, off, old, new)
    }
}

/// Rewrites a field the ICMP (or ICMPv6) checksum at `csum_off` covers, fixing that checksum.
#[inline(always)]
fn covered<C: Ctx, const N: usize>(
    ctx: &C,
    csum_off: usize,
    off: usize,
    old: [u8; N],
    new: [u8; N],
) -> Result<(), i64> {
    if old == new {
        return Ok(());
    }
    ctx.fix_csum(csum_off, old, new)?;
    ctx.write(off, new)
}

/// Rewrites an (aligned) IPv6 address in an ICMPv6 error, outer or quoted, a word at a time,
/// fixing the ICMPv6 checksum.
#[inline(always)]
fn addr6<C: Ctx>(ctx: &C, off: usize, old: &Addr, new: &Addr) -> Result<(), i64> {
    let (o, n) = (words(old), words(new));
    for i in 0..4 {
        covered(
            ctx,
            V6.csum,
            off + 4 * i,
            o[i].to_ne_bytes(),
            n[i].to_ne_bytes(),
        )?;
    }
    Ok(())
}

/// Which way the packet quoted in an error went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quoted {
    /// client -> backend (or node:port -> backend when masqueraded), as NAT made it. It becomes
    /// client -> VIP again, and the error goes to the client.
    Request,
    /// VIP -> client (-> node:port), a reply as reverse NAT made it. It becomes backend ->
    /// client (-> node:port) again, and the error, sent to the VIP, goes to the backend.
    Reply,
}

/// Translates the error about a flow whose conntrack entry `e` is the quoted packet's reverse
/// direction: a reply entry when the quoted packet went client -> backend, a forward entry
/// when it is a reply as the client got it (VIP -> client; only with `both`). `None` for
/// anything else.
#[inline(always)]
fn translate_flow<C: Ctx, A: Family>(
    ctx: &C,
    q: &Quote<A>,
    e: &CtEntry,
    both: bool,
) -> Option<Result<(), i64>> {
    if e.flags & CT_REPLY != 0 {
        Some(rewrite(ctx, q, e, Quoted::Request))
    } else if both && e.flags & CT_FORWARD != 0 {
        Some(rewrite(ctx, q, e, Quoted::Reply))
    } else {
        None
    }
}

/// The translation itself. The end of the quoted packet that NAT rewrote becomes the entry's
/// `nat_*` again, and so does the outer address naming it: a request's error came from the
/// backend (outer source), a reply's went to the VIP (outer destination). With `CT_SNAT` the
/// other end becomes the entry's `snat_*` again, and an error about a request is addressed to
/// the client.
#[inline(always)]
fn rewrite<C: Ctx, A: Family>(ctx: &C, q: &Quote<A>, e: &CtEntry, dir: Quoted) -> Result<(), i64> {
    let (nat, other) = match dir {
        Quoted::Request => (End::Dst, End::Src),
        Quoted::Reply => (End::Src, End::Dst),
    };
    q.rewrite_quoted(ctx, nat, &e.nat_addr, e.nat_port)?;
    if A::same(q.outer(other).1, q.quoted(nat).1) {
        q.rewrite_outer(ctx, other, &e.nat_addr)?;
    }
    if e.flags & CT_SNAT != 0 {
        q.rewrite_quoted(ctx, other, &e.snat_addr, e.snat_port)?;
        if dir == Quoted::Request {
            q.rewrite_outer(ctx, End::Dst, &e.snat_addr)?;
        }
    }
    Ok(())
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
    if (u16::from_be_bytes([ip[2], ip[3]]) as usize) < V4.in_l4 + 4 - ETH_HLEN {
        return None;
    }
    let icmp_type = unsafe { *ptr_at::<C, u8>(ctx, V4.icmp)? };
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner = unsafe { *ptr_at::<C, [u8; IP_HLEN]>(ctx, V4.in_ip)? };
    let ports = unsafe { *ptr_at::<C, [u8; 4]>(ctx, V4.in_l4)? };
    let proto = inner[9];
    if inner[0] != 0x45 || !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return None;
    }
    let q = Quote {
        outer_src: [ip[12], ip[13], ip[14], ip[15]],
        outer_dst: [ip[16], ip[17], ip[18], ip[19]],
        in_src: [inner[12], inner[13], inner[14], inner[15]],
        in_dst: [inner[16], inner[17], inner[18], inner[19]],
        ports,
    };
    let e = reverse_entry(addr4(q.in_src), addr4(q.in_dst), ports, proto, FAMILY_V4)?;
    translate_flow(ctx, &q, &e, both)
}

#[inline(always)]
fn try_translate6<C: Ctx>(ctx: &C, both: bool) -> Option<Result<(), i64>> {
    let hdr = ptr_at::<C, [u8; IP6_HLEN]>(ctx, ETH_HLEN)?;
    let ip = unsafe { &*hdr };
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 {
        return None;
    }
    // The quoted header and ports must lie inside the datagram, not in trailing padding.
    if (u16::from_be_bytes([ip[4], ip[5]]) as usize) < V6.in_l4 + 4 - V6.icmp {
        return None;
    }
    let icmp_type = unsafe { *ptr_at::<C, u8>(ctx, V6.icmp)? };
    if !matches!(
        icmp_type,
        ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED
    ) {
        return None;
    }
    let inner_hdr = ptr_at::<C, [u8; IP6_HLEN]>(ctx, V6.in_ip)?;
    let inner = unsafe { &*inner_hdr };
    let ports = unsafe { *ptr_at::<C, [u8; 4]>(ctx, V6.in_l4)? };
    let proto = inner[6];
    if inner[0] >> 4 != 6 || !matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP) {
        return None;
    }
    let mut q: Quote<Addr> = Quote {
        outer_src: [0; 16],
        outer_dst: [0; 16],
        in_src: [0; 16],
        in_dst: [0; 16],
        ports,
    };
    read_addr(&mut q.outer_src, hdr as usize, 8, true);
    read_addr(&mut q.outer_dst, hdr as usize, 24, true);
    read_addr(&mut q.in_src, inner_hdr as usize, 8, true);
    read_addr(&mut q.in_dst, inner_hdr as usize, 24, true);
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
    copy_addr(&mut key.saddr, &q.in_dst);
    copy_addr(&mut key.daddr, &q.in_src);
    let e = unsafe { &*CONNTRACK.get_ptr(&key)? };
    translate_flow(ctx, &q, e, both)
}
