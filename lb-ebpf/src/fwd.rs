//! XDP forwarding of a NATed packet: when the route leads back out of the interface it came in
//! on (a backend on another node behind the same uplink), rewrite the MACs, decrement the TTL and
//! transmit it from XDP (IPv4 TTL or IPv6 hop limit). Otherwise (a local pod behind a veth, an unresolved neighbour, an
//! expiring TTL) pass it to the kernel stack, which routes it.
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
    parse::Packet,
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
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && fib.ifindex == ingress
}

#[inline(always)]
fn set_macs(ctx: &XdpContext, fib: &bpf_fib_lookup) -> Option<()> {
    let eth = slot::<[u8; 12]>(ctx, 0).ok()?;
    eth[0..6].copy_from_slice(&fib.dmac);
    eth[6..12].copy_from_slice(&fib.smac);
    Some(())
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
    fib.family = AF_INET6;
    fib.l4_protocol = ip[6];
    fib.sport = ports[0];
    fib.dport = ports[1];
    fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([ip[4], ip[5]]) + IP6_HLEN as u16;
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
    set_macs(ctx, &fib)?;
    Some(xdp_action::XDP_TX)
}

#[inline(never)]
fn try_forward(ctx: &XdpContext, pkt: &Packet) -> Option<u32> {
    let ip = *slot::<[u8; IP_HLEN]>(ctx, ETH_HLEN).ok()?;
    if ip[8] <= 1 {
        return None; // the stack sends "time exceeded"
    }
    // The ports after NAT, for multipath hashing.
    let ports = *slot::<[u8; 4]>(ctx, pkt.l4_off).ok()?;
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = ip[9];
    fib.sport = u16::from_ne_bytes([ports[0], ports[1]]);
    fib.dport = u16::from_ne_bytes([ports[2], ports[3]]);
    fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([ip[2], ip[3]]);
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
    set_macs(ctx, &fib)?;
    Some(xdp_action::XDP_TX)
}
