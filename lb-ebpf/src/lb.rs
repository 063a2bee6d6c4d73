//! Steps 2-5: frontend lookup, conntrack, backend selection with SNAT port allocation, and the
//! NAT rewrite, shared by every hook through `Ctx`.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::*;

use crate::{
    ctx::Ctx,
    maps::*,
    parse::{addr_eq, addr_is_zero, copy_addr, set_addr4, Packet},
    sctp,
};

/// Handles one parsed packet. A BPF-to-BPF call, so that its stack frame is gone before the
/// caller rejects or forwards the packet. An SCTP packet whose ports changed gets its CRC32c
/// recomputed here, once, after all rewrites (address changes do not affect it).
#[inline(never)]
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
    let mut key = FrontendKey {
        addr: [0; 16],
        port: pkt.dport,
        proto: pkt.proto,
        family: pkt.family(),
    };
    copy_addr(&mut key.addr, &pkt.daddr);
    if let Some(fe) = FRONTENDS.get_ptr(key) {
        // Copy the entry at once: the agent may update it concurrently.
        let fe = unsafe { *fe };
        return service_path(ctx, pkt, &fe);
    }
    if let Some(e) = CONNTRACK.get_ptr(pkt.ct_key()) {
        let e = unsafe { *e };
        if e.flags & CT_REPLY != 0 {
            return reply_path(ctx, pkt, &e);
        }
    }
    // A ClusterIP on a port it does not expose.
    let mut vip = VipKey {
        addr: [0; 16],
        family: pkt.family(),
        pad: [0; 3],
    };
    copy_addr(&mut vip.addr, &pkt.daddr);
    if VIPS.get_ptr(vip).is_some() {
        count_event(CNT_REJECT_NO_PORT);
        return Verdict::Reject;
    }
    Verdict::Pass
}

/// Traffic to a frontend: reuse the flow's backend (see `keeps_backend`), else pick one.
#[inline(always)]
fn service_path<C: Ctx>(ctx: &C, pkt: &Packet, fe: &Frontend) -> Verdict {
    count_service(fe.svc_id, ctx.len());
    let key = pkt.ct_key();
    let e: &CtEntry = match CONNTRACK.get_ptr(&key) {
        Some(e) if keeps_backend(pkt, unsafe { &*e }) => unsafe { &*e },
        _ => match new_flow(pkt, fe, &key) {
            Ok(e) => e,
            Err(v) => return v,
        },
    };
    let mut r = rewrite(
        ctx,
        pkt,
        pkt.dst_off(),
        2,
        &pkt.daddr,
        pkt.dport,
        &e.nat_addr,
        e.nat_port,
    );
    if r.is_ok() && e.flags & CT_SNAT != 0 {
        r = rewrite(
            ctx,
            pkt,
            pkt.src_off(),
            0,
            &pkt.saddr,
            pkt.sport,
            &e.snat_addr,
            e.snat_port,
        );
    }
    finish(r)
}

const TCP_SYN: u8 = 0x02;

/// Whether a packet of a known flow goes to the flow's backend, as with kube-proxy's conntrack:
/// - while the backend id still names the same address and port;
/// - an established TCP connection also after its backend left the Service (a terminating pod
///   finishes its connections). A SYN on the tuple of such a flow is a new connection: it moves.
/// - UDP and SCTP flows move to a live backend at once (kube-proxy clears the conntrack
///   entries of removed UDP endpoints).
#[inline(always)]
fn keeps_backend(pkt: &Packet, e: &CtEntry) -> bool {
    e.flags & CT_FORWARD != 0
        && ((pkt.proto == PROTO_TCP && pkt.tcp_flags & TCP_SYN == 0) || backend_alive(e))
}

/// Whether the flow's backend id still names the same address and port.
#[inline(always)]
fn backend_alive(e: &CtEntry) -> bool {
    match BACKENDS.get(e.backend_id) {
        Some(b) => {
            e.flags & CT_FORWARD != 0 && addr_eq(&b.addr, &e.nat_addr) && b.port == e.nat_port
        }
        None => false,
    }
}

/// Picks a backend uniformly at random and records both directions of the flow. Masquerades
/// when the frontend asks for it, or when the backend is the client itself (hairpin). The
/// entries are built in this CPU's scratch space; the forward entry is returned from there.
#[inline(always)]
fn new_flow(pkt: &Packet, fe: &Frontend, key: &CtKey) -> Result<&'static CtEntry, Verdict> {
    let Some(backend_id) = pick_backend(fe, pkt.family()) else {
        return Err(if fe.flags & FE_DROP_EMPTY != 0 {
            count_event(CNT_DROP_NO_BACKEND);
            Verdict::Drop
        } else {
            count_event(CNT_REJECT_NO_BACKEND);
            Verdict::Reject
        });
    };
    let (Some(b), Some(s)) = (BACKENDS.get(backend_id), scratch()) else {
        count_event(CNT_NAT_ERROR);
        return Err(Verdict::Drop);
    };
    let hairpin = addr_eq(&b.addr, &pkt.saddr);
    let fwd = &mut s.fwd;
    copy_addr(&mut fwd.nat_addr, &b.addr);
    fwd.nat_port = b.port;
    set_addr4(&mut fwd.snat_addr, [0; 4]);
    fwd.snat_port = 0;
    fwd.flags = CT_FORWARD;
    fwd.svc_id = fe.svc_id;
    fwd.backend_id = backend_id;
    let reply = &mut s.reply;
    copy_addr(&mut reply.nat_addr, &pkt.daddr);
    reply.nat_port = pkt.dport;
    set_addr4(&mut reply.snat_addr, [0; 4]);
    reply.snat_port = 0;
    reply.flags = CT_REPLY;
    reply.svc_id = fe.svc_id;
    reply.backend_id = backend_id;
    let rk = &mut s.reply_key;
    copy_addr(&mut rk.saddr, &b.addr);
    copy_addr(&mut rk.daddr, &pkt.saddr);
    rk.sport = b.port;
    rk.dport = pkt.sport;
    rk.proto = pkt.proto;
    rk.family = pkt.family();
    rk.pad = [0; 2];
    // The config is read only for flows that masquerade.
    let cfg = if fe.flags & FE_SNAT != 0 || hairpin {
        CONFIG.get(0)
    } else {
        None
    };
    // The SNAT address goes straight into the scratch entry; all zeros disables SNAT.
    match cfg {
        Some(c) if pkt.v6 => copy_addr(&mut s.fwd.snat_addr, &c.snat_addr6),
        Some(c) => set_addr4(&mut s.fwd.snat_addr, c.snat_addr),
        None => {}
    }
    match cfg {
        Some(cfg) if !addr_is_zero(&s.fwd.snat_addr) => {
            s.fwd.flags |= CT_SNAT;
            s.reply.flags |= CT_SNAT;
            copy_addr(&mut s.reply.snat_addr, &pkt.saddr);
            s.reply.snat_port = pkt.sport;
            copy_addr(&mut s.reply_key.daddr, &s.fwd.snat_addr);
            let port = snat_port(cfg, s);
            if port == 0 {
                count_event(CNT_SNAT_NO_PORT);
                return Err(Verdict::Drop);
            }
            s.fwd.snat_port = port;
            count_event(if hairpin { CNT_HAIRPIN } else { CNT_SNAT });
        }
        _ => {
            // LRU maps evict instead of failing when full; a failure only loses the reverse NAT.
            let _ = CONNTRACK.insert(&s.reply_key, &s.reply, 0);
        }
    }
    let _ = CONNTRACK.insert(key, &s.fwd, 0);
    let s: &'static Scratch = s;
    Ok(&s.fwd)
}

/// Slot `rand % count` of the frontend: its backend id, if that backend exists and is of the
/// packet's family.
#[inline(always)]
fn pick_backend(fe: &Frontend, family: u8) -> Option<u32> {
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
    let b = BACKENDS.get(backend_id)?;
    (b.port != 0 && b.family == family).then_some(backend_id)
}

/// Claims a free source port for a masqueraded flow: the reply 5-tuple (backend -> node
/// address:port) is inserted only if no other flow holds it, so two clients that use the same
/// source port towards the same backend never collide. Returns 0 when every try failed.
#[inline(never)]
fn snat_port(cfg: &Config, s: &mut Scratch) -> u16 {
    let range = (cfg.snat_port_max as u32).saturating_sub(cfg.snat_port_min as u32) + 1;
    for _ in 0..SNAT_TRIES {
        let port = cfg.snat_port_min as u32 + unsafe { bpf_get_prandom_u32() } % range;
        s.reply_key.dport = port as u16;
        if CONNTRACK
            .insert(&s.reply_key, &s.reply, BPF_NOEXIST)
            .is_ok()
        {
            return port as u16;
        }
    }
    0
}

/// A reply from a backend of a NATed flow: the source becomes the VIP and Service port again,
/// and a masqueraded flow's destination becomes the original client again.
#[inline(always)]
fn reply_path<C: Ctx>(ctx: &C, pkt: &Packet, e: &CtEntry) -> Verdict {
    count_service(e.svc_id, ctx.len());
    let mut r = rewrite(
        ctx,
        pkt,
        pkt.src_off(),
        0,
        &pkt.saddr,
        pkt.sport,
        &e.nat_addr,
        e.nat_port,
    );
    if r.is_ok() && e.flags & CT_SNAT != 0 {
        r = rewrite(
            ctx,
            pkt,
            pkt.dst_off(),
            2,
            &pkt.daddr,
            pkt.dport,
            &e.snat_addr,
            e.snat_port,
        );
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
    old_addr: &Addr,
    old_port: u16,
    new_addr: &Addr,
    new_port: u16,
) -> Result<(), i64> {
    if !addr_eq(old_addr, new_addr) {
        ctx.set_addr(pkt, ip_off, old_addr, new_addr)?;
    }
    if old_port != new_port {
        ctx.set_port(pkt, pkt.l4_off + port_off, old_port, new_port)?;
    }
    Ok(())
}
