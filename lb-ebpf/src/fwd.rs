//! Step 8 (XDP only): forwarding of a NATed packet. When the route leads back out of the
//! interface it came in on (a backend on another node behind the same uplink), the MACs are
//! rewritten, the TTL (IPv4) or hop limit (IPv6) decremented, and the packet transmitted from
//! XDP. Otherwise (a local pod behind a veth, an unresolved neighbour, an expiring TTL) it goes
//! on to the kernel stack, which routes it.
use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
    EbpfContext,
};

use crate::{
    consts::{ETH_HLEN, IP6_HLEN, IP_HLEN},
    csum,
    ctx::slot,
    packet::Packet,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &Packet) -> u32 {
    let r = if pkt.v6 {
        try_forward6(ctx, pkt)
    } else {
        try_forward(ctx, pkt)
    };
    r.unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn lookup(ctx: &XdpContext, fib: &mut bpf_fib_lookup) -> bool {
    let ingress = ctx.ingress_ifindex() as u32;
    fib.ifindex = ingress;
    let rc = unsafe { fib_lookup(ctx.as_ptr(), fib, size_of::<bpf_fib_lookup>() as i32, 0) };
    rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && fib.ifindex == ingress
}

/// Fills the route query for the packet in `fib` (zeroed): family, protocol, ports (network order,
/// after NAT: for multipath hashing) and IP length; the caller adds the addresses.
#[inline(always)]
fn query(fib: &mut bpf_fib_lookup, family: u8, proto: u8, ports: [u16; 2], tot_len: u16) {
    fib.family = family;
    fib.l4_protocol = proto;
    fib.sport = ports[0];
    fib.dport = ports[1];
    fib.__bindgen_anon_1.tot_len = tot_len;
}

/// Sends the packet back out towards the route's next hop (`lookup` succeeded and the TTL is
/// decremented): its MACs become the route's.
#[inline(always)]
fn transmit(ctx: &XdpContext, fib: &bpf_fib_lookup) -> Option<u32> {
    let eth = slot::<[u8; 12]>(ctx, 0).ok()?;
    eth[0..6].copy_from_slice(&fib.dmac);
    eth[6..12].copy_from_slice(&fib.smac);
    Some(xdp_action::XDP_TX)
}

#[inline(never)]
fn try_forward6(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let hdr = slot::<[u8; IP6_HLEN]>(ctx, ETH_HLEN).ok()? as *mut [u8; IP6_HLEN];
    let ip = unsafe { &*hdr };
    if ip[7] <= 1 {
        return None; // the stack sends "time exceeded"
    }
    let ports = *slot::<[u16; 2]>(ctx, pkt.l4_off).ok()?;
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    let len = u16::from_be_bytes([ip[4], ip[5]]) + IP6_HLEN as u16;
    query(&mut fib, AF_INET6, ip[6], ports, len);
    // Traffic class and flow label (the version nibble masked off); addresses as words.
    let words = hdr as *const u32;
    unsafe {
        fib.__bindgen_anon_2.flowinfo = *words & u32::from_be(0x0fff_ffff);
        fib.__bindgen_anon_3.ipv6_src =
            [*words.add(2), *words.add(3), *words.add(4), *words.add(5)];
        fib.__bindgen_anon_4.ipv6_dst =
            [*words.add(6), *words.add(7), *words.add(8), *words.add(9)];
    }
    if !lookup(ctx, &mut fib) {
        return None;
    }
    slot::<[u8; IP6_HLEN]>(ctx, ETH_HLEN).ok()?[7] -= 1;
    transmit(ctx, &fib)
}

#[inline(never)]
fn try_forward(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let ip = *slot::<[u8; IP_HLEN]>(ctx, ETH_HLEN).ok()?;
    if ip[8] <= 1 {
        return None; // the stack sends "time exceeded"
    }
    let ports = *slot::<[u8; 4]>(ctx, pkt.l4_off).ok()?;
    let ports = [
        u16::from_ne_bytes([ports[0], ports[1]]),
        u16::from_ne_bytes([ports[2], ports[3]]),
    ];
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    query(
        &mut fib,
        AF_INET,
        ip[9],
        ports,
        u16::from_be_bytes([ip[2], ip[3]]),
    );
    fib.__bindgen_anon_2.tos = ip[1];
    fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
    fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
    if !lookup(ctx, &mut fib) {
        return None;
    }
    // TTL - 1, and the IPv4 checksum with it (the TTL shares a word with the protocol).
    let hdr = slot::<[u8; IP_HLEN]>(ctx, ETH_HLEN).ok()?;
    let old = [hdr[8], hdr[9]];
    hdr[8] -= 1;
    let c = csum::replace([hdr[10], hdr[11]], &old, &[hdr[8], hdr[9]]);
    hdr[10..12].copy_from_slice(&c);
    transmit(ctx, &fib)
}
