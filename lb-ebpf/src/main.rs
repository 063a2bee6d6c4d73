//! podlb datapath: TC ingress on host-side pod interfaces (and external interfaces).
//!
//! Per packet: parse (every header bounds-checked), then either
//! - destination is a Service frontend: find the flow in conntrack or pick a backend and record
//!   the flow, then DNAT to the backend (`service_path`); or
//! - the packet is a reply of a NATed flow: rewrite the source back to the VIP (`reply_path`); or
//! - anything else: leave it untouched.
//!
//! Every verdict that is not a drop is `TC_NEXT`, so programs attached after ours still run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::bpf_get_prandom_u32,
    macros::{btf_map, classifier},
    programs::TcContext,
};
use lb_common::*;

/// Continue with the next program (TCX_NEXT / TC_ACT_UNSPEC); passes when we are the last.
const TC_NEXT: i32 = -1;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

#[btf_map(name = "lb4_frontends")]
static FRONTENDS: HashMap<Frontend4Key, Frontend, { MAX_SERVICES as usize }> = HashMap::new();
#[btf_map(name = "lb4_slots")]
static SLOTS: HashMap<SlotKey, Slot, { MAX_SLOTS as usize }> = HashMap::new();
#[btf_map(name = "lb4_backends")]
static BACKENDS: Array<Backend4, { MAX_BACKENDS as usize }> = Array::new();
#[btf_map(name = "lb4_conntrack")]
static CONNTRACK: LruHashMap<Ct4Key, Ct4Entry, { MAX_CONNTRACK as usize }> = LruHashMap::new();
#[btf_map(name = "lb_svc_stats")]
static SVC_STATS: PerCpuArray<SvcStats, { MAX_SERVICES as usize }> = PerCpuArray::new();
// Written by the agent only (names for `podlb service list`); declared here so it has BTF.
#[btf_map(name = "lb_svc_meta")]
static SVC_META: HashMap<u32, SvcMeta, { MAX_SERVICES as usize }> = HashMap::new();

/// What the parser extracts from an IPv4 TCP/UDP packet. Ports are in host order.
struct Packet {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    /// Offset of the L4 header (after IPv4 options).
    l4_off: usize,
}

impl Packet {
    fn csum_off(&self) -> usize {
        self.l4_off + if self.proto == PROTO_TCP { 16 } else { 6 }
    }
    /// UDP may carry a zero ("none") checksum, which must stay zero.
    fn csum_flags(&self) -> u64 {
        if self.proto == PROTO_UDP {
            BPF_F_MARK_MANGLED_0
        } else {
            0
        }
    }
    fn ct_key(&self) -> Ct4Key {
        Ct4Key {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            pad: [0; 3],
        }
    }
}

#[classifier]
pub fn podlb_tc_pod(ctx: TcContext) -> i32 {
    let Some(pkt) = parse(&ctx) else {
        return TC_NEXT;
    };
    let key = Frontend4Key {
        addr: pkt.daddr,
        port: pkt.dport,
        proto: pkt.proto,
        pad: 0,
    };
    match FRONTENDS.get_ptr(key) {
        // Copy the entry at once: the agent may update it concurrently.
        Some(fe) => service_path(&ctx, &pkt, unsafe { *fe }),
        None => reply_path(&ctx, &pkt),
    }
}

/// Returns a pointer to a `T` at `off` if the whole `T` lies inside the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// Parses Ethernet + IPv4 (with options) + TCP/UDP ports. `None` means "not ours": not IPv4,
/// truncated, malformed (IHL < 5, total length shorter than the headers), a fragment, or
/// another protocol.
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<Packet> {
    let eth_proto: u16 = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12)? });
    if eth_proto != ETH_P_IP {
        return None;
    }
    let ip: [u8; 20] = unsafe { *ptr_at::<[u8; 20]>(ctx, ETH_HLEN)? };
    let version = ip[0] >> 4;
    let ihl = (ip[0] & 0x0f) as usize;
    if version != 4 || ihl < 5 {
        return None;
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    // More-fragments flag or a fragment offset: ports are not (all) there.
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let proto = ip[9];
    let l4_off = ETH_HLEN + ihl * 4;
    // The L4 header must be complete, up to and including the checksum we rewrite, both in the
    // frame and inside the datagram (a short datagram in a padded frame is truncated too).
    let ports: [u8; 4] = match proto {
        PROTO_TCP if tot_len >= ihl * 4 + 20 => {
            let tcp = unsafe { *ptr_at::<[u8; 20]>(ctx, l4_off)? };
            [tcp[0], tcp[1], tcp[2], tcp[3]]
        }
        PROTO_UDP if tot_len >= ihl * 4 + 8 => {
            let udp = unsafe { *ptr_at::<[u8; 8]>(ctx, l4_off)? };
            [udp[0], udp[1], udp[2], udp[3]]
        }
        _ => return None,
    };
    Some(Packet {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        dport: u16::from_be_bytes([ports[2], ports[3]]),
        proto,
        l4_off,
    })
}

/// Traffic to a frontend: reuse the flow's backend if it still exists, else pick one.
#[inline(always)]
fn service_path(ctx: &TcContext, pkt: &Packet, fe: Frontend) -> i32 {
    count(fe.svc_id, ctx.len());
    let key = pkt.ct_key();
    let nat = match CONNTRACK.get_ptr(key) {
        Some(e) if backend_alive(unsafe { &*e }) => unsafe { *e },
        _ => match new_flow(pkt, &fe, &key) {
            Some(e) => e,
            // No backend: kube-proxy rejects; a RST/ICMP reply comes with a later version.
            None => return TC_ACT_SHOT,
        },
    };
    match rewrite(ctx, pkt, IP_DST_OFF, 2, pkt.daddr, pkt.dport, nat.nat_addr, nat.nat_port) {
        Ok(()) => TC_NEXT,
        Err(_) => TC_ACT_SHOT,
    }
}

/// A flow stays on its backend while the backend id still names the same address and port.
#[inline(always)]
fn backend_alive(e: &Ct4Entry) -> bool {
    match BACKENDS.get(e.backend_id) {
        Some(b) => e.flags & CT_FORWARD != 0 && b.addr == e.nat_addr && b.port == e.nat_port,
        None => false,
    }
}

/// Picks a backend uniformly at random and records both directions of the flow.
#[inline(always)]
fn new_flow(pkt: &Packet, fe: &Frontend, key: &Ct4Key) -> Option<Ct4Entry> {
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
    if b.port == 0 {
        return None;
    }
    let fwd = Ct4Entry {
        nat_addr: b.addr,
        nat_port: b.port,
        pad: 0,
        flags: CT_FORWARD,
        svc_id: fe.svc_id,
        backend_id,
        pad2: 0,
    };
    let reply_key = Ct4Key {
        saddr: b.addr,
        daddr: pkt.saddr,
        sport: b.port,
        dport: pkt.sport,
        proto: pkt.proto,
        pad: [0; 3],
    };
    let reply = Ct4Entry {
        nat_addr: pkt.daddr,
        nat_port: pkt.dport,
        flags: CT_REPLY,
        ..fwd
    };
    // LRU maps evict instead of failing when full; a failure here only loses stickiness.
    let _ = CONNTRACK.insert(reply_key, reply, 0);
    let _ = CONNTRACK.insert(key, fwd, 0);
    Some(fwd)
}

/// A reply from a backend of a NATed flow: the source becomes the VIP and Service port again.
#[inline(always)]
fn reply_path(ctx: &TcContext, pkt: &Packet) -> i32 {
    let Some(e) = CONNTRACK.get_ptr(pkt.ct_key()) else {
        return TC_NEXT;
    };
    let e = unsafe { *e };
    if e.flags & CT_REPLY == 0 {
        return TC_NEXT;
    }
    count(e.svc_id, ctx.len());
    match rewrite(ctx, pkt, IP_SRC_OFF, 0, pkt.saddr, pkt.sport, e.nat_addr, e.nat_port) {
        Ok(()) => TC_NEXT,
        Err(_) => TC_ACT_SHOT,
    }
}

/// Rewrites one address (at `ip_off`) and one port (at `l4_off + port_off`), and fixes the IPv4
/// and L4 checksums incrementally.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite(
    ctx: &TcContext,
    pkt: &Packet,
    ip_off: usize,
    port_off: usize,
    old_addr: [u8; 4],
    old_port: u16,
    new_addr: [u8; 4],
    new_port: u16,
) -> Result<(), i64> {
    let csum_off = pkt.csum_off();
    let flags = pkt.csum_flags();
    if old_addr != new_addr {
        let (from, to) = (u32::from_ne_bytes(old_addr), u32::from_ne_bytes(new_addr));
        ctx.l4_csum_replace(csum_off, from as u64, to as u64, flags | BPF_F_PSEUDO_HDR | 4)?;
        ctx.l3_csum_replace(IP_CSUM_OFF, from as u64, to as u64, 4)?;
        ctx.store(ip_off, &new_addr, 0)?;
    }
    if old_port != new_port {
        let (from, to) = (old_port.to_be(), new_port.to_be());
        ctx.l4_csum_replace(csum_off, from as u64, to as u64, flags | 2)?;
        ctx.store(pkt.l4_off + port_off, &to, 0)?;
    }
    Ok(())
}

#[inline(always)]
fn count(svc_id: u32, bytes: u32) {
    if let Some(s) = SVC_STATS.get_ptr_mut(svc_id) {
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes as u64;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
