//! Masquerading of ClusterIP traffic from outside the cluster CIDR (`--cluster-cidr`,
//! `FE_MASQ_OFF_CLUSTER` and `Config::cluster_net`/`cluster_mask`), in both hooks and both
//! families: an off-cluster source becomes the node address with a SNAT port, a source inside
//! the CIDR keeps its own, and without a CIDR (no flag, zero prefix) nothing changes.
//!
//! The CIDRs are 10.244.0.0/16 and fd00:10:244::/48 (a prefix that ends inside the second
//! 32-bit word, so the word-wise mask is exercised); the sources on either side of each border
//! are the CIDR's last address and the first one past it.

use crate::harness::*;
use lb_common::*;
use podlb::types::Family;
use std::net::Ipv6Addr;
use testkit::frame::*;

/// One family's addresses.
struct Case<A: Ip> {
    /// The ClusterIP frontend (svc 1).
    vip: (A, u16),
    /// The node's SNAT address.
    node: A,
    /// The only backend: a pod on another node.
    backend: (A, u16),
    /// Sources outside the CIDR: an external client on the underlay, the first address past
    /// the CIDR.
    outside: [(A, u16); 2],
    /// Sources inside the CIDR: a pod of this node, the CIDR's last address.
    inside: [(A, u16); 2],
    /// The config with the node address as SNAT source, and the cluster CIDR (or none).
    config: fn(bool) -> Config,
}

const V4: Case<[u8; 4]> = Case {
    vip: ([10, 96, 0, 10], 80),
    node: [192, 168, 50, 10],
    backend: ([10, 244, 1, 11], 8080),
    outside: [([192, 168, 50, 2], 40000), ([10, 245, 0, 0], 40001)],
    inside: [([10, 244, 0, 5], 40000), ([10, 244, 255, 255], 40001)],
    config: config4,
};

fn config4(cidr: bool) -> Config {
    let mut c = Config {
        snat_addr: [192, 168, 50, 10],
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
        ..Config::default()
    };
    if cidr {
        c.cluster_net = [10, 244, 0, 0];
        c.cluster_mask = [255, 255, 0, 0];
    }
    c
}

const fn ip6(s: [u16; 8]) -> [u8; 16] {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).octets()
}

const V6: Case<[u8; 16]> = Case {
    vip: (ip6([0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10]), 80),
    node: ip6([0xfd00, 0x50, 0, 0, 0, 0, 0, 0x10]),
    backend: (ip6([0xfd00, 0x10, 0x244, 1, 0, 0, 0, 0x11]), 8080),
    outside: [
        (ip6([0xfd00, 0x50, 0, 0, 0, 0, 0, 2]), 40000),
        (ip6([0xfd00, 0x10, 0x245, 0, 0, 0, 0, 0]), 40001),
    ],
    inside: [
        (ip6([0xfd00, 0x10, 0x244, 0, 0, 0, 0, 5]), 40000),
        (
            ip6([0xfd00, 0x10, 0x244, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff]),
            40001,
        ),
    ],
    config: config6,
};

fn config6(cidr: bool) -> Config {
    let mut c = Config {
        snat_addr6: ip6([0xfd00, 0x50, 0, 0, 0, 0, 0, 0x10]),
        snat_port_min: SNAT_PORT_MIN,
        snat_port_max: SNAT_PORT_MAX,
        ..Config::default()
    };
    if cidr {
        c.cluster_net6 = ip6([0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0]);
        c.cluster_mask6 = ip6([0xffff, 0xffff, 0xffff, 0, 0, 0, 0, 0]);
    }
    c
}

macro_rules! for_both_hooks_and_families {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn tc_v4() {
                    super::$name(Hook::Tc, &V4)
                }
                #[test]
                fn xdp_v4() {
                    super::$name(Hook::Xdp, &V4)
                }
                #[test]
                fn tc_v6() {
                    super::$name(Hook::Tc, &V6)
                }
                #[test]
                fn xdp_v6() {
                    super::$name(Hook::Xdp, &V6)
                }
            }
        )*
    };
}

for_both_hooks_and_families!(
    off_cluster_source_is_masqueraded,
    cluster_source_keeps_its_source,
    without_cidr_nothing_changes,
    nodeport_is_not_flagged,
);

/// A harness with `cfg` and the ClusterIP frontend `c.vip` (TCP, svc 1, `flags`) on the one
/// backend; returns the harness and the backend id.
fn setup<A: Ip>(hook: Hook, c: &Case<A>, cfg: Config, flags: u16) -> (Harness, u32) {
    let mut h = Harness::new(hook, "cidr");
    h.write_config(cfg);
    let ids = h.add_frontend(c.vip, PROTO_TCP, 1, &[c.backend], flags, KIND_CLUSTER_IP);
    (h, ids[0])
}

/// Offset of the L4 header in the test frames.
fn l4<A: Ip>() -> usize {
    match A::FAMILY {
        Family::V4 => 34,
        Family::V6 => L4,
    }
}

/// Independent checksum check of an output frame.
#[track_caller]
fn verify<A: Ip>(f: &[u8]) {
    match A::FAMILY {
        Family::V4 => verify_checksums(f),
        Family::V6 => verify6(f),
    };
}

/// Runs `p`, expects it NATed into exactly `want` (checksums verified independently).
#[track_caller]
fn assert_nat<A: Ip>(h: &Harness, p: &Pkt<A>, want: &Pkt<A>) -> Vec<u8> {
    let (verdict, out) = h.run(&p.build());
    assert_eq!(verdict, h.hook.nat(), "verdict");
    assert_frame_eq(&out, &want.build());
    verify::<A>(&out);
    out
}

/// `e` without SNAT source: all zeros, as the datapath leaves a flow that keeps its source.
fn no_snat(e: CtEntry) -> CtEntry {
    CtEntry {
        snat_addr: [0; 16],
        snat_port: 0,
        ..e
    }
}

/// A SYN (MSS option, payload) from `src` to the VIP, and a later data packet.
fn syn<A: Ip>(c: &Case<A>, src: (A, u16)) -> Pkt<A> {
    tcp(src, c.vip, SYN)
        .tcp_opts(&[2, 4, 0x05, 0xb4])
        .payload(b"x")
}

/// 1. A source outside the cluster CIDR to a `FE_MASQ_OFF_CLUSTER` ClusterIP: masqueraded to
///    the node address with a port from the SNAT range, both conntrack directions carry
///    `CT_SNAT`, the backend's reply goes back to the client from the VIP, and later packets
///    keep the port. Counted as `snat_off_cluster`, not as `snat`.
fn off_cluster_source_is_masqueraded<A: Ip>(hook: Hook, c: &Case<A>) {
    let (mut h, id) = setup(hook, c, (c.config)(true), FE_MASQ_OFF_CLUSTER);
    for (n, &src) in c.outside.iter().enumerate() {
        let syn = syn(c, src);
        let (verdict, out) = h.run(&syn.build());
        assert_eq!(verdict, hook.nat(), "verdict for {src:?}");
        let p = be16(&out, l4::<A>());
        assert!(
            (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
            "SNAT port {p} for {src:?}"
        );
        assert_frame_eq(&out, &syn.clone().src((c.node, p)).dst(c.backend).build());
        verify::<A>(&out);
        assert_eq!(
            h.ct_get(ct_key(src, c.vip, PROTO_TCP)),
            Some(ct_entry(
                c.backend,
                CT_FORWARD | CT_SNAT,
                1,
                id,
                (c.node, p)
            )),
            "forward entry of {src:?}"
        );
        assert_eq!(
            h.ct_get(ct_key(c.backend, (c.node, p), PROTO_TCP)),
            Some(ct_entry(c.vip, CT_REPLY | CT_SNAT, 1, id, src)),
            "reply entry of {src:?}"
        );
        assert_eq!(h.conntrack().len(), 2 * (n + 1));
        assert_counters(&h, &[(CNT_SNAT_OFF_CLUSTER, n as u64 + 1)]);

        let synack = tcp(c.backend, (c.node, p), SYN | ACK);
        assert_nat(&h, &synack, &synack.clone().src(c.vip).dst(src));
        let data = tcp(src, c.vip, ACK).payload(b"GET / HTTP/1.1\r\n\r\n");
        assert_nat(&h, &data, &data.clone().src((c.node, p)).dst(c.backend));
    }
    assert_eq!(h.conntrack().len(), 4);
    assert_counters(&h, &[(CNT_SNAT_OFF_CLUSTER, 2)]);
}

/// 2. Sources inside the CIDR (a pod, the CIDR's last address) keep their address and port: the
///    flow is DNATed only, its entries carry no `CT_SNAT`, and no counter moves.
fn cluster_source_keeps_its_source<A: Ip>(hook: Hook, c: &Case<A>) {
    let (mut h, id) = setup(hook, c, (c.config)(true), FE_MASQ_OFF_CLUSTER);
    for &src in &c.inside {
        let syn = syn(c, src);
        assert_nat(&h, &syn, &syn.clone().dst(c.backend));
        let want_fwd = no_snat(ct_entry(c.backend, CT_FORWARD, 1, id, src));
        assert_eq!(h.ct_get(ct_key(src, c.vip, PROTO_TCP)), Some(want_fwd));
        let want_rev = no_snat(ct_entry(c.vip, CT_REPLY, 1, id, src));
        assert_eq!(h.ct_get(ct_key(c.backend, src, PROTO_TCP)), Some(want_rev));
        let synack = tcp(c.backend, src, SYN | ACK);
        assert_nat(&h, &synack, &synack.clone().src(c.vip));
    }
    assert_eq!(h.conntrack().len(), 4);
    assert_counters(&h, &[]);
}

/// 3. Without a cluster CIDR the agent sets no `FE_MASQ_OFF_CLUSTER` and the config's prefix is
///    all zeros: an off-cluster source to the ClusterIP is DNATed only, as before. A frontend
///    with the flag but a zero prefix (which matches everything) masquerades nothing either.
fn without_cidr_nothing_changes<A: Ip>(hook: Hook, c: &Case<A>) {
    for flags in [0, FE_MASQ_OFF_CLUSTER] {
        let (mut h, _) = setup(hook, c, (c.config)(false), flags);
        for &src in c.outside.iter().chain(&c.inside) {
            let syn = syn(c, src);
            assert_nat(&h, &syn, &syn.clone().dst(c.backend));
            let fwd = h
                .ct_get(ct_key(src, c.vip, PROTO_TCP))
                .expect("forward entry");
            assert_eq!(fwd.flags, CT_FORWARD, "flags {flags}, source {src:?}");
        }
        assert_eq!(h.conntrack().len(), 8);
        assert_counters(&h, &[]);
    }
}

/// 4. The cluster CIDR only concerns frontends with the flag: a NodePort without `FE_SNAT`
///    (externalTrafficPolicy Local) keeps an off-cluster client's source although the config
///    holds a CIDR.
fn nodeport_is_not_flagged<A: Ip>(hook: Hook, c: &Case<A>) {
    let mut h = Harness::new(hook, "cidr");
    h.write_config((c.config)(true));
    let np = (c.node, 30080);
    h.add_frontend(np, PROTO_TCP, 2, &[c.backend], 0, KIND_NODE_PORT);
    let src = c.outside[0];
    let syn = tcp(src, np, SYN).payload(b"x");
    assert_nat(&h, &syn, &syn.clone().dst(c.backend));
    assert_counters(&h, &[]);
}
