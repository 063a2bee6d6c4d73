//! Step 6: NAT, the rewrite of a packet by its conntrack entry: DNAT to the backend (and SNAT
//! to the node address:port of a masqueraded flow) for traffic to a frontend, and the reverse
//! for a backend's reply. Each hook fixes the checksums its own way (see `ctx.rs`); an SCTP
//! packet whose ports changed gets its CRC32c recomputed once, after all rewrites.
use lb_common::*;

use crate::{
    addr::addr_eq,
    ctx::Ctx,
    maps::count_event,
    packet::{Packet, Side},
    verdict::Verdict,
    sctp,
};

/// Traffic to a frontend: the destination becomes the flow's backend, and a masqueraded flow's
/// source becomes the node address and allocated port.
#[inline(always)]
pub fn forward<C: Ctx>(ctx: &C, pkt: &Packet, e: &CtEntry) -> Verdict {
    apply(ctx, pkt, e, pkt.dst(), pkt.src())
}

/// A reply from a backend of a NATed flow: the source becomes the VIP and Service port again,
/// and a masqueraded flow's destination becomes the original client again.
#[inline(always)]
pub fn reverse<C: Ctx>(ctx: &C, pkt: &Packet, e: &CtEntry) -> Verdict {
    apply(ctx, pkt, e, pkt.src(), pkt.dst())
}

/// Rewrites side `nat` of the packet to the entry's `nat_*`, and with `CT_SNAT` side `snat`
/// to its `snat_*`.
#[inline(always)]
fn apply<C: Ctx>(ctx: &C, pkt: &Packet, e: &CtEntry, nat: Side, snat: Side) -> Verdict {
    let mut r = rewrite(ctx, pkt, &nat, &e.nat_addr, e.nat_port);
    if r.is_ok() && e.flags & CT_SNAT != 0 {
        r = rewrite(ctx, pkt, &snat, &e.snat_addr, e.snat_port);
    }
    match r {
        Ok(()) => Verdict::Nat,
        Err(_) => {
            count_event(CNT_NAT_ERROR);
            Verdict::Drop
        }
    }
}

/// Rewrites one side of the packet (its address and port) unless it already holds them.
#[inline(always)]
fn rewrite<C: Ctx>(
    ctx: &C,
    pkt: &Packet,
    side: &Side,
    new_addr: &Addr,
    new_port: u16,
) -> Result<(), i64> {
    if !addr_eq(side.addr, new_addr) {
        ctx.set_addr(pkt, side.addr_off, side.addr, new_addr)?;
    }
    if side.port != new_port {
        ctx.set_port(pkt, side.port_off, side.port, new_port)?;
    }
    Ok(())
}

/// After the NAT of an SCTP packet whose ports changed: recomputes its CRC32c (address changes
/// do not affect it). `Nat`, or `Drop` when the CRC could not be recomputed.
#[inline(always)]
pub fn fix_sctp<C: Ctx>(ctx: &C, pkt: &Packet) -> Verdict {
    if pkt.proto == PROTO_SCTP && sctp_ports_changed(ctx, pkt) && sctp::fix_crc(ctx, pkt).is_err() {
        count_event(CNT_NAT_ERROR);
        return Verdict::Drop;
    }
    Verdict::Nat
}

#[inline(always)]
fn sctp_ports_changed<C: Ctx>(ctx: &C, pkt: &Packet) -> bool {
    let mut ports = [0u8; 4];
    if ctx.load(pkt.l4_off, &mut ports).is_err() {
        return true;
    }
    let (s, d) = (pkt.sport.to_be_bytes(), pkt.dport.to_be_bytes());
    ports != [s[0], s[1], d[0], d[1]]
}
