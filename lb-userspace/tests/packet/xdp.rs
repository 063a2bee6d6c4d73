//! Packet-level tests of the XDP program `podlb_xdp_ext` through BPF_PROG_TEST_RUN.
//!
//! Like `tc.rs` (the TC program), each test loads its own copy of the eBPF object,
//! fills its maps, runs hand-built frames and checks the verdict, the output bytes (against a
//! frame built from scratch with freshly computed checksums, and an independent checksum
//! verifier), conntrack and counters. XDP rewrites with direct writes and RFC 1624 incremental
//! checksums, so the byte-exact comparisons check that arithmetic too.
//!
//! After NAT the program calls `bpf_fib_lookup`, which resolves in the network namespace of the
//! thread doing the test run (its ingress device is that namespace's `lo`, or the device named
//! in the `xdp_md` passed as `ctx_in`). Every harness therefore owns a fresh namespace and runs
//! the program only from inside it: with no routes there, a NATed packet is `XDP_PASS`. The
//! forwarding test adds a veth pair, routes and a permanent neighbour to get `XDP_TX`.
//! They need root and fail (never skip) without it.

use crate::harness::*;
use testkit::frame::*;
// The tests' (IPv4 address, port) pair, not lb_common's 16-byte address.
use lb_common::*;
use testkit::frame::Addr;

const NODE: [u8; 4] = [192, 168, 77, 1];
const EXT: Addr = ([192, 168, 77, 2], 40000);
const NODE_PORT: Addr = (NODE, 30080);
const BE1: Addr = ([10, 244, 0, 11], 8080);
const BE2: Addr = ([10, 244, 0, 12], 8080);
const DNS_BE: Addr = ([10, 244, 0, 21], 5353);
const POD: Addr = ([10, 244, 0, 5], 40000);
const VIP: [u8; 4] = [10, 96, 0, 10];
const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

// ---------------------------------------------------------------------------------------------
// Harness (harness.rs) with the XDP program, in its own network namespace.

impl Harness {
    /// A NodePort frontend with FE_SNAT.
    fn node_port(&mut self, fe: Addr, proto: u8, svc_id: u32, backends: &[Addr]) -> Vec<u32> {
        self.add_frontend(fe, proto, svc_id, backends, FE_SNAT, KIND_NODE_PORT)
    }
}

/// Runs `p` and expects `XDP_PASS` with exactly `want` (checksums verified independently).
/// Returns the output's L4 checksum field.
#[track_caller]
fn assert_nat(h: &Harness, p: &Pkt, want: &Pkt) -> u16 {
    let (verdict, out) = h.run(&p.build());
    assert_eq!(verdict, XDP_PASS, "verdict");
    assert_frame_eq(&out, &want.build());
    verify_checksums(&out)
}

/// NodePort 192.168.77.1:30080 (svc 3) -> BE1 with SNAT from the default range; sends the SYN
/// from EXT and returns (SYN as sent, its output, backend id, SNAT port).
fn nodeport_flow(h: &mut Harness) -> (Pkt, Vec<u8>, u32, u16) {
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS).payload(b"x");
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(
        verdict, XDP_PASS,
        "NATed, no route in the test namespace: passed to the stack"
    );
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    (syn, out, ids[0], p)
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// 1. NodePort SYN: DNAT to the backend and SNAT to node:P; only addresses, ports and the two
///    checksums change; both conntrack directions recorded; stats and counters.
#[test]
fn xdp_nodeport_syn_is_dnatted_and_masqueraded() {
    let mut h = Harness::xdp();
    let (syn, out, id, p) = nodeport_flow(&mut h);
    let input = syn.build();
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify_checksums(&out);
    let allowed = [
        24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 50, 51,
    ];
    let ch = changed(&input, &out);
    assert!(
        ch.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {ch:?}"
    );
    assert_eq!(
        &out[..14],
        &input[..14],
        "Ethernet header untouched on XDP_PASS"
    );
    assert_eq!(out[22], 64, "TTL untouched on XDP_PASS");

    let fwd = h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP));
    assert_eq!(
        fwd,
        Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, id, (NODE, p)))
    );
    let rev = h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP));
    assert_eq!(
        rev,
        Some(ct_entry(NODE_PORT, CT_REPLY | CT_SNAT, 3, id, EXT))
    );
    assert_eq!(h.conntrack().len(), 2, "exactly two conntrack entries");
    let s = h.stats(3);
    assert_eq!((s.packets, s.bytes), (1, input.len() as u64));
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 2. The backend's reply (BE1 -> node:P) becomes NodePort -> client, checksums valid.
#[test]
fn xdp_nodeport_reply_is_reverse_nated() {
    let mut h = Harness::xdp();
    let (_, _, _, p) = nodeport_flow(&mut h);
    let synack = tcp(BE1, (NODE, p), SYN | ACK).tcp_opts(&MSS);
    assert_nat(&h, &synack, &synack.clone().src(NODE_PORT).dst(EXT));
    let data = tcp(BE1, (NODE, p), ACK).payload(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_nat(&h, &data, &data.clone().src(NODE_PORT).dst(EXT));
    assert_eq!(h.stats(3).packets, 3, "replies are counted too");
    assert_eq!(h.conntrack().len(), 2);
    // From the backend to another node port: no flow, untouched.
    let other = if p == SNAT_PORT_MAX { p - 1 } else { p + 1 };
    assert_untouched(&h, &tcp(BE1, (NODE, other), ACK).build());
}

/// 3. Established packets of the flow keep P and the backend, even after a backend is added.
#[test]
fn xdp_nodeport_established_flow_keeps_port_and_backend() {
    let mut h = Harness::xdp();
    let (_, _, id, p) = nodeport_flow(&mut h);
    let id2 = h.new_backend(BE2, PROTO_TCP);
    h.hash::<SlotKey, Slot>(MAP_SLOTS)
        .insert(SlotKey { svc_id: 3, slot: 1 }, Slot { backend_id: id2 }, 0)
        .unwrap();
    let key = FrontendKey {
        addr: addr4(NODE),
        port: 30080,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    let fe = Frontend {
        svc_id: 3,
        count: 2,
        flags: FE_SNAT,
        kind: KIND_NODE_PORT,
        pad: 0,
    };
    h.hash::<FrontendKey, Frontend>(MAP_FRONTENDS)
        .insert(key, fe, 0)
        .unwrap();
    let ack = tcp(EXT, NODE_PORT, ACK).payload(b"GET / HTTP/1.1\r\n\r\n");
    for _ in 0..20 {
        assert_nat(&h, &ack, &ack.clone().src((NODE, p)).dst(BE1));
    }
    // A pure ACK padded to the 60-byte minimum keeps its padding.
    let pure = tcp(EXT, NODE_PORT, ACK);
    let (mut input, mut want) = (pure.build(), pure.clone().src((NODE, p)).dst(BE1).build());
    input.resize(60, 0);
    want.resize(60, 0);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_PASS);
    assert_frame_eq(&out, &want);
    assert_eq!(
        h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP))
            .map(|e| (e.backend_id, e.snat_port)),
        Some((id, p))
    );
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 4. UDP NodePort: a checksummed datagram and its reply; a zero checksum stays zero (both
///    directions); a rewrite whose checksum computes to zero is sent as 0xffff.
#[test]
fn xdp_udp_nodeport_checksum_semantics() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let q = udp(EXT, (NODE, 30053)).payload(b"hello"); // odd length
    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, XDP_PASS);
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    assert_frame_eq(&out, &q.clone().src((NODE, p)).dst(DNS_BE).build());
    assert_ne!(verify_checksums(&out), 0);
    let a = udp(DNS_BE, (NODE, p)).payload(b"answer");
    assert_ne!(
        assert_nat(&h, &a, &a.clone().src((NODE, 30053)).dst(EXT)),
        0
    );

    let c0: Addr = (EXT.0, 40002);
    let q0 = udp(c0, (NODE, 30053)).payload(b"hello").no_udp_csum();
    let (verdict, out) = h.run(&q0.build());
    assert_eq!(verdict, XDP_PASS);
    let p0 = be16(&out, 34);
    assert_frame_eq(&out, &q0.clone().src((NODE, p0)).dst(DNS_BE).build());
    assert_eq!(
        verify_checksums(&out),
        0,
        "a zero UDP checksum must stay zero"
    );
    let r0 = udp(DNS_BE, (NODE, p0)).payload(b"answer").no_udp_csum();
    assert_eq!(
        assert_nat(&h, &r0, &r0.clone().src((NODE, 30053)).dst(c0)),
        0,
        "zero checksum, reply path"
    );

    // A one-port SNAT range makes the rewritten datagram known in advance (own backend, so the
    // reply tuple is free): choose the first payload word so its checksum computes to 0.
    h.set_config(NODE, 61000, 61000);
    let be: Addr = ([10, 244, 0, 22], 5353);
    h.node_port((NODE, 30054), PROTO_UDP, 5, &[be]);
    let c1: Addr = (EXT.0, 40003);
    let mut l4 = udp((NODE, 61000), be).payload(&[0, 0, 7, 7]).l4();
    l4[6..8].fill(0);
    let w = (0xffff - fold(pseudo_sum(NODE, be.0, PROTO_UDP, l4.len()) + sum16(&l4))).to_be_bytes();
    let q1 = udp(c1, (NODE, 30054)).payload(&[w[0], w[1], 7, 7]);
    let want = q1.clone().src((NODE, 61000)).dst(be);
    assert_eq!(
        assert_nat(&h, &q1, &want),
        0xffff,
        "computed zero must be sent as 0xffff"
    );
    assert_counters(&h, &[(CNT_SNAT, 3)]);
}

/// 5. Traffic that is no service: a TCP SYN to a pod, ARP, IPv6: XDP_PASS, unchanged.
#[test]
fn xdp_non_service_packets_pass_unchanged() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    let syn = tcp(EXT, (BE2.0, 80), SYN).build();
    assert_untouched(&h, &syn);
    assert_untouched(&h, &tcp(EXT, (NODE, 30081), SYN).build()); // node, other port
    let mut arp = syn[..12].to_vec();
    arp.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend(&syn[6..12]);
    arp.extend(EXT.0);
    arp.extend([0; 6]);
    arp.extend(NODE);
    assert_untouched(&h, &arp);
    let mut v6 = syn[..12].to_vec();
    v6.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64]);
    v6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend(&syn[34..54]);
    assert_untouched(&h, &v6);
    assert!(h.conntrack().is_empty());
    assert_eq!(h.stats(3).packets, 0);
    assert_counters(&h, &[]);
}

/// 6. Malformed, truncated and fragmented packets to the NodePort: XDP_PASS, unchanged, no
///    conntrack entry. (Unlike the skb test run, XDP runs frames with a partial IPv4 header.)
#[test]
fn xdp_malformed_packets_pass_unchanged() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let syn = tcp(EXT, NODE_PORT, SYN).build();
    let dns = udp(EXT, (NODE, 30053)).payload(b"query").build();
    let pad60 = |mut f: Vec<u8>| {
        f.resize(60, 0);
        f
    };
    let ihl15_no_l4 = {
        let mut f = syn[..34].to_vec();
        f.extend([1u8; 40]);
        patch(f, |ip| {
            ip[0] = 0x4f;
            ip[2..4].copy_from_slice(&60u16.to_be_bytes());
        })
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", syn[..14].to_vec()),
        ("IPv4 header cut to 10 bytes", syn[..24].to_vec()),
        ("IPv4 header cut to 19 bytes", syn[..33].to_vec()),
        ("IPv4 header only, no TCP", cut_l4(&syn, 0)),
        ("8 bytes of TCP", cut_l4(&syn, 8)),
        ("19 bytes of TCP", cut_l4(&syn, 19)),
        ("8 bytes of TCP + padding to 60", pad60(cut_l4(&syn, 8))),
        ("4 bytes of UDP", cut_l4(&dns, 4)),
        ("4 bytes of UDP + padding to 60", pad60(cut_l4(&dns, 4))),
        ("IHL=3", patch(syn.clone(), |ip| ip[0] = 0x43)),
        ("IHL=0", patch(syn.clone(), |ip| ip[0] = 0x40)),
        (
            "IHL=15, total length 40",
            patch(syn.clone(), |ip| ip[0] = 0x4f),
        ),
        ("IHL=15, header present but no TCP", ihl15_no_l4),
        (
            "total length 19",
            patch(syn.clone(), |ip| {
                ip[2..4].copy_from_slice(&19u16.to_be_bytes())
            }),
        ),
        (
            "IP version 6 in an IPv4 frame",
            patch(syn.clone(), |ip| ip[0] = 0x65),
        ),
        ("TCP, MF set", tcp(EXT, NODE_PORT, SYN).frag(0x2000).build()),
        (
            "TCP, offset 185",
            tcp(EXT, NODE_PORT, SYN).frag(185).build(),
        ),
        (
            "TCP, DF + offset 1",
            tcp(EXT, NODE_PORT, SYN).frag(0x4001).build(),
        ),
        (
            "UDP, MF set",
            udp(EXT, (NODE, 30053)).payload(b"q").frag(0x2000).build(),
        ),
        (
            "UDP, MF + offset",
            udp(EXT, (NODE, 30053)).payload(b"q").frag(0x2001).build(),
        ),
        ("other protocol (ICMP)", patch(syn.clone(), |ip| ip[9] = 1)),
    ];
    let mut failures = Vec::new();
    for (name, input) in &cases {
        match h.try_run(input) {
            Err(e) => failures.push(format!("{name}: test run failed: {e:?}")),
            Ok((XDP_PASS, out)) if out == *input => {}
            Ok((verdict, out)) => failures.push(format!(
                "{name}: verdict {verdict}, out {} bytes, changed {:?}",
                out.len(),
                (0..out.len().max(input.len()))
                    .filter(|&i| out.get(i) != input.get(i))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "not passed unchanged:\n{}",
        failures.join("\n")
    );
    assert!(h.conntrack().is_empty(), "conntrack: {:?}", h.conntrack());
    assert_eq!(h.stats(3).packets + h.stats(4).packets, 0);
    assert_counters(&h, &[]);
    // Shorter than an Ethernet header: the kernel refuses the run (EINVAL).
    assert!(h.try_run(&syn[..13]).is_err());
}

/// 7. Reject from XDP: a frontend without backends answers TCP with a 54-byte RST and UDP with
///    a 70-byte ICMP port unreachable, both XDP_TX (the frame is resized with
///    bpf_xdp_adjust_tail: the test run's buffer is a page, so growing works). Resets are never
///    answered; a packet with IPv4 options is dropped (documented limitation).
#[test]
fn xdp_reject_with_rst_and_icmp() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[]);
    let syn = tcp(EXT, NODE_PORT, SYN);
    let (seq, ack) = (0x1122_3344u32, 0x5566_7788u32);
    let mut padded = syn.build();
    padded.resize(60, 0);
    let cases = [
        ("SYN", syn.build(), 0, seq + 1, RST | ACK),
        (
            "SYN with MSS (shrinks)",
            syn.clone().tcp_opts(&MSS).build(),
            0,
            seq + 1,
            RST | ACK,
        ),
        ("SYN padded to 60 bytes", padded, 0, seq + 1, RST | ACK),
        (
            "SYN with 3 bytes of data",
            syn.clone().payload(b"abc").build(),
            0,
            seq + 4,
            RST | ACK,
        ),
        (
            "ACK with 10 bytes of data",
            tcp(EXT, NODE_PORT, ACK).payload(b"0123456789").build(),
            ack,
            0,
            RST,
        ),
    ];
    let mut n = 0;
    for (name, input, seq, ack, flags) in &cases {
        let (verdict, out) = h.run(input);
        assert_eq!(verdict, XDP_TX, "{name}");
        assert_eq!(out.len(), 54, "{name}");
        assert_frame_eq(&out, &rst_for(input, *seq, *ack, *flags));
        verify_checksums(&out);
        n += 1;
    }
    // The RST fields spelled out once.
    let (_, out) = h.run(&syn.build());
    assert_eq!(
        &out[0..12],
        &[0x0a, 0x58, 0x0a, 0xf4, 0, 5, 0x0a, 0x58, 0x0a, 0xf4, 0, 1],
        "MACs swapped"
    );
    assert_eq!(
        &out[14..24],
        &[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP]
    );
    assert_eq!((&out[26..30], &out[30..34]), (&NODE[..], &EXT.0[..]));
    assert_eq!((be16(&out, 34), be16(&out, 36)), (30080, EXT.1));
    assert_eq!(
        &out[38..48],
        &[0, 0, 0, 0, 0x11, 0x22, 0x33, 0x45, 0x50, RST | ACK]
    );
    n += 1;

    for p in [&b"query"[..], &[0xab; 100], b""] {
        let input = udp(EXT, (NODE, 30053)).payload(p).build();
        let (verdict, out) = h.run(&input);
        assert_eq!(
            verdict,
            XDP_TX,
            "payload of {} bytes (frame {} -> 70)",
            p.len(),
            input.len()
        );
        assert_eq!(out.len(), 70, "payload of {} bytes", p.len());
        assert_frame_eq(&out, &icmp_for(&input));
        verify_icmp(&out);
        assert_eq!(
            &out[14..24],
            &[0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, IPPROTO_ICMP]
        );
        assert_eq!(&out[34..36], &[3, 3], "type 3 code 3");
        assert_eq!(&out[42..70], &input[14..42], "quoted IPv4 + UDP headers");
        n += 1;
    }
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, n)]);

    // Never answer a reset; IPv4 options: dropped.
    let opts = [1, 1, 1, 0];
    for input in [
        tcp(EXT, NODE_PORT, RST).build(),
        tcp(EXT, NODE_PORT, RST | ACK).build(),
        syn.clone().ip_opts(&opts).build(),
        udp(EXT, (NODE, 30053)).ip_opts(&opts).payload(b"q").build(),
    ] {
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_DROP);
        assert_frame_eq(&out, &input);
    }
    // An unexposed ClusterIP port is rejected the same way.
    h.add_vip(VIP);
    let syn81 = tcp(POD, (VIP, 81), SYN).build();
    let (verdict, out) = h.run(&syn81);
    assert_eq!(verdict, XDP_TX);
    assert_frame_eq(&out, &rst_for(&syn81, 0, seq + 1, RST | ACK));
    assert_counters(
        &h,
        &[(CNT_REJECT_NO_BACKEND, n + 4), (CNT_REJECT_NO_PORT, 1)],
    );
    assert!(h.conntrack().is_empty());
}

/// 8. ClusterIP (no FE_SNAT): DNAT only, the source is unchanged; the reply gets the VIP back.
#[test]
fn xdp_clusterip_is_dnat_only() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_frontend((VIP, 80), PROTO_TCP, 1, &[BE1], 0, KIND_CLUSTER_IP);
    let syn = tcp(POD, (VIP, 80), SYN).tcp_opts(&MSS).payload(b"GET /");
    let input = syn.build();
    assert_nat(&h, &syn, &syn.clone().dst(BE1));
    let (_, out) = h.run(&input);
    let allowed = [24, 25, 30, 31, 32, 33, 36, 37, 50, 51];
    let ch = changed(&input, &out);
    assert!(
        ch.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {ch:?}"
    );
    assert_eq!(
        h.ct_get(ct_key(POD, (VIP, 80), PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], ([0; 4], 0)))
    );
    assert_eq!(
        h.ct_get(ct_key(BE1, POD, PROTO_TCP)),
        Some(ct_entry((VIP, 80), CT_REPLY, 1, ids[0], ([0; 4], 0)))
    );
    let synack = tcp(BE1, POD, SYN | ACK).tcp_opts(&MSS);
    assert_nat(&h, &synack, &synack.clone().src((VIP, 80)));
    // A backend on the Service port: only the address changes.
    h.add_frontend(
        (VIP, 443),
        PROTO_TCP,
        2,
        &[(BE2.0, 443)],
        0,
        KIND_CLUSTER_IP,
    );
    let s = tcp(POD, (VIP, 443), SYN);
    assert_nat(&h, &s, &s.clone().dst((BE2.0, 443)));
    assert_counters(&h, &[]);
}

/// 9. IPv4 options (IHL 6 and 15) to the NodePort: ports read after the options, both NATs
///    applied, checksums valid; the reply too.
#[test]
fn xdp_ipv4_options_to_nodeport() {
    let mut h = Harness::xdp();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let mut max_opts = [1u8; 40];
    max_opts[39] = 0;
    let cases = [
        (
            "TCP, IHL=6",
            tcp(EXT, NODE_PORT, SYN)
                .ip_opts(&[1, 1, 1, 0])
                .payload(b"x"),
            BE1,
        ),
        (
            "TCP, IHL=15",
            tcp((EXT.0, 40001), NODE_PORT, SYN).ip_opts(&max_opts),
            BE1,
        ),
        (
            "UDP, IHL=6",
            udp(EXT, (NODE, 30053)).ip_opts(&[1, 1, 1, 0]).payload(b"q"),
            DNS_BE,
        ),
        (
            "UDP, IHL=15",
            udp((EXT.0, 40001), (NODE, 30053)).ip_opts(&max_opts),
            DNS_BE,
        ),
    ];
    for (name, p, be) in cases {
        let (verdict, out) = h.run(&p.build());
        assert_eq!(verdict, XDP_PASS, "{name}");
        let off = 14 + 20 + p.ip.opts.len();
        let sp = be16(&out, off);
        assert!(
            (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&sp),
            "{name}: SNAT port {sp}"
        );
        assert_frame_eq(&out, &p.clone().src((NODE, sp)).dst(be).build());
        verify_checksums(&out);
        if name == "TCP, IHL=6" {
            let fwd = h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP));
            assert_eq!(
                fwd,
                Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, ids[0], (NODE, sp)))
            );
            let r = tcp(BE1, (NODE, sp), SYN | ACK).ip_opts(&[1, 1, 1, 0]);
            assert_nat(&h, &r, &r.clone().src(NODE_PORT).dst(EXT));
        }
    }
    assert_counters(&h, &[(CNT_SNAT, 4)]);
}

/// 10. fib-lookup forwarding. The test run's ingress device is the veth `up0` of the harness
///     namespace (via `xdp_md.ingress_ifindex`); the pod CIDR is routed via a permanent
///     neighbour on `up0` (XDP_TX: MACs from the FIB, TTL - 1, valid checksums), or via another
///     interface (XDP_PASS, MACs and TTL untouched). No route, TTL 1, a packet over the MTU and
///     a next hop without neighbour entry also pass.
#[test]
fn xdp_forward_back_out_of_ingress_interface() {
    let mut h = Harness::xdp();
    h.ip(
        "link add up0 address 02:00:00:00:00:01 type veth peer name up0p address 02:00:00:00:00:02",
    );
    h.ip("link add pod0 address 02:00:00:00:00:03 type veth peer name pod0p");
    for dev in ["up0", "up0p", "pod0", "pod0p"] {
        h.ip(&format!("link set {dev} up"));
    }
    h.ip("addr add 192.168.77.1/24 dev up0");
    h.ip("addr add 10.99.0.1/24 dev pod0");
    h.ip("neigh add 192.168.77.254 lladdr 02:00:00:00:00:fe dev up0 nud permanent");
    h.ip("neigh add 10.99.0.2 lladdr 02:00:00:00:00:fd dev pod0 nud permanent");
    h.ns().sysctl(&[("net.ipv4.ip_forward", "1")]).unwrap();
    h.ingress = Some(h.ifindex("up0"));
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);

    // No route to the backend yet: NATed and passed.
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_PASS, "no route");
    let p = be16(&out, 34);
    let natted = syn.clone().src((NODE, p)).dst(BE1);
    assert_frame_eq(&out, &natted.build());

    // Route back out of up0: transmitted from XDP.
    h.ip("route add 10.244.0.0/16 via 192.168.77.254 dev up0");
    // What XDP_TX sends: TTL - 1 (header checksum recomputed), MACs from the FIB.
    let tx_frame = |p: &Pkt| {
        let mut f = p.clone().ttl(p.ttl - 1).build();
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f
    };
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_TX, "route back out of the ingress interface");
    assert_frame_eq(&out, &tx_frame(&natted));
    verify_checksums(&out);
    // Other TTLs, so the incremental TTL checksum update meets other header sums.
    for ttl in [2, 255, 128] {
        let s = syn.clone().ttl(ttl);
        let (verdict, out) = h.run(&s.build());
        assert_eq!(verdict, XDP_TX, "TTL {ttl}");
        assert_frame_eq(&out, &tx_frame(&natted.clone().ttl(ttl)));
        verify_checksums(&out);
    }
    // An IPv4 ID chosen so that the recomputed header checksum after TTL - 1 is +0 (0x0000):
    // the incremental update (as Linux's ip_decrease_ttl) may write -0 (0xffff) instead; both
    // verify, everything else must be exact.
    let mut hdr = natted.clone().ttl(63).build()[14..34].to_vec();
    hdr[4..6].fill(0);
    hdr[10..12].fill(0);
    let id = (0xffff - fold(sum16(&hdr))).to_be_bytes();
    let set_id = |f: Vec<u8>| patch(f, |ip| ip[4..6].copy_from_slice(&id));
    let (verdict, out) = h.run(&set_id(syn.build()));
    assert_eq!(verdict, XDP_TX);
    verify_checksums(&out);
    let mut want = tx_frame(&natted);
    want[14..].copy_from_slice(&set_id(natted.clone().ttl(63).build())[14..]);
    assert_eq!(be16(&want, 24), 0);
    assert!(
        [0, 0xffff].contains(&be16(&out, 24)),
        "header checksum {:#06x}",
        be16(&out, 24)
    );
    want[24..26].copy_from_slice(&out[24..26]);
    assert_frame_eq(&out, &want);
    // TTL 1: left to the stack (time exceeded).
    let s1 = syn.clone().ttl(1);
    assert_nat(&h, &s1, &natted.clone().ttl(1));
    // Larger than up0's MTU (1500): FRAG_NEEDED, left to the stack.
    let big = tcp(EXT, NODE_PORT, ACK).payload(&[0x5a; 1500]);
    assert_nat(&h, &big, &big.clone().src((NODE, p)).dst(BE1));

    // The reply from a backend on another node comes in on up0 and is routed to the client,
    // back out of up0 as well.
    h.ip("route add 192.168.50.0/24 via 192.168.77.254 dev up0");
    let r = tcp(BE1, (NODE, p), SYN | ACK);
    let (verdict, out) = h.run(&r.build());
    // EXT (192.168.77.2) is on up0's own subnet but has no neighbour entry: NO_NEIGH -> pass.
    assert_eq!(verdict, XDP_PASS, "client without neighbour entry");
    assert_frame_eq(&out, &r.clone().src(NODE_PORT).dst(EXT).build());
    h.ip("neigh add 192.168.77.2 lladdr 02:00:00:00:00:ee dev up0 nud permanent");
    let (verdict, out) = h.run(&r.build());
    assert_eq!(verdict, XDP_TX, "reply back out of up0");
    let mut want = tx_frame(&r.clone().src(NODE_PORT).dst(EXT));
    want[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xee]);
    assert_frame_eq(&out, &want);

    // Route through another interface (a local pod network): passed to the stack untouched.
    h.ip("route replace 10.244.0.0/16 via 10.99.0.2 dev pod0");
    assert_nat(&h, &syn, &natted);
    assert_eq!(h.conntrack().len(), 2);
}
