//! IPv6 packet-level tests of the TC program `podlb_tc_pod`, the XDP program `podlb_xdp_ext`
//! and the TC egress program `podlb_tc_egress`, through BPF_PROG_TEST_RUN.
//!
//! The approach of the IPv4 tests (`tc.rs`, `xdp.rs`,
//! `sctp.rs`, `icmp.rs`): every test loads its own copy of the eBPF
//! object (private maps, nothing pinned), fills the maps with IPv6 state (family
//! `FAMILY_V6`), runs hand-built Ethernet + IPv6 frames and checks the verdict, the output
//! bytes (byte-exact against a frame built from scratch with freshly computed checksums, and an
//! independent checksum verifier: TCP, UDP and ICMPv6 under the pseudo-header of RFC 8200
//! section 8.1, SCTP's CRC32c), conntrack and counters. Builders and verifiers are in
//! `testkit::frame`.
//!
//! Most scenarios run once per hook: `<scenario>::tc` and `<scenario>::xdp`. The XDP harness
//! owns a fresh network namespace: with no routes there a NATed packet is `XDP_PASS`ed; the
//! forwarding test adds routes and neighbours to get `XDP_TX`.
//! They need root and fail (never skip) without it.

use std::{net::Ipv6Addr, ops::Range};

use crate::harness::*;
use testkit::frame::*;

use lb_common::*;

/// An IPv4 (address, port) pair, for the family-isolation cases.
#[allow(unused_qualifications)]
type Addr4 = testkit::frame::Addr;

const fn ip6(s: [u16; 8]) -> [u8; 16] {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]).octets()
}

/// A pod client, the ClusterIP and its frontends.
const CLIENT: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 5]), 40000);
const VIP: [u8; 16] = ip6([0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10]);
const SVC: Addr6 = (VIP, 80);
const DNS_SVC: Addr6 = (VIP, 53);
const SCTP_SVC: Addr6 = (VIP, 3868);
/// Backends (pods).
const BE1: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 0x11]), 8080);
const BE2: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 0x12]), 8080);
const DNS_BE: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 0x21]), 5353);
/// An SCTP backend on another port (the CRC32c must be recomputed) and one on the Service port.
const SCTP_BE: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 0x31]), 3869);
const SCTP_BE_SAME: Addr6 = (ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 0x32]), 3868);
/// The node's IPv6 address (SNAT source, NodePort address), its IPv4 one, an external client.
const NODE: [u8; 16] = ip6([0xfd00, 0x77, 0, 0, 0, 0, 0, 1]);
const NODE4: [u8; 4] = [192, 168, 77, 1];
const NODE_PORT: Addr6 = (NODE, 30080);
const EXT: Addr6 = (ip6([0xfd00, 0x77, 0, 0, 0, 0, 0, 2]), 40000);
/// A router between client and backend: it sends ICMPv6 errors and is not NATed.
const ROUTER: [u8; 16] = ip6([0xfd00, 0x244, 0, 0, 0, 0, 0, 1]);
/// MSS 1440.
const MSS: [u8; 4] = [2, 4, 0x05, 0xa0];

/// Byte ranges of a frame without extension headers.
const SRC: Range<usize> = IP6_SRC..IP6_SRC + 16;
const DST: Range<usize> = IP6_DST..IP6_DST + 16;
const SPORT: Range<usize> = L4..L4 + 2;
const DPORT: Range<usize> = L4 + 2..L4 + 4;
const TCP_CSUM: Range<usize> = L4 + 16..L4 + 18;
const UDP_CSUM: Range<usize> = L4 + 6..L4 + 8;
const SCTP_CRC: Range<usize> = L4 + 8..L4 + 12;

const SNAT_PORTS: std::ops::RangeInclusive<u16> = SNAT_PORT_MIN..=SNAT_PORT_MAX;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// ClusterIP [fd00:96::10]:80/TCP -> `backends`, svc 1.
fn web(h: &mut Harness, backends: &[Addr6]) -> Vec<u32> {
    h.add_frontend(SVC, PROTO_TCP, 1, backends, 0, KIND_CLUSTER_IP)
}

/// Runs `p` and expects it NATed (TC: next program; XDP: no route, passed) into exactly
/// `want`, built from scratch; the checksum (or CRC32c) is also verified independently.
/// Returns (input, output).
#[track_caller]
fn assert_nat(h: &Harness, p: &Pkt6, want: &Pkt6) -> (Vec<u8>, Vec<u8>) {
    let input = p.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.nat(), "verdict");
    assert_frame_eq(&out, &want.build());
    verify_l4(&out);
    (input, out)
}

/// Independent L4 check of an output frame: CRC32c for SCTP, else the Internet checksum.
#[track_caller]
fn verify_l4(f: &[u8]) {
    if f[IP6_NEXT] == PROTO_SCTP {
        verify_sctp6(f);
    } else {
        verify6(f);
    }
}

/// Expects only bytes in `allowed` to differ between `input` and `out`.
#[track_caller]
fn assert_changed_only(input: &[u8], out: &[u8], allowed: &[Range<usize>]) {
    let c = changed(input, out);
    assert!(
        c.iter().all(|i| allowed.iter().any(|r| r.contains(i))),
        "unexpected bytes changed: {c:?} (allowed {allowed:?})"
    );
}

#[track_caller]
fn snat_port(out: &[u8]) -> u16 {
    let p = be16(out, L4);
    assert!(SNAT_PORTS.contains(&p), "SNAT port {p} out of range");
    p
}

for_both_hooks!(
    clusterip_syn_is_dnatted,
    reply_is_reverse_natted,
    established_flow_sticks_to_its_backend,
    udp_is_dnatted_with_valid_checksum,
    sctp_port_change_recomputes_crc,
    sctp_address_only_change_keeps_crc,
    nodeport_snat_masquerades_and_reverses,
    no_snat_without_snat_addr6,
    exhausted_snat_port_range_drops,
    hairpin_is_source_natted,
    tcp_to_frontend_without_backends_is_reset,
    udp_and_sctp_without_backends_get_port_unreachable,
    unexposed_clusterip_port_is_rejected,
    drop_empty_frontend_drops,
    families_are_isolated,
    malformed_and_unsupported_ipv6_passes_unchanged,
    icmp6_packet_too_big_from_router,
    icmp6_port_unreachable_from_backend,
    icmp6_masqueraded_errors,
    icmp6_time_exceeded_from_router,
    icmp6_untranslated_is_untouched,
    icmp6_quote_truncated_by_payload_length_is_untouched,
    icmp6_error_about_reply_goes_to_backend,
    icmp6_error_about_masqueraded_reply_goes_to_backend,
);

// ---------------------------------------------------------------------------------------------
// DNAT, reverse NAT, conntrack.

/// 1. A SYN (MSS option, payload) to [fd00:96::10]:80 is DNATed to the backend: only the
///    destination address and port and the TCP checksum change (traffic class, flow label,
///    hop limit and the Ethernet header are left alone); both conntrack entries are recorded
///    with family 6.
fn clusterip_syn_is_dnatted(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let ids = web(&mut h, &[BE1]);
    let syn = tcp(CLIENT, SVC, SYN)
        .tcp_opts(&MSS)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let (input, out) = assert_nat(&h, &syn, &syn.clone().dst(BE1));
    assert_changed_only(&input, &out, &[DST, DPORT, TCP_CSUM]);
    assert_eq!(addr16(&out, IP6_DST), BE1.0, "destination address");
    assert_eq!(be16(&out, L4 + 2), BE1.1, "destination port");
    assert_eq!(addr16(&out, IP6_SRC), CLIENT.0, "source address");
    assert_eq!(be16(&out, L4), CLIENT.1, "source port");
    assert_eq!(
        &out[..IP6_SRC],
        &input[..IP6_SRC],
        "Ethernet and fixed IPv6 fields"
    );

    let fwd = h.ct_get(ct_key(CLIENT, SVC, PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], NO_SNAT6)));
    let reply = h.ct_get(ct_key(BE1, CLIENT, PROTO_TCP));
    assert_eq!(reply, Some(ct_entry(SVC, CT_REPLY, 1, ids[0], NO_SNAT6)));
    let ct = h.conntrack();
    assert_eq!(ct.len(), 2, "exactly two conntrack entries: {ct:?}");
    assert!(ct.iter().all(|(k, _)| k.family == FAMILY_V6));

    let s = h.stats(1);
    assert_eq!((s.packets, s.bytes), (1, input.len() as u64));
    assert_counters(&h, &[]);
}

/// 2. The backend's reply gets the VIP and Service port back as its source; a packet from
///    the backend to another client port is no reply and is left alone.
fn reply_is_reverse_natted(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    web(&mut h, &[BE1]);
    let syn = tcp(CLIENT, SVC, SYN);
    assert_nat(&h, &syn, &syn.clone().dst(BE1));

    let synack = tcp(BE1, CLIENT, SYN | ACK).tcp_opts(&MSS);
    let (input, out) = assert_nat(&h, &synack, &synack.clone().src(SVC));
    assert_changed_only(&input, &out, &[SRC, SPORT, TCP_CSUM]);
    let data = tcp(BE1, CLIENT, ACK).payload(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_nat(&h, &data, &data.clone().src(SVC));
    assert_eq!(h.stats(1).packets, 3, "replies are counted too");

    assert_untouched(&h, &tcp(BE1, (CLIENT.0, 40001), ACK).build());
    assert_untouched(&h, &tcp((BE1.0, 8081), CLIENT, ACK).build());
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[]);
}

/// 3. An established flow stays on its backend when the service grows, and when its backend
///    leaves the Service (TCP); a new SYN on the tuple moves to a live backend. Bytes after the datagram (beyond the payload length) are neither
///    checksummed nor changed.
fn established_flow_sticks_to_its_backend(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let ids = web(&mut h, &[BE1]);
    let syn = tcp(CLIENT, SVC, SYN);
    assert_nat(&h, &syn, &syn.clone().dst(BE1));

    let id2 = h.new_backend(BE2, PROTO_TCP);
    h.set_frontend(SVC, PROTO_TCP, 1, &[ids[0], id2], 0);
    let ack = tcp(CLIENT, SVC, ACK).payload(b"data");
    for _ in 0..20 {
        assert_nat(&h, &ack, &ack.clone().dst(BE1));
    }
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SVC, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], NO_SNAT6))
    );

    // BE1 leaves as the reconciler removes it: slots first, then the backend entry is zeroed.
    // The established connection stays on BE1 (as with kube-proxy's conntrack); a SYN on the
    // same tuple is a new connection and moves.
    h.set_frontend(SVC, PROTO_TCP, 1, &[id2], 0);
    h.set_backend(ids[0], Backend::default());
    assert_nat(&h, &ack, &ack.clone().dst(BE1));
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SVC, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], NO_SNAT6))
    );
    assert_nat(&h, &syn, &syn.clone().dst(BE2));
    assert_nat(&h, &ack, &ack.clone().dst(BE2));
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SVC, PROTO_TCP)),
        Some(ct_entry(BE2, CT_FORWARD, 1, id2, NO_SNAT6))
    );
    let reply = tcp(BE2, CLIENT, ACK);
    assert_nat(&h, &reply, &reply.clone().src(SVC));

    // A trailer after the datagram stays as it was and is not checksummed.
    let trailer = [0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99];
    let mut input = ack.build();
    input.extend(trailer);
    let mut want = ack.clone().dst(BE2).build();
    want.extend(trailer);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.nat());
    assert_frame_eq(&out, &want);
    verify6(&out);
    assert_counters(&h, &[]);
}

/// 4. UDP (checksum mandatory over IPv6): a datagram of odd length is DNATed with a valid,
///    non-zero checksum, and so is its reply; a rewrite whose checksum computes to zero is
///    sent as 0xffff, never as 0 ("no checksum", invalid over IPv6).
fn udp_is_dnatted_with_valid_checksum(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let ids = h.add_frontend(DNS_SVC, PROTO_UDP, 2, &[DNS_BE], 0, KIND_CLUSTER_IP);
    let q = udp(CLIENT, DNS_SVC).payload(b"hello");
    let (input, out) = assert_nat(&h, &q, &q.clone().dst(DNS_BE));
    assert_changed_only(&input, &out, &[DST, DPORT, UDP_CSUM]);
    assert_ne!(be16(&out, L4 + 6), 0);
    assert_eq!(
        h.ct_get(ct_key(CLIENT, DNS_SVC, PROTO_UDP)),
        Some(ct_entry(DNS_BE, CT_FORWARD, 2, ids[0], NO_SNAT6))
    );
    assert_eq!(
        h.ct_get(ct_key(DNS_BE, CLIENT, PROTO_UDP)),
        Some(ct_entry(DNS_SVC, CT_REPLY, 2, ids[0], NO_SNAT6))
    );
    let a = udp(DNS_BE, CLIENT).payload(b"answer");
    let (input, out) = assert_nat(&h, &a, &a.clone().src(DNS_SVC));
    assert_changed_only(&input, &out, &[SRC, SPORT, UDP_CSUM]);

    // Choose the first payload word so that the rewritten datagram's checksum computes to 0.
    let c1: Addr6 = (CLIENT.0, 40003);
    let mut l4 = udp(c1, DNS_BE).payload(&[0, 0, 7, 7]).l4();
    l4[6..8].fill(0);
    let s = !csum6(&c1.0, &DNS_BE.0, PROTO_UDP, &l4); // the folded sum
    let w = (0xffff - s).to_be_bytes();
    let q1 = udp(c1, DNS_SVC).payload(&[w[0], w[1], 7, 7]);
    let want = q1.clone().dst(DNS_BE);
    let mut check = want.l4();
    check[6..8].fill(0);
    assert_eq!(csum6(&c1.0, &DNS_BE.0, PROTO_UDP, &check), 0, "test setup");
    let (_, out) = assert_nat(&h, &q1, &want);
    assert_eq!(
        be16(&out, L4 + 6),
        0xffff,
        "computed zero must be sent as 0xffff"
    );

    // A zero ("none") checksum is invalid over IPv6 and the receiver drops the datagram; the
    // program leaves it zero, as Linux's NAT does (nf_nat_proto.c: udp_manip_pkt updates the
    // checksum only when it is non-zero), rather than turning it into a valid datagram.
    let q0 = udp((CLIENT.0, 40004), DNS_SVC)
        .payload(b"hello")
        .no_udp_csum();
    let (verdict, out) = h.run(&q0.build());
    assert_eq!(verdict, h.hook.nat());
    assert_frame_eq(&out, &q0.clone().dst(DNS_BE).build());
    assert_eq!(be16(&out, L4 + 6), 0, "zero checksum left as it was");
    assert_counters(&h, &[]);
}

// ---------------------------------------------------------------------------------------------
// SCTP.

/// 5. SCTP over IPv6, DNAT to a backend on another port: the CRC32c is recomputed (and valid),
///    for the INIT, DATA of several lengths and the reverse-NATed INIT-ACK.
fn sctp_port_change_recomputes_crc(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let ids = h.add_frontend(SCTP_SVC, PROTO_SCTP, 4, &[SCTP_BE], 0, KIND_CLUSTER_IP);
    let init = sctp(CLIENT, SCTP_SVC, 0, init_chunk(0x1a2b_3c4d));
    let (input, out) = assert_nat(&h, &init, &init.clone().dst(SCTP_BE));
    assert_changed_only(&input, &out, &[DST, DPORT, SCTP_CRC]);
    assert_ne!(crc_field6(&out), crc_field6(&input), "CRC32c recomputed");
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SCTP_SVC, PROTO_SCTP)),
        Some(ct_entry(SCTP_BE, CT_FORWARD, 4, ids[0], NO_SNAT6))
    );
    assert_eq!(
        h.ct_get(ct_key(SCTP_BE, CLIENT, PROTO_SCTP)),
        Some(ct_entry(SCTP_SVC, CT_REPLY, 4, ids[0], NO_SNAT6))
    );
    for (tsn, n) in [0, 1, 3, 5, 8, 100, 1000].into_iter().enumerate() {
        let d = sctp(
            CLIENT,
            SCTP_SVC,
            0x5e6f_7081,
            data_chunk(tsn as u32, &payload(n), true),
        );
        let (input, out) = assert_nat(&h, &d, &d.clone().dst(SCTP_BE));
        assert_changed_only(&input, &out, &[DST, DPORT, SCTP_CRC]);
    }
    let ack = sctp(SCTP_BE, CLIENT, 0x1a2b_3c4d, init_ack_chunk(0x5e6f_7081));
    let (input, out) = assert_nat(&h, &ack, &ack.clone().src(SCTP_SVC));
    assert_changed_only(&input, &out, &[SRC, SPORT, SCTP_CRC]);
    assert_ne!(crc_field6(&out), crc_field6(&input), "CRC32c recomputed");
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[]);

    // The frame ends before the payload length says (chunks cut off): the CRC32c cannot be
    // computed, so the packet is dropped as a NAT error rather than sent with a wrong CRC.
    let full = sctp(CLIENT, SCTP_SVC, 7, data_chunk(9, &payload(40), true)).build();
    for n in [12, 16, 30] {
        let (verdict, _) = h.run(&full[..L4 + n]);
        assert_eq!(verdict, hook.drop(), "{n} SCTP bytes present: verdict");
    }
    assert_counters(&h, &[(CNT_NAT_ERROR, 3)]);

    // A NodePort with FE_SNAT: both ports change; the reply is mapped back.
    h.set_config6(NODE4, NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let np: Addr6 = (NODE, 30868);
    h.add_frontend(np, PROTO_SCTP, 5, &[SCTP_BE], FE_SNAT, KIND_NODE_PORT);
    let init = sctp(EXT, np, 0, init_chunk(0x1a2b_3c4d));
    let input = init.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, hook.nat());
    verify_sctp6(&out);
    let p = snat_port(&out);
    assert_frame_eq(&out, &init.clone().src((NODE, p)).dst(SCTP_BE).build());
    assert_changed_only(&input, &out, &[SRC, DST, SPORT, DPORT, SCTP_CRC]);
    let ack = sctp(SCTP_BE, (NODE, p), 0x1a2b_3c4d, init_ack_chunk(0x5e6f_7081));
    assert_nat(&h, &ack, &ack.clone().src(np).dst(EXT));
    assert_counters(&h, &[(CNT_NAT_ERROR, 3), (CNT_SNAT, 1)]);
}

/// 5b. Backend on the Service port: only addresses change, which the CRC32c does not cover,
///     so it stays as it was, both ways.
fn sctp_address_only_change_keeps_crc(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.add_frontend(SCTP_SVC, PROTO_SCTP, 4, &[SCTP_BE_SAME], 0, KIND_CLUSTER_IP);
    let init = sctp(CLIENT, SCTP_SVC, 0, init_chunk(0x1a2b_3c4d));
    let (input, out) = assert_nat(&h, &init, &init.clone().dst(SCTP_BE_SAME));
    assert_changed_only(&input, &out, &[DST]);
    assert_eq!(crc_field6(&out), crc_field6(&input), "CRC32c unchanged");
    let d = sctp(CLIENT, SCTP_SVC, 9, data_chunk(1, &payload(13), true));
    let (input, out) = assert_nat(&h, &d, &d.clone().dst(SCTP_BE_SAME));
    assert_eq!(crc_field6(&out), crc_field6(&input), "CRC32c unchanged");
    let ack = sctp(SCTP_BE_SAME, CLIENT, 0x1a2b_3c4d, init_ack_chunk(7));
    let (input, out) = assert_nat(&h, &ack, &ack.clone().src(SCTP_SVC));
    assert_changed_only(&input, &out, &[SRC]);
    assert_eq!(crc_field6(&out), crc_field6(&input), "CRC32c unchanged");
    assert_counters(&h, &[]);
}

// ---------------------------------------------------------------------------------------------
// SNAT: NodePort masquerade and hairpin.

/// 6. NodePort [fd00:77::1]:30080 with FE_SNAT: the client becomes [fd00:77::1]:P with P from
///    the SNAT range (snat_addr6), recorded in both conntrack directions; the reply is mapped
///    back to the client; later packets keep P. UDP too.
fn nodeport_snat_masquerades_and_reverses(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.set_config6(NODE4, NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS).payload(b"x");
    let input = syn.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, hook.nat(), "verdict");
    let p = snat_port(&out);
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify6(&out);
    assert_changed_only(&input, &out, &[SRC, DST, SPORT, DPORT, TCP_CSUM]);
    if hook == Hook::Xdp {
        assert_eq!(
            &out[..IP6_SRC],
            &input[..IP6_SRC],
            "MACs and hop limit kept on XDP_PASS"
        );
    }
    assert_eq!(
        h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, ids[0], (NODE, p)))
    );
    assert_eq!(
        h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP)),
        Some(ct_entry(NODE_PORT, CT_REPLY | CT_SNAT, 3, ids[0], EXT))
    );
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);

    let synack = tcp(BE1, (NODE, p), SYN | ACK).tcp_opts(&MSS);
    let (input, out) = assert_nat(&h, &synack, &synack.clone().src(NODE_PORT).dst(EXT));
    assert_changed_only(&input, &out, &[SRC, DST, SPORT, DPORT, TCP_CSUM]);
    let data = tcp(EXT, NODE_PORT, ACK).payload(b"GET / HTTP/1.1\r\n\r\n");
    for _ in 0..3 {
        assert_nat(&h, &data, &data.clone().src((NODE, p)).dst(BE1));
    }
    // From the backend to another node port: no flow.
    let other = if p == SNAT_PORT_MAX { p - 1 } else { p + 1 };
    assert_untouched(&h, &tcp(BE1, (NODE, other), ACK).build());
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);

    h.add_frontend(
        (NODE, 30053),
        PROTO_UDP,
        4,
        &[DNS_BE],
        FE_SNAT,
        KIND_NODE_PORT,
    );
    let q = udp(EXT, (NODE, 30053)).payload(b"query");
    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, hook.nat());
    let pu = snat_port(&out);
    assert_frame_eq(&out, &q.clone().src((NODE, pu)).dst(DNS_BE).build());
    verify6(&out);
    let a = udp(DNS_BE, (NODE, pu)).payload(b"answer");
    assert_nat(&h, &a, &a.clone().src((NODE, 30053)).dst(EXT));
    assert_counters(&h, &[(CNT_SNAT, 2)]);
}

/// 6b. snat_addr6 `::` disables IPv6 SNAT even when the IPv4 SNAT address is set: FE_SNAT and
///     hairpin flows are DNATed only. Conversely an IPv6 SNAT address does not enable SNAT of
///     IPv4 flows.
fn no_snat_without_snat_addr6(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.set_config6(NODE4, [0; 16], SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);
    let syn = tcp(EXT, NODE_PORT, SYN);
    assert_nat(&h, &syn, &syn.clone().dst(BE1));
    assert_eq!(
        h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 3, ids[0], NO_SNAT6))
    );
    assert_eq!(
        h.ct_get(ct_key(BE1, EXT, PROTO_TCP)),
        Some(ct_entry(NODE_PORT, CT_REPLY, 3, ids[0], NO_SNAT6))
    );
    let reply = tcp(BE1, EXT, SYN | ACK);
    assert_nat(&h, &reply, &reply.clone().src(NODE_PORT));
    // Hairpin without an IPv6 SNAT address.
    web(&mut h, &[BE2]);
    let hp = tcp((BE2.0, 45000), SVC, SYN);
    assert_nat(&h, &hp, &hp.clone().dst(BE2));
    assert_eq!(h.conntrack().len(), 4);
    assert_counters(&h, &[]);

    // Only the IPv6 address set: an IPv4 FE_SNAT flow is not masqueraded.
    h.set_config6([0; 4], NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let be4: Addr4 = ([10, 244, 0, 11], 8080);
    let ext4: Addr4 = ([192, 168, 77, 2], 40000);
    h.add_frontend(
        (NODE4, 30080),
        PROTO_TCP,
        5,
        &[be4],
        FE_SNAT,
        KIND_NODE_PORT,
    );
    let syn4 = tcp(ext4, (NODE4, 30080), SYN);
    let (verdict, out) = h.run(&syn4.build());
    assert_eq!(verdict, hook.nat());
    assert_frame_eq(&out, &syn4.clone().dst(be4).build());
    verify_checksums(&out);
    assert_counters(&h, &[]);
}

/// 6c. A SNAT port range of one port: a second client finds no free port and is dropped
///     (counted), the first flow keeps working; the IPv4 family uses the same range
///     independently (its reply tuples are other keys).
fn exhausted_snat_port_range_drops(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.set_config6(NODE4, NODE, 61000, 61000);
    h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);
    let a = tcp(EXT, NODE_PORT, SYN);
    assert_nat(&h, &a, &a.clone().src((NODE, 61000)).dst(BE1));
    let b = tcp(
        (ip6([0xfd00, 0x77, 0, 0, 0, 0, 0, 3]), 40000),
        NODE_PORT,
        SYN,
    )
    .build();
    assert_dropped(&h, &b);
    assert_counters(&h, &[(CNT_SNAT, 1), (CNT_SNAT_NO_PORT, 1)]);
    assert_eq!(h.conntrack().len(), 2, "no entry for the dropped flow");
    assert_nat(&h, &a, &a.clone().src((NODE, 61000)).dst(BE1));

    let be4: Addr4 = ([10, 244, 0, 11], 8080);
    h.add_frontend(
        (NODE4, 30080),
        PROTO_TCP,
        5,
        &[be4],
        FE_SNAT,
        KIND_NODE_PORT,
    );
    let syn4 = tcp(([192, 168, 77, 2], 40000), (NODE4, 30080), SYN);
    let (verdict, out) = h.run(&syn4.build());
    assert_eq!(verdict, hook.nat());
    assert_frame_eq(&out, &syn4.clone().src((NODE4, 61000)).dst(be4).build());
    assert_counters(&h, &[(CNT_SNAT, 2), (CNT_SNAT_NO_PORT, 1)]);
}

/// 7. Hairpin: a pod reaching the ClusterIP whose chosen backend is itself is source-NATed to
///    snat_addr6; its reply comes back from the VIP; another pod's flow is DNAT only.
fn hairpin_is_source_natted(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.set_config6(NODE4, NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = web(&mut h, &[BE1]);
    let me: Addr6 = (BE1.0, 45000);
    let syn = tcp(me, SVC, SYN).tcp_opts(&MSS);
    let input = syn.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, hook.nat(), "verdict");
    let p = snat_port(&out);
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify6(&out);
    assert_eq!(
        h.ct_get(ct_key(me, SVC, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 1, ids[0], (NODE, p)))
    );
    assert_eq!(
        h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP)),
        Some(ct_entry(SVC, CT_REPLY | CT_SNAT, 1, ids[0], me))
    );
    assert_counters(&h, &[(CNT_HAIRPIN, 1)]);

    let synack = tcp(BE1, (NODE, p), SYN | ACK);
    assert_nat(&h, &synack, &synack.clone().src(SVC).dst(me));

    let other = tcp(CLIENT, SVC, SYN);
    assert_nat(&h, &other, &other.clone().dst(BE1));
    assert_eq!(
        h.ct_get(ct_key(CLIENT, SVC, PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], NO_SNAT6))
    );
    assert_counters(&h, &[(CNT_HAIRPIN, 1)]);
}

// ---------------------------------------------------------------------------------------------
// Reject.

/// 8. TCP to a frontend without backends: a 74-byte RST from [VIP]:80 back to the client (MACs
///    swapped, traffic class and flow label 0, hop limit 64), TC_ACT_REDIRECT / XDP_TX.
///    RFC 793: a segment with ACK gets <SEQ=SEG.ACK><RST>, else <SEQ=0><ACK=SEG.SEQ+SEG.LEN>
///    <RST,ACK> (SYN counts one; bytes after the payload length do not count). A reset is
///    never answered.
fn tcp_to_frontend_without_backends_is_reset(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    web(&mut h, &[]);
    let syn = tcp(CLIENT, SVC, SYN);
    let (seq, ack) = (0x1122_3344u32, 0x5566_7788u32); // what the builder sends
    let mut trailer = syn.build();
    trailer.extend([0xab; 6]);
    let cases = [
        ("SYN", syn.build(), 0, seq + 1, RST | ACK),
        (
            "SYN with MSS",
            syn.clone().tcp_opts(&MSS).build(),
            0,
            seq + 1,
            RST | ACK,
        ),
        ("SYN with a 6-byte trailer", trailer, 0, seq + 1, RST | ACK),
        (
            "SYN with 3 bytes of data",
            syn.clone().payload(b"abc").build(),
            0,
            seq + 4,
            RST | ACK,
        ),
        (
            "FIN with 2 bytes of data",
            tcp(CLIENT, SVC, 0x01).payload(b"ab").build(),
            0,
            seq + 3,
            RST | ACK,
        ),
        (
            "ACK with 10 bytes of data",
            tcp(CLIENT, SVC, ACK).payload(b"0123456789").build(),
            ack,
            0,
            RST,
        ),
    ];
    for (i, (name, input, seq, ack, flags)) in cases.iter().enumerate() {
        let (verdict, out) = h.run(input);
        assert_eq!(verdict, hook.reject(), "{name}: verdict");
        assert_eq!(out.len(), 74, "{name}");
        assert_frame_eq(&out, &rst_for(input, *seq, *ack, *flags));
        verify6(&out);
        assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, i as u64 + 1)]);
    }
    // The fields spelled out once, independently of `rst6_for`.
    let (_, out) = h.run(&syn.build());
    assert_eq!(&out[0..6], &SRC_MAC, "destination MAC: the client's");
    assert_eq!(
        &out[6..12],
        &DST_MAC,
        "source MAC: the one the client sent to"
    );
    assert_eq!(
        &out[12..IP6_SRC],
        &[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64],
        "EtherType, version/class/flow, payload length, next header, hop limit"
    );
    assert_eq!(addr16(&out, IP6_SRC), VIP);
    assert_eq!(addr16(&out, IP6_DST), CLIENT.0);
    assert_eq!((be16(&out, L4), be16(&out, L4 + 2)), (80, CLIENT.1));
    assert_eq!(
        &out[L4 + 4..L4 + 20],
        &[
            0,
            0,
            0,
            0,
            0x11,
            0x22,
            0x33,
            0x45,
            0x50,
            RST | ACK,
            0,
            0,
            out[L4 + 16],
            out[L4 + 17],
            0,
            0
        ]
    );
    let n = cases.len() as u64 + 1;

    // A reset is dropped; it still counts as a rejected packet (as for IPv4).
    for (i, flags) in [RST, RST | ACK].into_iter().enumerate() {
        assert_dropped(&h, &tcp(CLIENT, SVC, flags).build());
        assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, n + i as u64 + 1)]);
    }
    assert!(h.conntrack().is_empty());
}

/// 8b. UDP (and SCTP) to a frontend without backends: a 110-byte ICMPv6 destination
///     unreachable, port unreachable (type 1, code 4) from the VIP, quoting the original IPv6
///     header and the first 8 bytes of its L4 header, with a valid ICMPv6 checksum.
fn udp_and_sctp_without_backends_get_port_unreachable(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.add_frontend(DNS_SVC, PROTO_UDP, 2, &[], 0, KIND_CLUSTER_IP);
    h.add_frontend(SCTP_SVC, PROTO_SCTP, 4, &[], 0, KIND_CLUSTER_IP);
    let mut n = 0;
    let inputs = [
        udp(CLIENT, DNS_SVC).payload(b"query").build(),
        udp(CLIENT, DNS_SVC).payload(&[0xab; 300]).build(),
        udp(CLIENT, DNS_SVC).build(),
        sctp(CLIENT, SCTP_SVC, 0, init_chunk(0x1a2b_3c4d)).build(),
    ];
    for input in &inputs {
        let (verdict, out) = h.run(input);
        assert_eq!(verdict, hook.reject(), "verdict ({} bytes in)", input.len());
        assert_eq!(out.len(), 110);
        assert_frame_eq(&out, &icmp_for(input));
        assert_eq!(verify6(&out), be16(&out, L4 + 2), "ICMPv6 checksum");
        assert_eq!(&out[0..12], &[SRC_MAC, DST_MAC].concat(), "MACs swapped");
        assert_eq!(
            &out[12..IP6_SRC],
            &[0x86, 0xdd, 0x60, 0, 0, 0, 0, 56, IPPROTO_ICMPV6, 64]
        );
        assert_eq!(
            (addr16(&out, IP6_SRC), addr16(&out, IP6_DST)),
            (VIP, CLIENT.0)
        );
        assert_eq!(&out[L4..L4 + 2], &[1, 4], "type 1 code 4");
        assert_eq!(&out[L4 + 4..L4 + 8], &[0; 4], "unused");
        assert_eq!(
            &out[L4 + 8..L4 + 56],
            &input[IP6..L4 + 8],
            "quoted header + 8 bytes"
        );
        n += 1;
        assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, n)]);
    }
    assert!(h.conntrack().is_empty());
}

/// 8c. A v6 ClusterIP (VipKey family 6) on a port it does not expose is rejected (RST, ICMPv6);
///     the exposed port works; an address that is no ClusterIP passes.
fn unexposed_clusterip_port_is_rejected(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    web(&mut h, &[BE1]);
    h.add_vip(VIP);
    let syn81 = tcp(CLIENT, (VIP, 81), SYN).build();
    let (verdict, out) = h.run(&syn81);
    assert_eq!(verdict, hook.reject());
    assert_frame_eq(&out, &rst_for(&syn81, 0, 0x1122_3345, RST | ACK));
    verify6(&out);
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 1)]);
    let dns = udp(CLIENT, DNS_SVC).payload(b"q").build();
    let (verdict, out) = h.run(&dns);
    assert_eq!(verdict, hook.reject());
    assert_frame_eq(&out, &icmp_for(&dns));
    verify6(&out);
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 2)]);

    let syn80 = tcp(CLIENT, SVC, SYN);
    assert_nat(&h, &syn80, &syn80.clone().dst(BE1));
    let reply = tcp(BE1, CLIENT, SYN | ACK);
    assert_nat(&h, &reply, &reply.clone().src(SVC));
    let not_vip = ip6([0xfd00, 0x96, 0, 0, 0, 0, 0, 0x11]);
    assert_untouched(&h, &tcp(CLIENT, (not_vip, 81), SYN).build());
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 2)]);
}

/// 8d. FE_DROP_EMPTY (traffic policy Local) without backends: dropped, counted.
fn drop_empty_frontend_drops(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.add_frontend(
        NODE_PORT,
        PROTO_TCP,
        3,
        &[],
        FE_DROP_EMPTY | FE_SNAT,
        KIND_NODE_PORT,
    );
    h.add_frontend(
        (NODE, 30053),
        PROTO_UDP,
        4,
        &[],
        FE_DROP_EMPTY,
        KIND_NODE_PORT,
    );
    assert_dropped(&h, &tcp(EXT, NODE_PORT, SYN).build());
    assert_counters(&h, &[(CNT_DROP_NO_BACKEND, 1)]);
    assert_dropped(&h, &udp(EXT, (NODE, 30053)).payload(b"q").build());
    assert_counters(&h, &[(CNT_DROP_NO_BACKEND, 2)]);
    assert!(h.conntrack().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Family isolation.

/// 9. Keys carry the family: an IPv6 packet to the IPv4-mapped (::ffff:10.96.0.10) or the
///    first-four-bytes form (a60:a::, the IPv4 address as stored in an `Addr`) of an IPv4
///    frontend, VIP or conntrack entry is not matched, and an IPv4 packet is not matched by
///    an IPv6 frontend, VIP or conntrack entry stored with the same bytes. A slot naming a
///    backend of the other family is never used.
fn families_are_isolated(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    const VIP4: [u8; 4] = [10, 96, 0, 10];
    let be4: Addr4 = ([10, 244, 0, 11], 8080);
    let client4: Addr4 = ([10, 244, 0, 5], 40000);
    h.add_frontend((VIP4, 80), PROTO_TCP, 1, &[be4], 0, KIND_CLUSTER_IP);
    h.add_vip(VIP4);
    let mapped = ip6([0, 0, 0, 0, 0, 0xffff, 0x0a60, 0x000a]);
    let first4 = addr4(VIP4);
    assert_eq!(first4, ip6([0x0a60, 0x000a, 0, 0, 0, 0, 0, 0]));
    for dst in [mapped, first4] {
        for port in [80, 81] {
            assert_untouched(&h, &tcp(CLIENT, (dst, port), SYN).build());
            assert_untouched(
                &h,
                &tcp((addr4(client4.0), client4.1), (dst, port), SYN).build(),
            );
        }
    }
    assert!(h.conntrack().is_empty());

    // An IPv4 flow; an IPv6 "reply" with the same address bytes is not its reply.
    let syn4 = tcp(client4, (VIP4, 80), SYN);
    let (verdict, out) = h.run(&syn4.build());
    assert_eq!(verdict, hook.nat());
    assert_frame_eq(&out, &syn4.clone().dst(be4).build());
    assert_untouched(
        &h,
        &tcp(
            (addr4(be4.0), be4.1),
            (addr4(client4.0), client4.1),
            SYN | ACK,
        )
        .build(),
    );

    // An IPv6 frontend and VIP whose bytes are those of 10.96.0.11 as an `Addr`.
    let vip6 = addr4([10, 96, 0, 11]);
    let be6: Addr6 = (addr4([10, 244, 0, 12]), 8080);
    let c6: Addr6 = (addr4(client4.0), 40001);
    h.add_frontend((vip6, 80), PROTO_TCP, 2, &[be6], 0, KIND_CLUSTER_IP);
    h.add_vip(vip6);
    assert_untouched(&h, &tcp(client4, ([10, 96, 0, 11], 80), SYN).build());
    assert_untouched(&h, &tcp(client4, ([10, 96, 0, 11], 81), SYN).build());
    // The IPv6 frontend works for IPv6, and its reply entry does not match IPv4.
    let syn6 = tcp(c6, (vip6, 80), SYN);
    assert_nat(&h, &syn6, &syn6.clone().dst(be6));
    assert!(h.ct_get(ct_key(be6, c6, PROTO_TCP)).is_some());
    assert_untouched(
        &h,
        &tcp(([10, 244, 0, 12], 8080), (client4.0, 40001), SYN | ACK).build(),
    );
    assert_eq!(h.conntrack().len(), 4);
    assert_counters(&h, &[]);

    // An IPv4 frontend whose only slot names an IPv6 backend: no usable backend.
    let id6 = h.new_backend(BE1, PROTO_TCP);
    h.write_frontend(
        ([10, 96, 0, 12], 80),
        PROTO_TCP,
        7,
        &[id6],
        0,
        KIND_CLUSTER_IP,
    );
    let syn = tcp(client4, ([10, 96, 0, 12], 80), SYN).build();
    let (verdict, out) = h.run(&syn);
    assert_eq!(
        verdict,
        hook.reject(),
        "not NATed to an address of the other family"
    );
    assert_frame_eq(&out, &rst_for(&syn, 0, 0x1122_3345, RST | ACK));
    // And the reverse: an IPv6 frontend naming an IPv4 backend.
    let id4 = h.new_backend(be4, PROTO_TCP);
    let fe = (ip6([0xfd00, 0x96, 0, 0, 0, 0, 0, 0x12]), 80);
    h.write_frontend(fe, PROTO_TCP, 8, &[id4], 0, KIND_CLUSTER_IP);
    let syn = tcp(CLIENT, fe, SYN).build();
    let (verdict, out) = h.run(&syn);
    assert_eq!(
        verdict,
        hook.reject(),
        "not NATed to an address of the other family"
    );
    assert_frame_eq(&out, &rst_for(&syn, 0, 0x1122_3345, RST | ACK));
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, 2)]);
    assert_eq!(h.conntrack().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// Malformed and unsupported IPv6.

/// 10. Truncated headers, payload lengths shorter than the L4 header, extension headers
///     (hop-by-hop, fragment, destination options) before the L4 header, a wrong version
///     nibble, other next headers: passed unchanged, byte for byte, to a VIP that has
///     frontends for TCP, UDP and SCTP (and is a VipKey, so a parsed packet to a wrong port
///     would be rejected); no conntrack, no counters.
fn malformed_and_unsupported_ipv6_passes_unchanged(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    web(&mut h, &[BE1]);
    h.add_frontend(DNS_SVC, PROTO_UDP, 2, &[DNS_BE], 0, KIND_CLUSTER_IP);
    h.add_frontend(SCTP_SVC, PROTO_SCTP, 4, &[SCTP_BE], 0, KIND_CLUSTER_IP);
    h.add_vip(VIP);
    let syn = tcp(CLIENT, SVC, SYN).build();
    let dns = udp(CLIENT, DNS_SVC).payload(b"query").build();
    let init = sctp(CLIENT, SCTP_SVC, 0, init_chunk(1)).build();
    let plen =
        |f: &[u8], n: u16| patch(f.to_vec(), |ip| ip[4..6].copy_from_slice(&n.to_be_bytes()));
    let version = |v: u8| patch(syn.clone(), |ip| ip[0] = (v << 4) | (ip[0] & 0x0f));
    let pad = |mut f: Vec<u8>, n: usize| {
        f.resize(n, 0);
        f
    };
    let mut ethertype4 = syn.clone();
    ethertype4[12..14].copy_from_slice(&[0x08, 0x00]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", syn[..14].to_vec()),
        ("IPv6 header cut to 20 bytes", syn[..IP6 + 20].to_vec()),
        ("IPv6 header cut to 39 bytes", syn[..IP6 + 39].to_vec()),
        ("IPv6 header only, payload length 0", cut_l4(&syn, 0)),
        ("8 bytes of TCP", cut_l4(&syn, 8)),
        ("19 bytes of TCP", cut_l4(&syn, 19)),
        ("19 bytes of TCP + padding", pad(cut_l4(&syn, 19), 100)),
        ("4 bytes of UDP", cut_l4(&dns, 4)),
        ("7 bytes of UDP + padding", pad(cut_l4(&dns, 7), 80)),
        ("11 bytes of SCTP", cut_l4(&init, 11)),
        (
            "payload length 19, whole TCP header in the frame",
            plen(&syn, 19),
        ),
        (
            "payload length 0, whole TCP header in the frame",
            plen(&syn, 0),
        ),
        (
            "payload length 7, whole UDP datagram in the frame",
            plen(&dns, 7),
        ),
        (
            "payload length 11, whole SCTP packet in the frame",
            plen(&init, 11),
        ),
        (
            "payload length 20, frame cut after 19 bytes of TCP",
            plen(&syn[..L4 + 19], 20),
        ),
        (
            "hop-by-hop header before TCP",
            tcp(CLIENT, SVC, SYN).hop_by_hop().build(),
        ),
        (
            "hop-by-hop header before UDP",
            udp(CLIENT, DNS_SVC).payload(b"q").hop_by_hop().build(),
        ),
        (
            "fragment header (first fragment) before TCP",
            tcp(CLIENT, SVC, SYN).fragment(0, true, 0x1234).build(),
        ),
        (
            "atomic fragment before UDP",
            udp(CLIENT, DNS_SVC)
                .payload(b"q")
                .fragment(0, false, 0x1234)
                .build(),
        ),
        (
            "last fragment (offset 185) before UDP-looking bytes",
            udp(CLIENT, DNS_SVC)
                .payload(b"q")
                .fragment(185, false, 0x1234)
                .build(),
        ),
        (
            "destination options before TCP",
            tcp(CLIENT, SVC, SYN).dest_opts().build(),
        ),
        (
            "hop-by-hop and fragment headers before SCTP",
            sctp(CLIENT, SCTP_SVC, 0, init_chunk(1))
                .hop_by_hop()
                .fragment(0, true, 1)
                .build(),
        ),
        ("version 4 in an IPv6 frame", version(4)),
        ("version 0", version(0)),
        ("version 7", version(7)),
        ("IPv6 body with the IPv4 EtherType", ethertype4),
        (
            "next header 59 (no next header)",
            patch(syn.clone(), |ip| ip[6] = NH_NONE),
        ),
        (
            "next header 43 (routing)",
            patch(syn.clone(), |ip| ip[6] = NH_ROUTING),
        ),
        (
            "ICMPv6 echo request to the VIP",
            icmp(CLIENT.0, VIP, 128, 0, [0, 1, 0, 1], b"ping").build(),
        ),
    ];
    let mut failures = Vec::new();
    for (name, input) in &cases {
        match h.try_run(input) {
            Err(_) if input.len() < L4 => eprintln!("{name}: refused by the kernel, skipped"),
            Err(e) => failures.push(format!("{name}: test run failed: {e:?}")),
            Ok((verdict, out)) if verdict == hook.pass() && out == *input => {}
            Ok((verdict, out)) => failures.push(format!(
                "{name}: verdict {verdict:#x}, changed bytes {:?}\n got: {}\nwant: {}",
                (0..out.len().max(input.len()))
                    .filter(|&i| out.get(i) != input.get(i))
                    .collect::<Vec<_>>(),
                hex(&out),
                hex(input)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "not passed unchanged:\n{}",
        failures.join("\n")
    );
    assert!(h.conntrack().is_empty(), "conntrack: {:?}", h.conntrack());
    assert_eq!(
        h.stats(1).packets + h.stats(2).packets + h.stats(4).packets,
        0
    );
    assert_counters(&h, &[]);
}

// ---------------------------------------------------------------------------------------------
// ICMPv6 error translation.

const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_PARAM_PROBLEM: u8 = 4;
const ICMP6_ECHO_REQUEST: u8 = 128;
const CODE_PORT_UNREACH: u8 = 4;
const MTU_1280: [u8; 4] = [0, 0, 0x05, 0x00];

/// "Packet too big" (MTU 1280) from `src` to `dst`, quoting `quote`.
fn packet_too_big(src: [u8; 16], dst: [u8; 16], quote: &[u8]) -> Vec<u8> {
    icmp(src, dst, ICMP6_PACKET_TOO_BIG, 0, MTU_1280, quote).build()
}

/// ClusterIP [VIP]:80/TCP -> BE1 (svc 1); runs the client's SYN and returns (SYN as sent, SYN
/// as emitted: client -> BE1).
fn clusterip_flow(h: &mut Harness) -> (Vec<u8>, Vec<u8>) {
    web(h, &[BE1]);
    let syn = tcp(CLIENT, SVC, SYN)
        .tcp_opts(&MSS)
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let (sent, natted) = assert_nat(h, &syn, &syn.clone().dst(BE1));
    (sent, natted)
}

/// NodePort with FE_SNAT -> BE1 (svc 3); runs the SYN from EXT and returns (SYN as sent, SYN
/// as emitted: [NODE]:P -> BE1).
fn nodeport_flow(h: &mut Harness) -> (Vec<u8>, Vec<u8>) {
    h.set_config6(NODE4, NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS).payload(b"x");
    let sent = syn.build();
    let (verdict, natted) = h.run(&sent);
    assert_eq!(verdict, h.hook.nat(), "SYN verdict");
    let p = snat_port(&natted);
    assert_frame_eq(&natted, &syn.src((NODE, p)).dst(BE1).build());
    (sent, natted)
}

/// The quote the client must get: `n` bytes of the packet as it sent it (IPv6 header and L4),
/// except the L4 checksum, which is left as quoted (receivers do not check it).
fn client_quote(sent: &[u8], natted: &[u8], n: usize) -> Vec<u8> {
    let mut q = quote(sent, n);
    let csum = match sent[IP6_NEXT] {
        PROTO_TCP => 16..18,
        PROTO_UDP => 6..8,
        _ => 0..0, // SCTP: the CRC32c is not covered by a rewrite of the quote
    };
    for i in csum {
        if i < n {
            q[40 + i] = natted[L4 + i];
        }
    }
    q
}

/// Runs `input` and expects it translated into exactly `want` (verdict: NATed, handed on),
/// with a valid ICMPv6 checksum, conntrack unchanged.
#[track_caller]
fn assert_translated(h: &mut Harness, input: &[u8], want: &[u8]) -> Vec<u8> {
    let ct = h.sorted_conntrack();
    let (verdict, out) = h.run(input);
    assert_eq!(verdict, h.hook.nat(), "verdict");
    assert_frame_eq(&out, want);
    verify6(&out);
    assert_eq!(
        h.sorted_conntrack(),
        ct,
        "conntrack changed by an ICMPv6 error"
    );
    out
}

/// Outer source and destination, quoted source and destination (address, port).
fn icmp6_addresses(f: &[u8]) -> ([u8; 16], [u8; 16], Addr6, Addr6) {
    let q = L4 + 8;
    (
        addr16(f, IP6_SRC),
        addr16(f, IP6_DST),
        (addr16(f, q + 8), be16(f, q + 40)),
        (addr16(f, q + 24), be16(f, q + 42)),
    )
}

/// 11. Packet too big (MTU 1280) from a router about client -> backend, quoting the whole
///     SYN: the quote becomes client -> [VIP]:80; outer addresses and MTU unchanged; only the
///     quoted destination, its port and the ICMPv6 checksum change.
fn icmp6_packet_too_big_from_router(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let (sent, natted) = clusterip_flow(&mut h);
    let n = natted.len() - L4;
    let input = packet_too_big(ROUTER, CLIENT.0, &quote(&natted, n));
    let want = packet_too_big(ROUTER, CLIENT.0, &client_quote(&sent, &natted, n));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (ROUTER, CLIENT.0, CLIENT, SVC));
    assert_eq!(&out[L4..L4 + 2], &[2, 0], "type and code");
    assert_eq!(&out[L4 + 4..L4 + 8], &MTU_1280, "MTU");
    let q = L4 + 8;
    assert_changed_only(
        &input,
        &out,
        &[L4 + 2..L4 + 4, q + 24..q + 40, q + 42..q + 44],
    );

    // Only 8 bytes of the L4 header quoted (the minimum the program needs is 4).
    let input = packet_too_big(ROUTER, CLIENT.0, &quote(&natted, 8));
    let want = packet_too_big(ROUTER, CLIENT.0, &quote(&sent, 8));
    assert_translated(&mut h, &input, &want);
    assert_counters(&h, &[]);
}

/// 11b. Port unreachable (type 1, code 4) sent by the backend itself about a UDP flow: the
///      quote becomes client -> [VIP]:53 and the error's source becomes the VIP too. An SCTP
///      and a TCP flow the same way (the latter: code 1, "administratively prohibited").
fn icmp6_port_unreachable_from_backend(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    h.add_frontend(DNS_SVC, PROTO_UDP, 2, &[DNS_BE], 0, KIND_CLUSTER_IP);
    let q = udp(CLIENT, DNS_SVC).payload(b"query");
    let (sent, natted) = assert_nat(&h, &q, &q.clone().dst(DNS_BE));
    let n = natted.len() - L4;
    let input = icmp(
        DNS_BE.0,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&natted, n),
    )
    .build();
    let want = icmp(
        VIP,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &client_quote(&sent, &natted, n),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (VIP, CLIENT.0, CLIENT, DNS_SVC));

    // SCTP: the quote holds ports and verification tag (the CRC32c is not among the 8 bytes).
    h.add_frontend(SCTP_SVC, PROTO_SCTP, 4, &[SCTP_BE], 0, KIND_CLUSTER_IP);
    let init = sctp(CLIENT, SCTP_SVC, 0, init_chunk(0x1a2b_3c4d));
    let (sent, natted) = assert_nat(&h, &init, &init.clone().dst(SCTP_BE));
    let input = icmp(
        SCTP_BE.0,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        VIP,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (VIP, CLIENT.0, CLIENT, SCTP_SVC));

    let (sent, natted) = clusterip_flow(&mut h);
    let input = icmp(
        BE1.0,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        1,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        VIP,
        CLIENT.0,
        ICMP6_DEST_UNREACH,
        1,
        [0; 4],
        &quote(&sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (VIP, CLIENT.0, CLIENT, SVC));
    assert_counters(&h, &[]);
}

/// 11c. Masqueraded NodePort flow ([NODE]:P -> BE1): an error from a router, addressed to the
///      node, goes to the client and quotes EXT -> NodePort; one from the backend itself also
///      comes from the NodePort address.
fn icmp6_masqueraded_errors(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let (sent, natted) = nodeport_flow(&mut h);
    let n = natted.len() - L4;
    let input = packet_too_big(ROUTER, NODE, &quote(&natted, n));
    let want = packet_too_big(ROUTER, EXT.0, &client_quote(&sent, &natted, n));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (ROUTER, EXT.0, EXT, NODE_PORT));

    let input = icmp(
        BE1.0,
        NODE,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        NODE,
        EXT.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (NODE, EXT.0, EXT, NODE_PORT));
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 11d. Time exceeded (hop limit 1 ran out at a router) about client -> backend.
fn icmp6_time_exceeded_from_router(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    web(&mut h, &[BE1]);
    let syn = tcp(CLIENT, SVC, SYN).ttl(1);
    let (sent, natted) = assert_nat(&h, &syn, &syn.clone().dst(BE1));
    let input = icmp(
        ROUTER,
        CLIENT.0,
        ICMP6_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&natted, 8),
    )
    .build();
    let want = icmp(
        ROUTER,
        CLIENT.0,
        ICMP6_TIME_EXCEEDED,
        0,
        [0; 4],
        &quote(&sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (ROUTER, CLIENT.0, CLIENT, SVC));
    assert_eq!(&out[L4..L4 + 2], &[3, 0]);
}

/// 11g. An error about a reply, sent to the VIP (a router on the client's side got
///      [VIP]:80 -> client, too big): it goes to the backend, quoting the reply as the backend
///      sent it, like conntrack's RELATED.
fn icmp6_error_about_reply_goes_to_backend(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    clusterip_flow(&mut h);
    let as_seen = tcp(SVC, CLIENT, SYN | ACK).build();
    let as_sent = tcp(BE1, CLIENT, SYN | ACK).build();
    let input = packet_too_big(ROUTER, VIP, &quote(&as_seen, 8));
    let want = packet_too_big(ROUTER, BE1.0, &quote(&as_sent, 8));
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (ROUTER, BE1.0, BE1, CLIENT));
    assert_counters(&h, &[]);
}

/// 11h. The same for a masqueraded NodePort flow: the client saw [NODE]:30080 -> EXT and
///      answers with port unreachable to the node address; the backend sent BE1 -> [NODE]:P.
fn icmp6_error_about_masqueraded_reply_goes_to_backend(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let (_, natted) = nodeport_flow(&mut h);
    let p = snat_port(&natted);
    let as_seen = tcp(NODE_PORT, EXT, SYN | ACK).build();
    let as_sent = tcp(BE1, (NODE, p), SYN | ACK).build();
    let input = icmp(
        EXT.0,
        NODE,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&as_seen, 8),
    )
    .build();
    let want = icmp(
        EXT.0,
        BE1.0,
        ICMP6_DEST_UNREACH,
        CODE_PORT_UNREACH,
        [0; 4],
        &quote(&as_sent, 8),
    )
    .build();
    let out = assert_translated(&mut h, &input, &want);
    assert_eq!(icmp6_addresses(&out), (EXT.0, BE1.0, BE1, (NODE, p)));
}

/// 11e. Left alone, byte for byte: ICMPv6 that is no error we translate, errors about no flow
///      of ours, and errors we cannot parse safely.
fn icmp6_untranslated_is_untouched(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let (_sent, natted) = clusterip_flow(&mut h);
    let q = quote(&natted, 8);
    let ptb = |q: &[u8]| packet_too_big(ROUTER, CLIENT.0, q);
    let mut bad_version = q.clone();
    bad_version[0] = 0x40;
    let mut with_hbh = tcp(CLIENT, BE1, SYN).hop_by_hop().build()[IP6..].to_vec();
    with_hbh.truncate(40 + 16);
    // The error behind a hop-by-hop header: the outer next header is not ICMPv6.
    let outer_hbh = icmp(ROUTER, CLIENT.0, ICMP6_PACKET_TOO_BIG, 0, MTU_1280, &q)
        .hop_by_hop()
        .build();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "echo request quoting a NATed packet",
            icmp(
                CLIENT.0,
                BE1.0,
                ICMP6_ECHO_REQUEST,
                0,
                [0x12, 0x34, 0, 1],
                &q,
            )
            .build(),
        ),
        (
            "echo reply",
            icmp(BE1.0, CLIENT.0, 129, 0, [0x12, 0x34, 0, 1], &q).build(),
        ),
        (
            "parameter problem",
            icmp(ROUTER, CLIENT.0, ICMP6_PARAM_PROBLEM, 0, [0, 0, 0, 6], &q).build(),
        ),
        (
            "no conntrack entry (other client port)",
            ptb(&quote(&tcp((CLIENT.0, 40001), BE1, SYN).build(), 8)),
        ),
        (
            "no conntrack entry (other backend)",
            ptb(&quote(&tcp(CLIENT, BE2, SYN).build(), 8)),
        ),
        ("quoted version 4", ptb(&bad_version)),
        ("quoted hop-by-hop header before TCP", ptb(&with_hbh)),
        ("quoted IPv6 header cut to 30 bytes", ptb(&q[..30])),
        ("quoted IPv6 header only", ptb(&q[..40])),
        ("quoted L4 header cut to 2 bytes", ptb(&q[..42])),
        ("nothing quoted", ptb(&[])),
        ("outer hop-by-hop header", outer_hbh),
    ];
    let mut failures = Vec::new();
    for (name, input) in cases {
        let (verdict, out) = h.run(&input);
        if verdict != h.hook.pass() || out != input {
            failures.push(format!(
                "{name}: verdict {verdict:#x}, changed at {:?}\n got: {}\nwant: {}",
                (0..out.len().max(input.len()))
                    .filter(|&i| out.get(i) != input.get(i))
                    .collect::<Vec<_>>(),
                hex(&out),
                hex(&input)
            ));
        }
    }
    assert!(failures.is_empty(), "changed:\n{}", failures.join("\n"));
    // Control: the same flow's error is translated in this harness.
    let (verdict, out) = h.run(&ptb(&q));
    assert_eq!(verdict, h.hook.nat());
    assert_eq!(icmp6_addresses(&out).3, SVC, "control case translated");
}

/// 11f. A quote cut short by the payload length (the quoted IPv6 header, no L4 bytes), in a
///      frame with 8 trailing bytes that are the quoted packet's first 8 L4 bytes: those are
///      not part of the datagram (nor covered by the ICMPv6 checksum), so the error is left
///      alone. With 4 L4 bytes inside the payload length it is translated.
fn icmp6_quote_truncated_by_payload_length_is_untouched(hook: Hook) {
    let mut h = Harness::new(hook, "v6");
    let (sent, natted) = clusterip_flow(&mut h);
    let q = quote(&natted, 8);
    let mut input = packet_too_big(ROUTER, CLIENT.0, &q[..40]);
    input.extend(&q[40..48]);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.pass(), "verdict");
    assert_frame_eq(&out, &input);
    // 2 of the 4 port bytes inside the datagram.
    let mut input = packet_too_big(ROUTER, CLIENT.0, &q[..42]);
    input.extend(&q[42..48]);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, h.hook.pass(), "verdict");
    assert_frame_eq(&out, &input);

    // Both ports inside: translated; the trailer is left as it was.
    let mut input = packet_too_big(ROUTER, CLIENT.0, &q[..44]);
    input.extend(&q[44..48]);
    let mut want = packet_too_big(ROUTER, CLIENT.0, &quote(&sent, 4));
    want.extend(&q[44..48]);
    assert_translated(&mut h, &input, &want);
}

// ---------------------------------------------------------------------------------------------
// The TC egress program, loaded into the harness's `Ebpf` (so it shares the maps).

/// 11g. TC egress (errors the node itself generates): a packet too big about client ->
///      backend is translated as at ingress; echo, a SYN to the VIP and a flow's reply are left
///      alone (egress does no load balancing).
#[test]
fn tc_egress_translates_packet_too_big() {
    let mut h = Harness::tc();
    h.load_egress();
    let (sent, natted) = clusterip_flow(&mut h);
    let ct = h.sorted_conntrack();
    let n = natted.len() - L4;
    let input = packet_too_big(ROUTER, CLIENT.0, &quote(&natted, n));
    let want = packet_too_big(ROUTER, CLIENT.0, &client_quote(&sent, &natted, n));
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT, "verdict");
    assert_frame_eq(&out, &want);
    verify6(&out);
    assert_eq!(icmp6_addresses(&out), (ROUTER, CLIENT.0, CLIENT, SVC));
    let (_, ingress_out) = h.run(&input);
    assert_frame_eq(&out, &ingress_out);

    for (name, f) in [
        (
            "echo",
            icmp(
                CLIENT.0,
                BE1.0,
                ICMP6_ECHO_REQUEST,
                0,
                [0, 1, 0, 1],
                &quote(&natted, 8),
            )
            .build(),
        ),
        ("TCP to the VIP", tcp((CLIENT.0, 40005), SVC, SYN).build()),
        ("a flow's reply", tcp(BE1, CLIENT, SYN | ACK).build()),
    ] {
        let (verdict, out) = h.run_egress(&f);
        assert_eq!(verdict, TC_NEXT, "{name}: verdict");
        assert_frame_eq(&out, &f);
    }
    assert_eq!(
        h.sorted_conntrack(),
        ct,
        "conntrack changed by the egress program"
    );
    assert_counters(&h, &[]);
}

/// 11h. TC egress: the masqueraded flow's error from the backend (to the node) goes to the
///      client from the NodePort address.
#[test]
fn tc_egress_translates_masqueraded_error() {
    let mut h = Harness::tc();
    h.load_egress();
    let (sent, natted) = nodeport_flow(&mut h);
    let input = packet_too_big(BE1.0, NODE, &quote(&natted, 8));
    let want = packet_too_big(NODE, EXT.0, &quote(&sent, 8));
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT, "verdict");
    assert_frame_eq(&out, &want);
    verify6(&out);
    assert_eq!(icmp6_addresses(&out), (NODE, EXT.0, EXT, NODE_PORT));
}

/// 11i. TC egress: a quote truncated by the payload length is left alone.
#[test]
fn tc_egress_quote_truncated_by_payload_length_is_untouched() {
    let mut h = Harness::tc();
    h.load_egress();
    let (_sent, natted) = clusterip_flow(&mut h);
    let q = quote(&natted, 8);
    let mut input = packet_too_big(ROUTER, CLIENT.0, &q[..40]);
    input.extend(&q[40..48]);
    let (verdict, out) = h.run_egress(&input);
    assert_eq!(verdict, TC_NEXT, "verdict");
    assert_frame_eq(&out, &input);
}

// ---------------------------------------------------------------------------------------------
// XDP forwarding.

/// 12. bpf_fib_lookup (AF_INET6) forwarding. The test run's ingress device is the veth `up0`
///     of the harness namespace; the backends' prefix is routed via a permanent neighbour on
///     `up0` (XDP_TX: MACs from the FIB, hop limit - 1, checksum unaffected), or via another
///     interface (XDP_PASS, MACs and hop limit untouched). No route, hop limit 1, a packet over
///     the MTU and a next hop without neighbour entry also pass.
#[test]
fn xdp_forward_back_out_of_ingress_interface() {
    let mut h = Harness::new(Hook::Xdp, "v6fwd");
    h.ip(
        "link add up0 address 02:00:00:00:00:01 type veth peer name up0p address 02:00:00:00:00:02",
    );
    h.ip("link add pod0 address 02:00:00:00:00:03 type veth peer name pod0p");
    for dev in ["up0", "up0p", "pod0", "pod0p"] {
        h.ip(&format!("link set {dev} up"));
    }
    h.ns()
        .sysctl(&[("net.ipv6.conf.all.forwarding", "1")])
        .unwrap();
    h.ip("-6 addr add fd00:77::1/64 dev up0 nodad");
    h.ip("-6 addr add fd00:99::1/64 dev pod0 nodad");
    h.ip("-6 neigh add fd00:77::fe lladdr 02:00:00:00:00:fe dev up0 nud permanent");
    h.ip("-6 neigh add fd00:99::2 lladdr 02:00:00:00:00:fd dev pod0 nud permanent");
    h.ingress = Some(h.ifindex("up0"));
    h.set_config6(NODE4, NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.add_frontend(NODE_PORT, PROTO_TCP, 3, &[BE1], FE_SNAT, KIND_NODE_PORT);

    // No route to the backend yet: NATed and passed.
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_PASS, "no route");
    let p = snat_port(&out);
    let natted = syn.clone().src((NODE, p)).dst(BE1);
    assert_frame_eq(&out, &natted.build());

    // Route back out of up0: transmitted from XDP.
    h.ip("-6 route add fd00:244::/64 via fd00:77::fe dev up0");
    let tx_frame = |p: &Pkt6| {
        let mut f = p.clone().ttl(p.ttl - 1).build();
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f
    };
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_TX, "route back out of the ingress interface");
    assert_frame_eq(&out, &tx_frame(&natted));
    verify6(&out);
    assert_eq!(out[IP6_HOP], 63, "hop limit - 1");
    for hop in [2, 255, 128] {
        let s = syn.clone().ttl(hop);
        let (verdict, out) = h.run(&s.build());
        assert_eq!(verdict, XDP_TX, "hop limit {hop}");
        assert_frame_eq(&out, &tx_frame(&natted.clone().ttl(hop)));
        verify6(&out);
    }
    // Hop limit 1: left to the stack (time exceeded).
    let s1 = syn.clone().ttl(1);
    let (verdict, out) = h.run(&s1.build());
    assert_eq!(verdict, XDP_PASS, "hop limit 1");
    assert_frame_eq(&out, &natted.clone().ttl(1).build());
    // Larger than up0's MTU (1500): left to the stack (packet too big).
    let big = tcp(EXT, NODE_PORT, ACK).payload(&[0x5a; 1500]);
    let (verdict, out) = h.run(&big.build());
    assert_eq!(verdict, XDP_PASS, "over the MTU");
    assert_frame_eq(&out, &big.clone().src((NODE, p)).dst(BE1).build());

    // The reply from the backend (on another node behind up0) goes to the client, which is
    // on up0's own prefix: no neighbour entry yet -> passed; then transmitted.
    let r = tcp(BE1, (NODE, p), SYN | ACK);
    let (verdict, out) = h.run(&r.build());
    assert_eq!(verdict, XDP_PASS, "client without neighbour entry");
    assert_frame_eq(&out, &r.clone().src(NODE_PORT).dst(EXT).build());
    h.ip("-6 neigh add fd00:77::2 lladdr 02:00:00:00:00:ee dev up0 nud permanent");
    let (verdict, out) = h.run(&r.build());
    assert_eq!(verdict, XDP_TX, "reply back out of up0");
    let mut want = tx_frame(&r.clone().src(NODE_PORT).dst(EXT));
    want[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xee]);
    assert_frame_eq(&out, &want);
    verify6(&out);

    // Route through another interface (a local pod network): passed, MACs and hop limit kept.
    h.ip("-6 route replace fd00:244::/64 via fd00:99::2 dev pod0");
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_PASS, "route via pod0");
    assert_frame_eq(&out, &natted.build());
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

// ---------------------------------------------------------------------------------------------
// The test's own arithmetic.

/// The checksum helpers: a known-answer vector, and the verifier catches a flipped bit in
/// every part the pseudo-header covers (addresses, length via the payload length, next
/// header) and in the L4 bytes. The CRC32c: RFC 3720 B.4 vectors.
#[test]
fn checksum_helpers_self_test() {
    // A UDP datagram fe80::1:1234 -> fe80::2:80, "abc", computed independently (Python).
    let src = ip6([0xfe80, 0, 0, 0, 0, 0, 0, 1]);
    let dst = ip6([0xfe80, 0, 0, 0, 0, 0, 0, 2]);
    let f = udp((src, 0x1234), (dst, 80)).payload(b"abc").build();
    assert_eq!(
        be16(&f, L4 + 6),
        KNOWN_UDP_CSUM,
        "known-answer UDP checksum"
    );
    assert_eq!(
        pseudo_header6(&src, &dst, PROTO_UDP, 11)[32..],
        [0, 0, 0, 11, 0, 0, 0, PROTO_UDP]
    );
    for p in [
        tcp(CLIENT, SVC, SYN).payload(b"abc"),
        udp(CLIENT, DNS_SVC).payload(b"abc"),
    ] {
        let f = p.build();
        verify6(&f);
        for i in [IP6_SRC + 3, IP6_DST + 15, L4 + 2, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(checksums6(&g).is_err(), "flipped byte {i} not detected");
        }
        let mut g = f.clone();
        g[IP6_HOP] ^= 0x01;
        assert!(checksums6(&g).is_ok(), "the hop limit is not covered");
        let mut g = f.clone();
        g.push(0);
        g[IP6_PLEN + 1] += 1;
        assert!(checksums6(&g).is_err(), "length not covered");
    }
    let e = icmp(ROUTER, CLIENT.0, 2, 0, MTU_1280, b"quoted").build();
    verify6(&e);
    let mut g = e.clone();
    g[IP6_SRC] ^= 0x80;
    assert!(
        checksums6(&g).is_err(),
        "ICMPv6 checksum covers the outer addresses"
    );

    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    assert_eq!(crc32c(&(0..32).collect::<Vec<u8>>()), 0x46DD_794E);
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

/// See `checksum_helpers_self_test`.
const KNOWN_UDP_CSUM: u16 = 0x2bed;
