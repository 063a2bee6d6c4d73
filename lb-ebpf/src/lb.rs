//! Steps 2-5: frontend lookup, conntrack, backend selection with SNAT port allocation, and the
//! NAT rewrite, shared by every hook through `Ctx`.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::*;

use crate::{
    ctx::Ctx,
    maps::*,
    parse::{Packet, IP_DST_OFF, IP_SRC_OFF},
    sctp,
};

/// Handles one parsed packet; an SCTP packet whose ports changed gets its CRC32c recomputed
/// here, once, after all rewrites (address changes do not affect it).
#[inline(always)]
pub fn process<C: Ctx>(ctx: &C, pkt: &Packet) -> Verdict {
    let v = lookup_and_nat(ctx, pkt);
    if matches!(v, Verdict::Nat) && pkt.proto == PROTO_SCTP && sctp_ports_changed(ctx, pkt) {
        if sctp::fix_crc(ctx, pkt).is_err() {
            count_event(CNT_NAT_ERROR);
            return Verdict::Drop;
        }
    }
    v
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

/// What the hook should do with the packet.
pub enum Verdict {
    /// Not service traffic: continue untouched.
    Pass,
    /// NATed: continue (XDP may forward it itself).
    Nat,
    Drop,
    /// Answer the client: TCP RST or ICMP port unreachable.
    Reject,
}

const BPF_NOEXIST: u64 = 1;
/// Attempts at a free SNAT source port before giving up on the flow.
const SNAT_TRIES: u32 = 16;

/// Steps 2-4: frontend, conntrack or reply, and the rewrite.
#[inline(always)]
fn lookup_and_nat<C: Ctx>(ctx: &C, pkt: &Packet) -> Verdict {
    let key = Frontend4Key {
        addr: pkt.daddr,
        port: pkt.dport,
        proto: pkt.proto,
        pad: 0,
    };
    if let Some(fe) = FRONTENDS.get_ptr(key) {
        // Copy the entry at once: the agent may update it concurrently.
        return service_path(ctx, pkt, unsafe { *fe });
    }
    if let Some(e) = CONNTRACK.get_ptr(pkt.ct_key()) {
        let e = unsafe { *e };
        if e.flags & CT_REPLY != 0 {
            return reply_path(ctx, pkt, &e);
        }
    }
    // A ClusterIP on a port it does not expose.
    if VIPS.get_ptr(pkt.daddr).is_some() {
        count_event(CNT_REJECT_NO_PORT);
        return Verdict::Reject;
    }
    Verdict::Pass
}

/// Traffic to a frontend: reuse the flow's backend if it still exists, else pick one.
#[inline(always)]
fn service_path<C: Ctx>(ctx: &C, pkt: &Packet, fe: Frontend) -> Verdict {
    count_service(fe.svc_id, ctx.len());
    let key = pkt.ct_key();
    let e = match CONNTRACK.get_ptr(key) {
        Some(e) if backend_alive(unsafe { &*e }) => unsafe { *e },
        _ => match new_flow(pkt, &fe, &key) {
            Ok(e) => e,
            Err(v) => return v,
        },
    };
    let mut r = rewrite(ctx, pkt, IP_DST_OFF, 2, pkt.daddr, pkt.dport, e.nat_addr, e.nat_port);
    if r.is_ok() && e.flags & CT_SNAT != 0 {
        r = rewrite(ctx, pkt, IP_SRC_OFF, 0, pkt.saddr, pkt.sport, e.snat_addr, e.snat_port);
    }
    finish(r)
}

/// A flow stays on its backend while the backend id still names the same address and port.
#[inline(always)]
fn backend_alive(e: &Ct4Entry) -> bool {
    match BACKENDS.get(e.backend_id) {
        Some(b) => e.flags & CT_FORWARD != 0 && b.addr == e.nat_addr && b.port == e.nat_port,
        None => false,
    }
}

/// Picks a backend uniformly at random and records both directions of the flow. Masquerades
/// when the frontend asks for it, or when the backend is the client itself (hairpin).
#[inline(always)]
fn new_flow(pkt: &Packet, fe: &Frontend, key: &Ct4Key) -> Result<Ct4Entry, Verdict> {
    let Some((backend_id, b)) = pick_backend(fe) else {
        return Err(if fe.flags & FE_DROP_EMPTY != 0 {
            count_event(CNT_DROP_NO_BACKEND);
            Verdict::Drop
        } else {
            count_event(CNT_REJECT_NO_BACKEND);
            Verdict::Reject
        });
    };
    let hairpin = b.addr == pkt.saddr;
    let mut fwd = Ct4Entry {
        nat_addr: b.addr,
        nat_port: b.port,
        snat_port: 0,
        snat_addr: [0; 4],
        flags: CT_FORWARD,
        svc_id: fe.svc_id,
        backend_id,
    };
    let mut reply = Ct4Entry {
        nat_addr: pkt.daddr,
        nat_port: pkt.dport,
        flags: CT_REPLY,
        ..fwd
    };
    let mut reply_key = Ct4Key {
        saddr: b.addr,
        daddr: pkt.saddr,
        sport: b.port,
        dport: pkt.sport,
        proto: pkt.proto,
        pad: [0; 3],
    };
    // The config is read only for flows that masquerade.
    let cfg = if fe.flags & FE_SNAT != 0 || hairpin {
        CONFIG.get(0).copied().unwrap_or_default()
    } else {
        Config::default()
    };
    if cfg.snat_addr != [0; 4] {
        fwd.flags |= CT_SNAT;
        fwd.snat_addr = cfg.snat_addr;
        reply.flags |= CT_SNAT;
        reply.snat_addr = pkt.saddr;
        reply.snat_port = pkt.sport;
        reply_key.daddr = cfg.snat_addr;
        fwd.snat_port = snat_port(&cfg, &mut reply_key, &reply).ok_or_else(|| {
            count_event(CNT_SNAT_NO_PORT);
            Verdict::Drop
        })?;
        count_event(if hairpin { CNT_HAIRPIN } else { CNT_SNAT });
    } else {
        // LRU maps evict instead of failing when full; a failure only loses the reverse NAT.
        let _ = CONNTRACK.insert(reply_key, reply, 0);
    }
    let _ = CONNTRACK.insert(key, fwd, 0);
    Ok(fwd)
}

/// Slot `rand % count` of the frontend, and its backend.
#[inline(always)]
fn pick_backend(fe: &Frontend) -> Option<(u32, Backend4)> {
    if fe.count == 0 {
        return None;
    }
    let slot = unsafe { bpf_get_prandom_u32() } % fe.count;
    let backend_id = unsafe {
        *SLOTS.get_ptr(SlotKey {
            svc_id: fe.svc_id,
            slot,
        })?
    }
    .backend_id;
    let b = *BACKENDS.get(backend_id)?;
    (b.port != 0).then_some((backend_id, b))
}

/// Claims a free source port for a masqueraded flow: the reply 5-tuple (backend -> node
/// address:port) is inserted only if no other flow holds it, so two clients that use the same
/// source port towards the same backend never collide.
#[inline(always)]
fn snat_port(cfg: &Config, reply_key: &mut Ct4Key, reply: &Ct4Entry) -> Option<u16> {
    let range = (cfg.snat_port_max as u32).saturating_sub(cfg.snat_port_min as u32) + 1;
    for _ in 0..SNAT_TRIES {
        let port = cfg.snat_port_min as u32 + unsafe { bpf_get_prandom_u32() } % range;
        reply_key.dport = port as u16;
        if CONNTRACK.insert(*reply_key, *reply, BPF_NOEXIST).is_ok() {
            return Some(port as u16);
        }
    }
    None
}

/// A reply from a backend of a NATed flow: the source becomes the VIP and Service port again,
/// and a masqueraded flow's destination becomes the original client again.
#[inline(always)]
fn reply_path<C: Ctx>(ctx: &C, pkt: &Packet, e: &Ct4Entry) -> Verdict {
    count_service(e.svc_id, ctx.len());
    let mut r = rewrite(ctx, pkt, IP_SRC_OFF, 0, pkt.saddr, pkt.sport, e.nat_addr, e.nat_port);
    if r.is_ok() && e.flags & CT_SNAT != 0 {
        r = rewrite(ctx, pkt, IP_DST_OFF, 2, pkt.daddr, pkt.dport, e.snat_addr, e.snat_port);
    }
    finish(r)
}

#[inline(always)]
fn finish(r: Result<(), i64>) -> Verdict {
    match r {
        Ok(()) => Verdict::Nat,
        Err(_) => {
            count_event(CNT_NAT_ERROR);
            Verdict::Drop
        }
    }
}

/// Rewrites one address (at `ip_off`) and one port (at `l4_off + port_off`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite<C: Ctx>(
    ctx: &C,
    pkt: &Packet,
    ip_off: usize,
    port_off: usize,
    old_addr: [u8; 4],
    old_port: u16,
    new_addr: [u8; 4],
    new_port: u16,
) -> Result<(), i64> {
    if old_addr != new_addr {
        ctx.set_addr(pkt, ip_off, old_addr, new_addr)?;
    }
    if old_port != new_port {
        ctx.set_port(pkt, pkt.l4_off + port_off, old_port, new_port)?;
    }
    Ok(())
}
