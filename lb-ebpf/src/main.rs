//! podlb datapath.
//! - `podlb_xdp_ext`: XDP on external interfaces, the fast path for NodePort, ExternalIP and
//!   LoadBalancer traffic (and anything else addressed to a frontend) and for replies coming
//!   back from other nodes.
//! - `podlb_tc_pod`: TC ingress on host-side pod interfaces (pod-to-Service traffic and
//!   reverse NAT of replies), and on external interfaces where XDP cannot finish a packet.
//! - `podlb_tc_egress`: TC egress on the same interfaces, for ICMP errors the node generates.
//!
//! A packet walks through one file per step (`pipeline.rs` says in which order):
//! 1. `parse`: Ethernet, IPv4 (with options) or IPv6, and L4 ports, all bounds-checked;
//! 2. `frontend`: is it addressed to a Service frontend (or to a ClusterIP on a port it does
//!    not expose, which is rejected)?
//! 3. `conntrack`: the flow's backend, if the packet keeps it, or a reply of a NATed flow;
//! 4. `backend`: a new flow's backend;
//! 5. `snat`: masquerade (frontend policy or hairpin) with source port allocation;
//! 6. `nat`: the DNAT/SNAT rewrite, or the reverse NAT of a reply;
//! 7. `reject`: answers rejected connections with a TCP RST or ICMP unreachable;
//! 8. `fwd` (XDP): transmits NATed packets whose route leads back out of the same interface,
//!    and passes the rest to the kernel stack;
//! - `icmp`: ICMP errors about NATed flows (PMTU "fragmentation needed", port unreachable from
//!   a backend) are translated back so the client recognises them, and errors about replies
//!   (sent to the VIP) are passed on to the backend.
//!
//! Shared by the steps: `packet` (the parsed packet), `verdict` (what a step tells the entry
//! point). Helpers: `consts` (packet constants), `addr` (addresses as words), `ctx` (the TC and XDP
//! contexts: packet access and checksummed writes), `csum` (Internet checksum arithmetic),
//! `sctp` (CRC32c), `maps` (the maps, scratch space and counters), `handoff` (XDP -> TC mark).
//!
//! Every TC verdict that is not a drop or a reject is `TC_NEXT`, so programs attached after
//! ours (a CNI's, say) still run.
#![no_std]
#![no_main]

mod addr;
mod backend;
mod conntrack;
mod consts;
mod csum;
mod ctx;
mod frontend;
mod fwd;
mod handoff;
mod icmp;
mod maps;
mod nat;
mod packet;
mod parse;
mod pipeline;
mod reject;
mod sctp;
mod snat;
mod verdict;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_SHOT},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{pipeline::process, verdict::Verdict};

/// Continue with the next program (TCX_NEXT / TC_ACT_UNSPEC); passes when we are the last.
const TC_NEXT: i32 = -1;

#[classifier]
pub fn podlb_tc_pod(ctx: TcContext) -> i32 {
    if handoff::done_by_xdp(&ctx) {
        return TC_NEXT;
    }
    let mut pkt = packet::Packet::EMPTY;
    if !parse::parse(&ctx, &mut pkt) {
        return match icmp::translate(&ctx, icmp::Errors::Both) {
            Verdict::Drop => TC_ACT_SHOT,
            _ => TC_NEXT,
        };
    }
    match process(&ctx, &pkt) {
        Verdict::Pass | Verdict::Nat => TC_NEXT,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Reject => reject::reject_tc(&ctx, &pkt),
    }
}

/// TC egress on pod and external interfaces: ICMP errors the node itself generates about a
/// NATed flow (such as "fragmentation needed" when a backend's link has a smaller MTU) never
/// pass an ingress hook, so they are translated on their way out.
#[classifier]
pub fn podlb_tc_egress(ctx: TcContext) -> i32 {
    match icmp::translate(&ctx, icmp::Errors::ToClients) {
        Verdict::Drop => TC_ACT_SHOT,
        _ => TC_NEXT,
    }
}

#[xdp]
pub fn podlb_xdp_ext(ctx: XdpContext) -> u32 {
    let mut pkt = packet::Packet::EMPTY;
    let verdict = match parse::parse(&ctx, &mut pkt) {
        false => match icmp::translate(&ctx, icmp::Errors::Both) {
            Verdict::Drop => xdp_action::XDP_DROP,
            _ => xdp_action::XDP_PASS,
        },
        true => match process(&ctx, &pkt) {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Nat => fwd::forward(&ctx, &pkt),
            Verdict::Drop => xdp_action::XDP_DROP,
            // Not marked when passed on: then the TC program rejects it.
            Verdict::Reject => return reject::reject_xdp(&ctx, &pkt),
        },
    };
    if verdict == xdp_action::XDP_PASS {
        handoff::mark_done(&ctx);
    }
    verdict
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
