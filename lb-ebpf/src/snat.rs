//! Step 5: SNAT (masquerade) of a new flow, with source port allocation. A flow is masqueraded
//! to the node address (`lb_config`) when its frontend asks for it (`FE_SNAT`), when the
//! backend is the client itself (hairpin), or when its frontend is a ClusterIP with
//! `FE_MASQ_OFF_CLUSTER` and the source is outside the cluster CIDR (kube-proxy's
//! `! -s clusterCIDR -d clusterIP -j KUBE-MARK-MASQ`); its source port is one that no other
//! flow to the same backend holds.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lb_common::*;

use crate::{
    addr::{addr_eq, addr_is_zero, copy_addr, in_prefix, set_addr4, words},
    maps::{count_event, Scratch, CONFIG, CONNTRACK},
    packet::Packet,
    verdict::Verdict,
};

/// `bpf_map_update_elem`: only insert a key that is not there yet.
const BPF_NOEXIST: u64 = 1;
/// Attempts at a free SNAT source port before giving up on the flow.
const SNAT_TRIES: u32 = 16;
/// No reason to masquerade (see `reason`).
const NO_SNAT: u32 = u32::MAX;

/// Masquerades the new flow to backend `b` built in `s` (see `conntrack::prepare`) if it needs
/// it and the node has an address of the family: both entries get `CT_SNAT`, and the reply
/// entry is inserted with the claimed port. `Ok(true)` when masqueraded; `Drop` when no source
/// port was free.
#[inline(always)]
pub fn masquerade(
    pkt: &Packet,
    fe: &Frontend,
    b: &Backend,
    s: &mut Scratch,
) -> Result<bool, Verdict> {
    let hairpin = addr_eq(&b.addr, &pkt.saddr);
    // The config is read only for flows that may masquerade.
    let cfg = if fe.flags & (FE_SNAT | FE_MASQ_OFF_CLUSTER) != 0 || hairpin {
        CONFIG.get(0)
    } else {
        None
    };
    let Some(cfg) = cfg else { return Ok(false) };
    let counter = reason(pkt, fe, hairpin, cfg);
    if counter == NO_SNAT {
        return Ok(false);
    }
    // The SNAT address goes straight into the scratch entry; all zeros disables SNAT.
    if pkt.v6 {
        copy_addr(&mut s.fwd.snat_addr, &cfg.snat_addr6);
    } else {
        set_addr4(&mut s.fwd.snat_addr, cfg.snat_addr);
    }
    if addr_is_zero(&s.fwd.snat_addr) {
        return Ok(false);
    }
    s.fwd.flags |= CT_SNAT;
    s.reply.flags |= CT_SNAT;
    copy_addr(&mut s.reply.snat_addr, &pkt.saddr);
    s.reply.snat_port = pkt.sport;
    copy_addr(&mut s.reply_key.daddr, &s.fwd.snat_addr);
    let port = alloc_port(cfg, s);
    if port == 0 {
        count_event(CNT_SNAT_NO_PORT);
        return Err(Verdict::Drop);
    }
    s.fwd.snat_port = port;
    count_event(counter);
    Ok(true)
}

/// Why the flow is masqueraded, as the counter it bumps: hairpin, the frontend's policy
/// (`FE_SNAT`), or a source outside the cluster CIDR of a `FE_MASQ_OFF_CLUSTER` frontend;
/// `NO_SNAT` when none applies (a pod client of a ClusterIP keeps its source).
#[inline(always)]
fn reason(pkt: &Packet, fe: &Frontend, hairpin: bool, cfg: &Config) -> u32 {
    if hairpin {
        return CNT_HAIRPIN;
    }
    if fe.flags & FE_SNAT != 0 {
        return CNT_SNAT;
    }
    if fe.flags & FE_MASQ_OFF_CLUSTER == 0 {
        return NO_SNAT;
    }
    let inside = if pkt.v6 {
        in_prefix(&pkt.saddr, words(&cfg.cluster_net6), words(&cfg.cluster_mask6))
    } else {
        let word = |b: [u8; 4]| [u32::from_ne_bytes(b), 0, 0, 0];
        in_prefix(&pkt.saddr, &word(cfg.cluster_net), &word(cfg.cluster_mask))
    };
    if inside {
        NO_SNAT
    } else {
        CNT_SNAT_OFF_CLUSTER
    }
}

/// Claims a free source port for a masqueraded flow: the reply 5-tuple (backend -> node
/// address:port) is inserted only if no other flow holds it, so two clients that use the same
/// source port towards the same backend never collide. Returns 0 when every try failed.
#[inline(never)]
fn alloc_port(cfg: &Config, s: &mut Scratch) -> u16 {
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
