//! Packet-level tests of the TC program `podlb_tc_pod` through BPF_PROG_TEST_RUN.
//!
//! Each test loads its own copy of the eBPF object (maps are private to that `Ebpf`, nothing is
//! pinned, so tests run in parallel), fills the maps, runs hand-built frames through the program
//! and checks the verdict, the output bytes (against a frame built from scratch with freshly
//! computed checksums, and with an independent checksum verifier), conntrack and counters.
//! They need root and fail (never skip) without it.

use crate::harness::*;
use testkit::frame::*;
// The tests' (IPv4 address, port) pair, not lb_common's 16-byte address.
use lb_common::*;
use testkit::frame::Addr;

const CLIENT: Addr = ([10, 244, 0, 5], 40000);
const VIP: [u8; 4] = [10, 96, 0, 10];
const BE1: Addr = ([10, 244, 0, 11], 8080);
const BE2: Addr = ([10, 244, 0, 12], 8080);
const BE3: Addr = ([10, 244, 0, 13], 9090);
const DNS_BE: Addr = ([10, 244, 0, 21], 5353);
/// The node address (SNAT source and NodePort address) and an external client.
const NODE: [u8; 4] = [192, 168, 77, 1];
const EXT: Addr = ([192, 168, 77, 2], 40000);
const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

// ---------------------------------------------------------------------------------------------
// Harness (harness.rs) with the TC program; ClusterIP frontends.

impl Harness {
    /// Adds a frontend and its backends; returns the backend ids (in slot order).
    fn add_service(
        &mut self,
        vip: [u8; 4],
        port: u16,
        proto: u8,
        svc_id: u32,
        backends: &[Addr],
        flags: u16,
    ) -> Vec<u32> {
        let ids: Vec<u32> = backends
            .iter()
            .map(|b| self.new_backend(*b, proto))
            .collect();
        self.set_frontend((vip, port), proto, svc_id, &ids, flags);
        ids
    }
}

/// A conntrack entry without SNAT.
fn ct_entry(nat: Addr, flags: u32, svc_id: u32, backend_id: u32) -> CtEntry {
    crate::harness::ct_entry(nat, flags, svc_id, backend_id, ([0; 4], 0))
}

/// A TCP service VIP:80 -> backends, svc_id 1.
fn web(h: &mut Harness, backends: &[Addr]) -> Vec<u32> {
    h.add_service(VIP, 80, PROTO_TCP, 1, backends, 0)
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// 1. A SYN to the VIP is DNATed to the only backend; conntrack and counters are recorded.
#[test]
fn syn_to_vip_is_dnatted_to_backend() {
    let mut h = Harness::tc();
    let ids = web(&mut h, &[BE1]);
    // MSS option and a payload, so the checksum covers more than the bare header.
    let syn = tcp(CLIENT, (VIP, 80), SYN)
        .tcp_opts(&[2, 4, 0x05, 0xb4])
        .payload(b"GET / HTTP/1.1\r\n\r\n");
    let input = syn.build();

    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, TC_NEXT);
    // Built from scratch, so this also checks both checksums against a full recomputation.
    assert_frame_eq(&out, &syn.clone().dst(BE1).build());
    verify_checksums(&out);
    // Only the destination address and port and the two checksums changed.
    let allowed = [24, 25, 30, 31, 32, 33, 36, 37, 50, 51];
    assert!(
        changed(&input, &out).iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {:?}",
        changed(&input, &out)
    );
    assert_eq!(&out[26..30], &CLIENT.0, "source address");
    assert_eq!(be16(&out, 34), CLIENT.1, "source port");

    let fwd = h.ct_get(ct_key(CLIENT, (VIP, 80), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 1, ids[0])));
    let reply = h.ct_get(ct_key(BE1, CLIENT, PROTO_TCP));
    assert_eq!(reply, Some(ct_entry((VIP, 80), CT_REPLY, 1, ids[0])));
    assert_eq!(h.conntrack().len(), 2, "exactly two conntrack entries");

    let s = h.stats(1);
    assert_eq!((s.packets, s.bytes), (1, input.len() as u64));
}

/// 2. The backend's reply gets the VIP and Service port back as its source.
#[test]
fn reply_is_reverse_nated_to_vip() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    h.run(&tcp(CLIENT, (VIP, 80), SYN).build());

    let synack = tcp(BE1, CLIENT, SYN | ACK).tcp_opts(&[2, 4, 0x05, 0xb4]);
    let input = synack.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &synack.clone().src((VIP, 80)).build());
    verify_checksums(&out);
    let allowed = [24, 25, 26, 27, 28, 29, 34, 35, 50, 51];
    assert!(changed(&input, &out).iter().all(|i| allowed.contains(i)));
    assert_eq!(h.stats(1).packets, 2, "the reply is counted too");

    // A packet from the backend to another client port is not a reply of any flow.
    assert_untouched(&h, &tcp(BE1, (CLIENT.0, 40001), ACK).build());
}

/// 3. An established flow stays on its backend when the service grows. When its backend leaves
///    the Service, an established TCP connection stays on it (kube-proxy's conntrack keeps it,
///    so a terminating pod finishes its connections); a SYN on the same tuple is a new
///    connection and moves to a live backend.
#[test]
fn established_flow_is_sticky_until_backend_gone() {
    let mut h = Harness::tc();
    let ids = web(&mut h, &[BE1]);
    let ack = tcp(CLIENT, (VIP, 80), ACK).payload(b"data");
    h.run(&tcp(CLIENT, (VIP, 80), SYN).build());

    let id2 = h.new_backend(BE2, PROTO_TCP);
    h.set_frontend((VIP, 80), PROTO_TCP, 1, &[ids[0], id2], 0);
    for i in 0..20 {
        let (verdict, out) = h.run(&ack.build());
        assert_eq!(verdict, TC_NEXT, "packet {i}");
        assert_frame_eq(&out, &ack.clone().dst(BE1).build());
    }

    // BE1 leaves as the reconciler removes it: slots first, then the backend entry is zeroed.
    // (Zeroing the entry while a slot still names it would make re-selection drop the packet
    // whenever that slot is drawn; the reconciler never leaves such a slot.)
    h.set_frontend((VIP, 80), PROTO_TCP, 1, &[id2], 0);
    h.set_backend(ids[0], Backend::default());
    for i in 0..5 {
        let (verdict, out) = h.run(&ack.build());
        assert_eq!(verdict, TC_NEXT, "packet {i} after BE1 left");
        assert_frame_eq(&out, &ack.clone().dst(BE1).build());
    }
    let fwd = h.ct_get(ct_key(CLIENT, (VIP, 80), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 1, ids[0])));

    // A new connection reusing the tuple (its SYN) goes to a live backend.
    let syn = tcp(CLIENT, (VIP, 80), SYN);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &syn.clone().dst(BE2).build());
    verify_checksums(&out);
    let fwd = h.ct_get(ct_key(CLIENT, (VIP, 80), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE2, CT_FORWARD, 1, id2)));
    // The new backend's replies are reverse-NATed.
    let reply = tcp(BE2, CLIENT, ACK);
    let (_, out) = h.run(&reply.build());
    assert_frame_eq(&out, &reply.clone().src((VIP, 80)).build());
    // And the flow stays on BE2; a pure ACK padded to 60 bytes keeps its padding.
    let pure = tcp(CLIENT, (VIP, 80), ACK);
    let mut input = pure.build();
    input.resize(60, 0);
    let mut want = pure.clone().dst(BE2).build();
    want.resize(60, 0);
    let (_, out) = h.run(&input);
    assert_frame_eq(&out, &want);
    verify_checksums(&out);
}

/// 3b. A backend id reused for another address is not the flow's backend any more: the
///     established connection keeps its address; a new SYN on the tuple goes to the new one.
#[test]
fn reused_backend_id_rebalances_flow() {
    let mut h = Harness::tc();
    let ids = web(&mut h, &[BE1]);
    let ack = tcp(CLIENT, (VIP, 80), ACK);
    h.run(&tcp(CLIENT, (VIP, 80), SYN).build());
    let b3 = Backend {
        addr: addr4(BE3.0),
        port: BE3.1,
        proto: PROTO_TCP,
        family: FAMILY_V4,
    };
    h.set_backend(ids[0], b3);
    let (verdict, out) = h.run(&ack.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &ack.clone().dst(BE1).build());
    let syn = tcp(CLIENT, (VIP, 80), SYN);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &syn.clone().dst(BE3).build());
    verify_checksums(&out);
}

/// 3c. A UDP flow whose backend left the Service moves to a live backend at once (kube-proxy
///     clears the conntrack entries of removed UDP endpoints).
#[test]
fn udp_flow_moves_when_backend_gone() {
    let mut h = Harness::tc();
    let ids = h.add_service(VIP, 53, PROTO_UDP, 2, &[DNS_BE], 0);
    let q = udp((CLIENT.0, 40001), (VIP, 53)).payload(b"query");
    let (_, out) = h.run(&q.build());
    assert_frame_eq(&out, &q.clone().dst(DNS_BE).build());
    let other = ([10, 244, 0, 12], 5353);
    let id2 = h.new_backend(other, PROTO_UDP);
    h.set_frontend((VIP, 53), PROTO_UDP, 2, &[id2], 0);
    h.set_backend(ids[0], Backend::default());
    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &q.clone().dst(other).build());
    verify_checksums(&out);
}

/// 4. UDP: a checksummed datagram is DNATed with a valid checksum; a zero ("none") checksum
///    stays zero; a rewrite whose checksum computes to zero sends 0xffff.
#[test]
fn udp_to_vip_keeps_checksum_semantics() {
    let mut h = Harness::tc();
    h.add_service(VIP, 53, PROTO_UDP, 2, &[DNS_BE], 0);
    let q = udp((CLIENT.0, 40001), (VIP, 53)).payload(b"hello"); // odd length

    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &q.clone().dst(DNS_BE).build());
    assert_ne!(verify_checksums(&out), 0);

    let q0 = q.clone().src((CLIENT.0, 40002)).no_udp_csum();
    let (verdict, out) = h.run(&q0.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &q0.clone().dst(DNS_BE).build());
    assert_eq!(
        verify_checksums(&out),
        0,
        "a zero UDP checksum must stay zero"
    );
    let r0 = udp(DNS_BE, (CLIENT.0, 40002))
        .payload(b"answer")
        .no_udp_csum();
    let (verdict, out) = h.run(&r0.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &r0.clone().src((VIP, 53)).build());
    assert_eq!(
        verify_checksums(&out),
        0,
        "zero UDP checksum on the reply path"
    );

    // Choose the first payload word so that the rewritten datagram's checksum computes to 0.
    let base = udp((CLIENT.0, 40003), DNS_BE).payload(&[0, 0, 7, 7]);
    let l4 = {
        let mut l4 = base.l4();
        l4[6..8].fill(0);
        l4
    };
    let s = fold(pseudo_sum(CLIENT.0, DNS_BE.0, PROTO_UDP, l4.len()) + sum16(&l4));
    let w = (0xffff - s).to_be_bytes();
    let q1 = udp((CLIENT.0, 40003), (VIP, 53)).payload(&[w[0], w[1], 7, 7]);
    let (verdict, out) = h.run(&q1.build());
    assert_eq!(verdict, TC_NEXT);
    assert_eq!(
        verify_checksums(&out),
        0xffff,
        "computed zero must be sent as 0xffff"
    );
    assert_frame_eq(&out, &q1.clone().dst(DNS_BE).build());

    // Ethernet padding after the datagram is left alone and not checksummed.
    let q2 = q.clone().src((CLIENT.0, 40004));
    let mut padded = q2.build();
    padded.resize(64, 0);
    let mut want = q2.clone().dst(DNS_BE).build();
    want.resize(64, 0);
    let (verdict, out) = h.run(&padded);
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &want);
    verify_checksums(&out);
}

/// 5. IPv4 options: the ports are read after the options and the checksums stay valid.
#[test]
fn ipv4_options_are_skipped() {
    let mut h = Harness::tc();
    let ids = web(&mut h, &[BE1]);
    h.add_service(VIP, 53, PROTO_UDP, 2, &[DNS_BE], 0);
    let mut max_opts = [1u8; 40]; // IHL = 15: 39 NOPs and an end-of-list
    max_opts[39] = 0;
    let cases = [
        (
            "TCP, IHL=6",
            tcp(CLIENT, (VIP, 80), SYN).ip_opts(&[1, 1, 1, 0]),
            BE1,
        ),
        (
            "TCP, IHL=15",
            tcp((CLIENT.0, 40001), (VIP, 80), SYN).ip_opts(&max_opts),
            BE1,
        ),
        (
            "UDP, IHL=6",
            udp(CLIENT, (VIP, 53)).ip_opts(&[1, 1, 1, 0]).payload(b"q"),
            DNS_BE,
        ),
        (
            "UDP, IHL=15",
            udp((CLIENT.0, 40001), (VIP, 53)).ip_opts(&max_opts),
            DNS_BE,
        ),
    ];
    for (name, p, be) in cases {
        let (verdict, out) = h.run(&p.build());
        assert_eq!(verdict, TC_NEXT, "{name}");
        assert_frame_eq(&out, &p.clone().dst(be).build());
        verify_checksums(&out);
    }
    let fwd = h.ct_get(ct_key((CLIENT.0, 40001), (VIP, 80), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 1, ids[0])));
}

/// 6. Traffic to an address that is no frontend passes unchanged.
#[test]
fn non_service_packet_is_untouched() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    assert_untouched(&h, &tcp(CLIENT, (BE2.0, 80), SYN).build());
    assert_untouched(&h, &tcp(CLIENT, (VIP, 443), SYN).build()); // VIP, other port
    assert!(h.conntrack().is_empty());
}

/// 7. Malformed, truncated, non-IPv4 and fragmented packets to a VIP pass unchanged and leave
///    no conntrack entry.
#[test]
fn malformed_packets_pass_unchanged() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    h.add_service(VIP, 53, PROTO_UDP, 2, &[DNS_BE], 0);
    let syn = tcp(CLIENT, (VIP, 80), SYN).build();
    let dns = udp(CLIENT, (VIP, 53)).payload(b"query").build();
    let ethertype = |f: &[u8], t: u16| {
        let mut f = f.to_vec();
        f[12..14].copy_from_slice(&t.to_be_bytes());
        f
    };
    let ihl15 = patch(syn.clone(), |ip| {
        ip[0] = 0x4f;
        ip[2..4].copy_from_slice(&80u16.to_be_bytes());
    });
    let ihl15_no_l4 = {
        // 60 bytes of header present (40 of them options), no room for TCP after them.
        let mut f = ihl15[..34].to_vec();
        f.extend([1u8; 40]);
        patch(f, |_| {})
    };
    let arp = {
        let mut f = ethertype(&syn[..14], 0x0806);
        f.extend([0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend([0x0a, 0x58, 0x0a, 0xf4, 0, 5]);
        f.extend(CLIENT.0);
        f.extend([0; 6]);
        f.extend(VIP);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", syn[..14].to_vec()),
        (
            "Ethernet header only, ethertype ARP",
            ethertype(&syn[..14], 0x0806),
        ),
        ("IPv4 header cut to 10 bytes", syn[..24].to_vec()),
        ("IPv4 header cut to 19 bytes", syn[..33].to_vec()),
        ("IPv4 header only, no TCP", cut_l4(&syn, 0)),
        ("8 bytes of TCP", cut_l4(&syn, 8)),
        ("19 bytes of TCP", cut_l4(&syn, 19)),
        ("4 bytes of UDP", cut_l4(&dns, 4)),
        ("7 bytes of UDP", cut_l4(&dns, 7)),
        ("IHL=3", patch(syn.clone(), |ip| ip[0] = 0x43)),
        ("IHL=0", patch(syn.clone(), |ip| ip[0] = 0x40)),
        ("IHL=15, frame holds 40 bytes of IP", ihl15),
        ("IHL=15, header present but no TCP", ihl15_no_l4),
        (
            "IHL=15, total length 40",
            patch(syn.clone(), |ip| ip[0] = 0x4f),
        ),
        (
            "total length 19",
            patch(syn.clone(), |ip| {
                ip[2..4].copy_from_slice(&19u16.to_be_bytes())
            }),
        ),
        ("total length 0", patch(dns.clone(), |ip| ip[2..4].fill(0))),
        ("ethertype ARP", arp),
        ("ethertype ARP, IPv4 SYN body", ethertype(&syn, 0x0806)),
        ("ethertype IPv6, IPv4 SYN body", ethertype(&syn, 0x86dd)),
        ("ethertype 802.1Q", ethertype(&syn, 0x8100)),
        ("IP version 6", patch(syn.clone(), |ip| ip[0] = 0x65)),
        ("IP version 0", patch(syn.clone(), |ip| ip[0] = 0x05)),
        (
            "TCP, MF set",
            tcp(CLIENT, (VIP, 80), SYN).frag(0x2000).build(),
        ),
        (
            "TCP, offset 185",
            tcp(CLIENT, (VIP, 80), SYN).frag(185).build(),
        ),
        (
            "TCP, DF + offset 1",
            tcp(CLIENT, (VIP, 80), SYN).frag(0x4001).build(),
        ),
        ("UDP, MF set", udp(CLIENT, (VIP, 53)).frag(0x2000).build()),
        (
            "UDP, MF + offset",
            udp(CLIENT, (VIP, 53)).frag(0x2001).build(),
        ),
        ("other protocol (ICMP)", patch(syn.clone(), |ip| ip[9] = 1)),
    ];
    let mut failures = Vec::new();
    for (name, input) in &cases {
        match h.try_run(input) {
            // This kernel (6.18) refuses (EINVAL) to run an IPv4-ethertype frame that lacks a
            // full 20-byte IPv4 header, so those cases only run where the kernel allows it.
            Err(_) if input.len() < 14 + 20 => eprintln!("{name}: refused by the kernel, skipped"),
            Err(e) => failures.push(format!("{name}: test run failed: {e:?}")),
            Ok((TC_NEXT, out)) if out == *input => {}
            Ok((verdict, out)) => failures.push(format!(
                "{name}: verdict {verdict:#x}, changed bytes {:?}",
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
    assert_eq!(h.stats(1).packets + h.stats(2).packets, 0);

    // Shorter than an Ethernet header: the kernel refuses the test run (EINVAL); should one
    // accept it, the program must still pass it unchanged.
    for n in [0, 13] {
        if let Ok((verdict, out)) = h.try_run(&syn[..n]) {
            assert_eq!((verdict, out.as_slice()), (TC_NEXT, &syn[..n]));
        }
    }
}

/// 7b. As on a real wire: a truncated segment padded to the 60-byte Ethernet minimum. The IPv4
///     total length says the L4 header is cut short; the padding must not be taken for the rest
///     of it (nor rewritten), and no flow may be created.
#[test]
fn truncated_l4_in_padded_frame_passes_unchanged() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    h.add_service(VIP, 53, PROTO_UDP, 2, &[DNS_BE], 0);
    let pad60 = |mut f: Vec<u8>| {
        f.resize(60, 0);
        f
    };
    let syn = tcp(CLIENT, (VIP, 80), SYN).build();
    let dns = udp(CLIENT, (VIP, 53)).payload(b"query").build();
    let mut failures = Vec::new();
    for (name, input) in [
        ("8 bytes of TCP + padding", pad60(cut_l4(&syn, 8))),
        ("4 bytes of UDP + padding", pad60(cut_l4(&dns, 4))),
    ] {
        let (verdict, out) = h.run(&input);
        if verdict != TC_NEXT || out != input {
            failures.push(format!(
                "{name}: verdict {verdict:#x}, changed bytes {:?}",
                changed(&input, &out)
            ));
        }
    }
    let ct = h.conntrack();
    assert!(
        failures.is_empty() && ct.is_empty(),
        "{}\nconntrack: {ct:?}",
        failures.join("\n")
    );
}

/// 8. A frontend without backends rejects TCP like kube-proxy: a RST from VIP:port back to the
///    client, redirected out of the ingress interface. A reset is never answered.
#[test]
fn tcp_to_frontend_without_backends_is_reset() {
    let mut h = Harness::tc();
    web(&mut h, &[]);
    let syn = tcp(CLIENT, (VIP, 80), SYN);
    let mut padded = syn.build();
    padded.resize(60, 0);
    let (seq, ack) = (0x1122_3344u32, 0x5566_7788u32); // what the builder sends
    let data = tcp(CLIENT, (VIP, 80), ACK).payload(b"0123456789");
    let cases = [
        ("SYN", syn.build(), 0, seq + 1, RST | ACK),
        (
            "SYN with MSS",
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
        ("ACK with 10 bytes of data", data.build(), ack, 0, RST),
    ];
    for (i, (name, input, seq, ack, flags)) in cases.iter().enumerate() {
        let (verdict, out) = h.run(input);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{name}");
        assert_eq!(out.len(), 54, "{name}");
        assert_frame_eq(&out, &rst_for(input, *seq, *ack, *flags));
        verify_checksums(&out);
        assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, i as u64 + 1)]);
    }
    // The fields spelled out once, independently of `rst_for`.
    let (_, out) = h.run(&syn.build());
    assert_eq!(
        &out[0..12],
        &[0x0a, 0x58, 0x0a, 0xf4, 0, 5, 0x0a, 0x58, 0x0a, 0xf4, 0, 1]
    );
    assert_eq!(
        &out[14..24],
        &[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP]
    );
    assert_eq!((&out[26..30], &out[30..34]), (&VIP[..], &CLIENT.0[..]));
    assert_eq!((be16(&out, 34), be16(&out, 36)), (80, CLIENT.1));
    assert_eq!(
        &out[38..48],
        &[0, 0, 0, 0, 0x11, 0x22, 0x33, 0x45, 0x50, RST | ACK]
    );

    for flags in [RST, RST | ACK] {
        assert_dropped(&h, &tcp(CLIENT, (VIP, 80), flags).build());
    }
    assert!(h.conntrack().is_empty());
}

/// 8b. UDP to a frontend without backends: ICMP port unreachable (70 bytes) quoting the
///     original IPv4 header and UDP header, whatever the datagram's length.
#[test]
fn udp_to_frontend_without_backends_gets_port_unreachable() {
    let mut h = Harness::tc();
    h.add_service(VIP, 53, PROTO_UDP, 2, &[], 0);
    let payloads: [&[u8]; 3] = [b"query", &[0xab; 100], b""];
    for (i, p) in payloads.iter().enumerate() {
        let input = udp(CLIENT, (VIP, 53)).payload(p).build();
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, TC_ACT_REDIRECT, "payload of {} bytes", p.len());
        assert_eq!(out.len(), 70, "payload of {} bytes", p.len());
        assert_frame_eq(&out, &icmp_for(&input));
        verify_icmp(&out);
        assert_eq!(
            &out[14..24],
            &[0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, IPPROTO_ICMP]
        );
        assert_eq!((&out[26..30], &out[30..34]), (&VIP[..], &CLIENT.0[..]));
        assert_eq!(&out[34..36], &[3, 3], "type 3 code 3");
        assert_eq!(&out[42..70], &input[14..42], "quoted IPv4 + UDP headers");
        assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, i as u64 + 1)]);
    }
    assert!(h.conntrack().is_empty());
}

/// 8c. With FE_DROP_EMPTY (traffic policy Local), no backends means a silent drop.
#[test]
fn drop_empty_frontend_drops() {
    let mut h = Harness::tc();
    h.add_service(VIP, 80, PROTO_TCP, 1, &[], FE_DROP_EMPTY);
    h.add_service(VIP, 53, PROTO_UDP, 2, &[], FE_DROP_EMPTY);
    assert_dropped(&h, &tcp(CLIENT, (VIP, 80), SYN).build());
    assert_counters(&h, &[(CNT_DROP_NO_BACKEND, 1)]);
    assert_dropped(&h, &udp(CLIENT, (VIP, 53)).payload(b"q").build());
    assert_counters(&h, &[(CNT_DROP_NO_BACKEND, 2)]);
    assert!(h.conntrack().is_empty());
}

/// 8d. A ClusterIP (in lb4_vips) on a port it does not expose is rejected; an address that is
///     no ClusterIP is not.
#[test]
fn unexposed_clusterip_port_is_rejected() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    h.add_vip(VIP);
    let syn81 = tcp(CLIENT, (VIP, 81), SYN).build();
    let (verdict, out) = h.run(&syn81);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_frame_eq(&out, &rst_for(&syn81, 0, 0x1122_3345, RST | ACK));
    verify_checksums(&out);
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 1)]);
    let dns = udp(CLIENT, (VIP, 53)).payload(b"q").build();
    let (verdict, out) = h.run(&dns);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_frame_eq(&out, &icmp_for(&dns));
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 2)]);

    // The exposed port still works, replies included.
    let syn80 = tcp(CLIENT, (VIP, 80), SYN);
    let (verdict, out) = h.run(&syn80.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &syn80.clone().dst(BE1).build());
    let reply = tcp(BE1, CLIENT, SYN | ACK);
    assert_frame_eq(
        &h.run(&reply.build()).1,
        &reply.clone().src((VIP, 80)).build(),
    );
    // Not a ClusterIP, no frontend: passes.
    assert_untouched(&h, &tcp(CLIENT, ([10, 96, 0, 11], 81), SYN).build());
    assert_counters(&h, &[(CNT_REJECT_NO_PORT, 2)]);
}

/// 8e. Documented limitation: a packet with IPv4 options that should be rejected is dropped.
#[test]
fn reject_with_ipv4_options_drops() {
    let mut h = Harness::tc();
    web(&mut h, &[]);
    h.add_service(VIP, 53, PROTO_UDP, 2, &[], 0);
    h.add_vip(VIP);
    let opts = [1, 1, 1, 0];
    assert_dropped(&h, &tcp(CLIENT, (VIP, 80), SYN).ip_opts(&opts).build());
    assert_dropped(
        &h,
        &udp(CLIENT, (VIP, 53)).ip_opts(&opts).payload(b"q").build(),
    );
    assert_dropped(&h, &tcp(CLIENT, (VIP, 81), SYN).ip_opts(&opts).build());
}

/// 8f. A NodePort frontend with FE_SNAT masquerades: the client becomes node:P, P from the
///     configured range, recorded in both conntrack directions; replies are mapped back; later
///     packets of the flow keep P. TCP and UDP.
#[test]
fn nodeport_snat_masquerades_and_reverses() {
    let mut h = Harness::tc();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_service(NODE, 30080, PROTO_TCP, 3, &[BE1], FE_SNAT);
    let syn = tcp(EXT, (NODE, 30080), SYN).tcp_opts(&MSS).payload(b"x");
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, TC_NEXT);
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify_checksums(&out);

    let fwd = h.ct_get(ct_key(EXT, (NODE, 30080), PROTO_TCP));
    let want_fwd = CtEntry {
        snat_addr: addr4(NODE),
        snat_port: p,
        ..ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, ids[0])
    };
    assert_eq!(fwd, Some(want_fwd));
    let rev = h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP));
    let want_rev = CtEntry {
        snat_addr: addr4(EXT.0),
        snat_port: EXT.1,
        ..ct_entry((NODE, 30080), CT_REPLY | CT_SNAT, 3, ids[0])
    };
    assert_eq!(rev, Some(want_rev));
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);

    let synack = tcp(BE1, (NODE, p), SYN | ACK).tcp_opts(&MSS);
    let (verdict, out) = h.run(&synack.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &synack.clone().src((NODE, 30080)).dst(EXT).build());
    verify_checksums(&out);
    let data = tcp(EXT, (NODE, 30080), ACK).payload(b"GET / HTTP/1.1\r\n\r\n");
    for _ in 0..3 {
        let (verdict, out) = h.run(&data.build());
        assert_eq!(verdict, TC_NEXT);
        assert_frame_eq(&out, &data.clone().src((NODE, p)).dst(BE1).build());
    }
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);

    // UDP, through the same code with UDP checksum handling.
    h.add_service(NODE, 30053, PROTO_UDP, 4, &[DNS_BE], FE_SNAT);
    let q = udp(EXT, (NODE, 30053)).payload(b"query");
    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, TC_NEXT);
    let pu = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&pu),
        "SNAT port {pu}"
    );
    assert_frame_eq(&out, &q.clone().src((NODE, pu)).dst(DNS_BE).build());
    assert_ne!(verify_checksums(&out), 0);
    let a = udp(DNS_BE, (NODE, pu)).payload(b"answer");
    let (verdict, out) = h.run(&a.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &a.clone().src((NODE, 30053)).dst(EXT).build());
    assert_counters(&h, &[(CNT_SNAT, 2)]);
}

/// 8g. Clients that use the same source port towards the same backend get different SNAT
///     ports, and each reply goes back to its own client; so do 200 clients.
#[test]
fn snat_ports_do_not_collide() {
    let mut h = Harness::tc();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.add_service(NODE, 30080, PROTO_TCP, 3, &[BE1], FE_SNAT);
    let clients: Vec<Addr> = [EXT, ([192, 168, 77, 3], 40000)]
        .into_iter()
        .chain((0..200).map(|i| ([192, 168, 78, 10 + i as u8], 40000)))
        .collect();
    let mut ports = Vec::new();
    for c in &clients {
        let syn = tcp(*c, (NODE, 30080), SYN);
        let (verdict, out) = h.run(&syn.build());
        assert_eq!(verdict, TC_NEXT, "client {c:?}");
        let p = be16(&out, 34);
        assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
        ports.push(p);
    }
    assert_ne!(ports[0], ports[1], "two clients, same SNAT port");
    let distinct: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(
        distinct.len(),
        clients.len(),
        "SNAT ports reused: {ports:?}"
    );
    for (c, p) in clients.iter().zip(&ports) {
        let reply = tcp(BE1, (NODE, *p), SYN | ACK);
        let (verdict, out) = h.run(&reply.build());
        assert_eq!(verdict, TC_NEXT);
        assert_frame_eq(&out, &reply.clone().src((NODE, 30080)).dst(*c).build());
    }
    assert_eq!(h.conntrack().len(), 2 * clients.len());
    assert_counters(&h, &[(CNT_SNAT, clients.len() as u64)]);
}

/// 8h. A SNAT port range with one port: the second flow finds no free port and is dropped.
#[test]
fn exhausted_snat_port_range_drops() {
    let mut h = Harness::tc();
    h.set_config(NODE, 61000, 61000);
    h.add_service(NODE, 30080, PROTO_TCP, 3, &[BE1], FE_SNAT);
    let a = tcp(EXT, (NODE, 30080), SYN);
    let (verdict, out) = h.run(&a.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &a.clone().src((NODE, 61000)).dst(BE1).build());
    let b = tcp(([192, 168, 77, 3], 40000), (NODE, 30080), SYN).build();
    assert_dropped(&h, &b);
    assert_counters(&h, &[(CNT_SNAT, 1), (CNT_SNAT_NO_PORT, 1)]);
    assert_eq!(h.conntrack().len(), 2, "no entry for the dropped flow");
    let (_, out) = h.run(&a.build());
    assert_frame_eq(&out, &a.clone().src((NODE, 61000)).dst(BE1).build());
}

/// 8i. snat_addr 0.0.0.0 disables SNAT: FE_SNAT and hairpin flows are only DNATed.
#[test]
fn snat_disabled_without_snat_addr() {
    let mut h = Harness::tc();
    h.set_config([0; 4], SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_service(NODE, 30080, PROTO_TCP, 3, &[BE1], FE_SNAT);
    let syn = tcp(EXT, (NODE, 30080), SYN);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &syn.clone().dst(BE1).build());
    let fwd = h.ct_get(ct_key(EXT, (NODE, 30080), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 3, ids[0])));
    let rev = h.ct_get(ct_key(BE1, EXT, PROTO_TCP));
    assert_eq!(rev, Some(ct_entry((NODE, 30080), CT_REPLY, 3, ids[0])));
    let reply = tcp(BE1, EXT, SYN | ACK);
    let (verdict, out) = h.run(&reply.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &reply.clone().src((NODE, 30080)).build());

    web(&mut h, &[BE1]);
    let hp = tcp((BE1.0, 45000), (VIP, 80), SYN);
    let (verdict, out) = h.run(&hp.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &hp.clone().dst(BE1).build());
    assert_counters(&h, &[]);
}

/// 8j. Hairpin: a pod reaching a ClusterIP whose chosen backend is itself is source-NATed to
///     the node address (else it would answer itself directly); other ClusterIP flows are not.
#[test]
fn hairpin_flow_is_source_nated() {
    let mut h = Harness::tc();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = web(&mut h, &[BE1]);
    let me: Addr = (BE1.0, 45000);
    let syn = tcp(me, (VIP, 80), SYN).tcp_opts(&MSS);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, TC_NEXT);
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify_checksums(&out);
    let fwd = h.ct_get(ct_key(me, (VIP, 80), PROTO_TCP));
    let want_fwd = CtEntry {
        snat_addr: addr4(NODE),
        snat_port: p,
        ..ct_entry(BE1, CT_FORWARD | CT_SNAT, 1, ids[0])
    };
    assert_eq!(fwd, Some(want_fwd));
    let rev = h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP));
    let want_rev = CtEntry {
        snat_addr: addr4(me.0),
        snat_port: me.1,
        ..ct_entry((VIP, 80), CT_REPLY | CT_SNAT, 1, ids[0])
    };
    assert_eq!(rev, Some(want_rev));
    assert_counters(&h, &[(CNT_HAIRPIN, 1)]);

    let synack = tcp(BE1, (NODE, p), SYN | ACK);
    let (verdict, out) = h.run(&synack.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &synack.clone().src((VIP, 80)).dst(me).build());
    verify_checksums(&out);

    // Another pod: DNAT only.
    let other = tcp(CLIENT, (VIP, 80), SYN);
    let (verdict, out) = h.run(&other.build());
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &other.clone().dst(BE1).build());
    let fwd = h.ct_get(ct_key(CLIENT, (VIP, 80), PROTO_TCP));
    assert_eq!(fwd, Some(ct_entry(BE1, CT_FORWARD, 1, ids[0])));
    assert_counters(&h, &[(CNT_HAIRPIN, 1)]);
}

/// 9. Address and port of a frontend but another protocol: not that frontend.
#[test]
fn other_protocol_on_frontend_port_is_untouched() {
    let mut h = Harness::tc();
    web(&mut h, &[BE1]);
    assert_untouched(&h, &udp(CLIENT, (VIP, 80)).payload(b"x").build());
    assert!(h.conntrack().is_empty());
    assert_eq!(h.stats(1).packets, 0);
}

/// A backend on the Service port: only the address (and checksums) change.
#[test]
fn same_port_backend_rewrites_address_only() {
    let mut h = Harness::tc();
    h.add_service(VIP, 80, PROTO_TCP, 1, &[(BE1.0, 80)], 0);
    let syn = tcp(CLIENT, (VIP, 80), SYN).payload(b"abc");
    let input = syn.build();
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, TC_NEXT);
    assert_frame_eq(&out, &syn.clone().dst((BE1.0, 80)).build());
    verify_checksums(&out);
    let allowed = [24, 25, 30, 31, 32, 33, 50, 51];
    assert!(changed(&input, &out).iter().all(|i| allowed.contains(i)));
    let reply = tcp((BE1.0, 80), CLIENT, SYN | ACK);
    let (_, out) = h.run(&reply.build());
    assert_frame_eq(&out, &reply.clone().src((VIP, 80)).build());
}

/// The test's own checksum code: a known IPv4 header vector, and the verifier catches a flipped
/// bit where it matters. (Frames from these tests were also cross-checked with `tcpdump -vvv`.)
#[test]
fn checksum_helpers_self_test() {
    let hdr = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];
    assert_eq!(!fold(sum16(&hdr)), 0xb861);
    for p in [
        tcp(CLIENT, (VIP, 80), SYN).payload(b"abc"),
        udp(CLIENT, (VIP, 53)).payload(b"abc"),
    ] {
        let f = p.build();
        verify_checksums(&f);
        // TTL (IPv4 header only), destination (both), a port and the last payload byte (L4).
        for i in [22, 31, 36, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 0x01;
            assert!(checksums(&g).is_err(), "flipped byte {i} not detected");
        }
    }
}

/// The resync's batched read (`Maps::read_back`, BPF_MAP_LOOKUP_BATCH) returns exactly what
/// entry-by-entry reads return, across several batches: 9,000 backends and 10,000 slots (more
/// than a batch of 4,096), 5,000 frontends, names and ClusterIPs, and the config.
#[test]
fn read_back_reads_every_entry_in_batches() {
    use podlb::datapath::{meta_name, Datapath, Maps};
    use podlb::reconcile::{vip_key, BackendKey, Op};
    use std::net::{IpAddr, Ipv4Addr};
    let root = testkit::testbed::BpfRoot::new().expect("a private bpffs");
    let _dp = Datapath::open(root.path()).expect("loading and pinning the datapath");
    let mut maps = Maps::open(root.path()).unwrap();
    let v4 = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
    let mut ops = vec![Op::SetConfig(Config {
        snat_addr: [192, 168, 0, 1],
        snat_port_min: 30000,
        snat_port_max: 40000,
        ..Config::default()
    })];
    for id in 1..=9000u32 {
        ops.push(Op::SetBackend(
            id,
            BackendKey {
                ip: v4(0x0a80_0000 + id),
                port: 8080,
                proto: PROTO_TCP,
            },
        ));
    }
    for svc in 1..=5000u32 {
        ops.push(Op::SetMeta(svc, format!("default/svc-{svc}:http")));
        for slot in 0..2 {
            let backend_id = (svc * 2 + slot) % 9000 + 1;
            ops.push(Op::SetSlot {
                svc_id: svc,
                slot,
                backend_id,
            });
        }
        let key = FrontendKey {
            addr: addr4(Ipv4Addr::from(0x0a60_0000 + svc).octets()),
            port: 80,
            proto: PROTO_TCP,
            family: FAMILY_V4,
        };
        let fe = Frontend {
            svc_id: svc,
            count: 2,
            flags: FE_SNAT,
            kind: KIND_CLUSTER_IP,
            pad: 0,
        };
        ops.push(Op::SetFrontend(key, fe));
        ops.push(Op::SetVip(vip_key(v4(0x0a60_0000 + svc))));
    }
    for op in &ops {
        maps.apply(op).unwrap();
    }
    let rb = Maps::read_back(root.path()).expect("batched read");

    let mut fes: Vec<(FrontendKey, Frontend)> = maps.frontends.iter().map(|r| r.unwrap()).collect();
    fes.sort_by_key(|e| e.0);
    assert_eq!(rb.frontends.len(), 5000);
    assert!(rb.frontends == fes, "frontends differ");
    let mut slots: Vec<((u32, u32), u32)> = maps
        .slots
        .iter()
        .map(|r| r.unwrap())
        .map(|(k, s)| ((k.svc_id, k.slot), s.backend_id))
        .collect();
    slots.sort_by_key(|e| e.0);
    assert_eq!(rb.slots.len(), 10_000);
    assert_eq!(rb.slots, slots);
    let mut names: Vec<(u32, String)> = maps
        .meta
        .iter()
        .map(|r| r.unwrap())
        .map(|(id, m)| (id, meta_name(&m)))
        .collect();
    names.sort_by_key(|e| e.0);
    assert_eq!(rb.names.len(), 5000);
    assert_eq!(rb.names, names);
    assert_eq!(rb.names[41], (42, "default/svc-42:http".to_string()));
    let mut vips: Vec<VipKey> = maps.vips.keys().map(|r| r.unwrap()).collect();
    vips.sort();
    assert_eq!(rb.vips.len(), 5000);
    assert_eq!(rb.vips, vips);
    assert_eq!(rb.backends.len(), 9000);
    for (id, b) in &rb.backends {
        assert_eq!(BackendKey::from_map(&maps.backends.get(id, 0).unwrap()), *b);
    }
    assert_eq!(rb.backends[8999].1.ip, v4(0x0a80_0000 + 9000));
    assert_eq!(rb.config.snat_addr, [192, 168, 0, 1]);
    assert_eq!(rb.config.snat_port_max, 40000);

    // /metrics' batched read of names and per-CPU counters: CPU i counted i + 1 packets.
    let cpus = aya::util::nr_cpus().unwrap();
    let per_cpu: Vec<SvcStats> = (0..cpus as u64)
        .map(|i| SvcStats {
            packets: i + 1,
            bytes: 100 * (i + 1),
        })
        .collect();
    let n = cpus as u64 * (cpus as u64 + 1) / 2;
    maps.stats
        .set(42, aya::maps::PerCpuValues::try_from(per_cpu).unwrap(), 0)
        .unwrap();
    let counters = podlb::datapath::frontend_counters(root.path()).expect("batched counters");
    assert_eq!(counters.len(), 5000);
    let c = counters.iter().find(|c| c.frontend.svc_id == 42).unwrap();
    assert_eq!(c.name, "default/svc-42:http");
    assert_eq!((c.stats.packets, c.stats.bytes), (n, 100 * n));
    let other = counters.iter().find(|c| c.frontend.svc_id == 43).unwrap();
    assert_eq!(
        (other.name.as_str(), other.stats),
        ("default/svc-43:http", SvcStats::default())
    );
}
