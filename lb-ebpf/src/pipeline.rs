//! The load-balancing pipeline of a parsed packet, shared by every hook through `Ctx`: the
//! sequence of steps 2-6 (frontend lookup, conntrack, backend selection, SNAT port allocation,
//! NAT) and the `Verdict` it hands back to the entry point. The steps themselves live in their
//! own files; this one only says in which order they run.
use lb_common::*;

use crate::{
    backend, conntrack,
    ctx::Ctx,
    frontend,
    maps::{count_event, count_service, scratch, Scratch, BACKENDS},
    nat,
    packet::Packet,
    snat,
    verdict::Verdict,
};


/// Handles one parsed packet. A BPF-to-BPF call, so that its stack frame is gone before the
/// caller rejects or forwards the packet.
#[inline(never)]
pub fn process<C: Ctx>(ctx: &C, pkt: &Packet) -> Verdict {
    let v = balance(ctx, pkt);
    if matches!(v, Verdict::Nat) {
        return nat::fix_sctp(ctx, pkt);
    }
    v
}

/// Steps 2-6 for one packet:
/// - traffic to a frontend is counted, then goes to its flow's backend (conntrack) or to a new
///   one (backend selection, SNAT port allocation), and is DNATed (and SNATed);
/// - a reply of a NATed flow is counted and reverse-NATed;
/// - a ClusterIP on a port it does not expose is rejected;
/// - anything else passes untouched.
#[inline(always)]
fn balance<C: Ctx>(ctx: &C, pkt: &Packet) -> Verdict {
    if let Some(fe) = frontend::lookup(pkt) {
        count_service(fe.svc_id, ctx.len());
        let key = pkt.ct_key();
        let e = match conntrack::established(pkt, &key) {
            Some(e) => e,
            None => match new_flow(pkt, &fe, &key) {
                Ok(e) => e,
                Err(v) => return v,
            },
        };
        return nat::forward(ctx, pkt, e);
    }
    if let Some(e) = conntrack::reply(pkt) {
        count_service(e.svc_id, ctx.len());
        return nat::reverse(ctx, pkt, &e);
    }
    if frontend::unexposed_port(pkt) {
        count_event(CNT_REJECT_NO_PORT);
        return Verdict::Reject;
    }
    Verdict::Pass
}

/// A new flow to `fe`: picks a backend, records both directions of the flow in this CPU's
/// scratch space, masquerades it where needed (claiming a source port), and stores the entries
/// in conntrack. The forward entry is returned from the scratch space.
#[inline(always)]
fn new_flow(pkt: &Packet, fe: &Frontend, key: &CtKey) -> Result<&'static CtEntry, Verdict> {
    let backend_id = backend::select(fe, pkt.family())?;
    let (Some(b), Some(s)) = (BACKENDS.get(backend_id), scratch()) else {
        count_event(CNT_NAT_ERROR);
        return Err(Verdict::Drop);
    };
    conntrack::prepare(s, pkt, fe, b, backend_id);
    let masqueraded = snat::masquerade(pkt, fe, b, s)?;
    conntrack::record(key, s, masqueraded);
    let s: &'static Scratch = s;
    Ok(&s.fwd)
}
