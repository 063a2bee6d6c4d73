//! ICMP errors about NATed flows (destination unreachable — including "fragmentation needed",
//! which Path MTU discovery relies on — and time exceeded). Such an error quotes the packet as
//! it was after NAT (client -> backend, or node:port -> backend when masqueraded), which the
//! client would not recognise. It is translated back: the quoted packet becomes client -> VIP,
//! the error's source becomes the VIP when the backend sent it, and a masqueraded flow's error
//! is addressed to the client again. Checksums: outer IPv4, quoted IPv4, and ICMP (which covers
//! the quoted bytes). The quoted L4 checksum is left alone, as receivers do not check it.
use lb_common::{Ct4Entry, Ct4Key, CT_REPLY, CT_SNAT, PROTO_SCTP, PROTO_TCP, PROTO_UDP};

use crate::{
    csum,
    ctx::Ctx,
    lb::Verdict,
    maps::CONNTRACK,
    parse::{ptr_at, ETH_HLEN, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF},
};

const IPPROTO_ICMP: u8 = 1;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
/// The ICMP header, then the quoted IPv4 header (no options) and 8 bytes of its L4 header.
const ICMP_OFF: usize = ETH_HLEN + 20;
const ICMP_CSUM_OFF: usize = ICMP_OFF + 2;
const IN_IP: usize = ICMP_OFF + 8;
const IN_CSUM: usize = IN_IP + 10;
const IN_SRC: usize = IN_IP + 12;
const IN_DST: usize = IN_IP + 16;
const IN_L4: usize = IN_IP + 20;

/// Translates an ICMP error about a NATed flow; anything else is `Pass`.
#[inline(always)]
pub fn translate<C: Ctx>(ctx: &C) -> Verdict {
    match try_translate(ctx) {
        Some(Ok(())) => Verdict::Nat,
        Some(Err(_)) => Verdict::Drop,
        None => Verdict::Pass,
    }
}

/// `None`: not an ICMP error about one of our flows.
#[inline(always)]
fn try_translate<C: Ctx>(ctx: &C) -> Option<Result<(), i64>> {
    if u16::from_be(unsafe { *ptr_at::<C, u16>(ctx, 12)? }) != 0x0800 {
        return None;
    }
    let ip = unsafe { *ptr_at::<C, [u8; 20]>(ctx, ETH_HLEN)? };
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
    let inner = unsafe { *ptr_at::<C, [u8; 20]>(ctx, IN_IP)? };
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
    // The quoted packet went client -> backend; its reply direction names the flow.
    let key = Ct4Key {
        saddr: in_dst,
        daddr: in_src,
        sport: u16::from_be_bytes(in_dport),
        dport: u16::from_be_bytes(in_sport),
        proto,
        pad: [0; 3],
    };
    let e: Ct4Entry = unsafe { *CONNTRACK.get_ptr(key)? };
    if e.flags & CT_REPLY == 0 {
        return None;
    }
    Some(rewrite(ctx, &ip, &e, in_src, in_dst, in_sport, in_dport))
}

#[inline(always)]
fn rewrite<C: Ctx>(
    ctx: &C,
    ip: &[u8; 20],
    e: &Ct4Entry,
    in_src: [u8; 4],
    in_dst: [u8; 4],
    in_sport: [u8; 2],
    in_dport: [u8; 2],
) -> Result<(), i64> {
    // Quoted destination: backend -> VIP and Service port.
    quoted(ctx, IN_DST, in_dst, e.nat_addr)?;
    quoted(ctx, IN_L4 + 2, in_dport, e.nat_port.to_be_bytes())?;
    let outer_src = [ip[12], ip[13], ip[14], ip[15]];
    if outer_src == in_dst {
        outer(ctx, IP_SRC_OFF, outer_src, e.nat_addr)?;
    }
    if e.flags & CT_SNAT != 0 {
        // Masqueraded: quoted source node:port -> client, and the error goes to the client.
        quoted(ctx, IN_SRC, in_src, e.snat_addr)?;
        quoted(ctx, IN_L4, in_sport, e.snat_port.to_be_bytes())?;
        outer(ctx, IP_DST_OFF, [ip[16], ip[17], ip[18], ip[19]], e.snat_addr)?;
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
fn quoted<C: Ctx, const N: usize>(ctx: &C, off: usize, old: [u8; N], new: [u8; N]) -> Result<(), i64> {
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
