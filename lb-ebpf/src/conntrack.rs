//! Step 3: conntrack (`lb_conntrack`, an LRU hash). Two entries per flow, keyed by the 5-tuple
//! as seen on the wire: the forward entry (client -> frontend: the backend, and the SNAT source
//! of a masqueraded flow) and the reply entry (the backend's answer: the frontend to restore,
//! and the client of a masqueraded flow). Looks up a packet's flow, decides whether it keeps
//! its backend, and records new flows.
use lb_common::*;

use crate::{
    addr::{addr_eq, copy_addr, set_addr4},
    consts::TCP_SYN,
    maps::{Scratch, BACKENDS, CONNTRACK},
    packet::Packet,
};

/// The forward entry of the packet's flow (`key` is the packet's 5-tuple), if the packet goes
/// to the flow's backend (see `keeps_backend`); `None` makes it a new flow.
#[inline(always)]
pub fn established(pkt: &Packet, key: &CtKey) -> Option<&'static CtEntry> {
    match CONNTRACK.get_ptr(key) {
        Some(e) if keeps_backend(pkt, unsafe { &*e }) => Some(unsafe { &*e }),
        _ => None,
    }
}

/// The reply entry of the packet's 5-tuple: the packet is a backend's reply of a NATed flow.
/// Copied at once, as the entry may change under us.
#[inline(always)]
pub fn reply(pkt: &Packet) -> Option<CtEntry> {
    let e = unsafe { *CONNTRACK.get_ptr(pkt.ct_key())? };
    (e.flags & CT_REPLY != 0).then_some(e)
}

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

/// Builds a new flow's entries in the scratch space `s`: the forward entry (to backend `b`),
/// the reply entry (back to the frontend) and the reply's key, all without SNAT.
#[inline(always)]
pub fn prepare(s: &mut Scratch, pkt: &Packet, fe: &Frontend, b: &Backend, backend_id: u32) {
    let (svc, id) = (fe.svc_id, backend_id);
    init_entry(&mut s.fwd, &b.addr, b.port, CT_FORWARD, svc, id);
    init_entry(&mut s.reply, &pkt.daddr, pkt.dport, CT_REPLY, svc, id);
    let rk = &mut s.reply_key;
    copy_addr(&mut rk.saddr, &b.addr);
    copy_addr(&mut rk.daddr, &pkt.saddr);
    rk.sport = b.port;
    rk.dport = pkt.sport;
    rk.proto = pkt.proto;
    rk.family = pkt.family();
    rk.pad = [0; 2];
}

/// An entry that rewrites to `nat_addr`:`nat_port`, without SNAT.
#[inline(always)]
fn init_entry(e: &mut CtEntry, nat_addr: &Addr, nat_port: u16, flags: u32, svc: u32, id: u32) {
    copy_addr(&mut e.nat_addr, nat_addr);
    e.nat_port = nat_port;
    set_addr4(&mut e.snat_addr, [0; 4]);
    e.snat_port = 0;
    e.flags = flags;
    e.svc_id = svc;
    e.backend_id = id;
}

/// Stores the new flow built in `s`: the forward entry under `key`, and the reply entry unless
/// the SNAT port allocation has already claimed it (`masqueraded`). LRU maps evict instead of
/// failing when full; a failure only loses the reverse NAT.
#[inline(always)]
pub fn record(key: &CtKey, s: &Scratch, masqueraded: bool) {
    if !masqueraded {
        let _ = CONNTRACK.insert(&s.reply_key, &s.reply, 0);
    }
    let _ = CONNTRACK.insert(key, &s.fwd, 0);
}
